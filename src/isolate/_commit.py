"""Container.commit: what a container changed, as a new layer of its image.

The host walks the container's root (the container's to write, racing it)
beneath /proc/PID/root with openat2, compares each entry with the image's
layers as Docker's naive diff does, and tars what changed, with a whiteout
for each removed entry; the layer is then staged, verified and listed as a
load lists one (see _images)."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from typing import Any

from ._fs import reopen_regular
from ._images import _LAYER, Image, _Load, _opaque, _Store, lookup, parse_ref
from .errors import ImageError


def _merged_names(layers: tuple[str, ...], rel: str) -> set[str]:
    """The names in directory rel of the overlay of layers (top first)."""
    import stat as st_
    names: set[str] = set()
    hidden: set[str] = set()
    parts = [p for p in rel.split("/") if p]
    active = list(layers)
    for i in range(len(parts)):         # the layers that show this directory
        sub = "/".join(parts[:i + 1])
        below = []
        for layer in active:
            try:
                s = os.lstat(f"{layer}/{sub}")
            except OSError:
                continue
            if not st_.S_ISDIR(s.st_mode):
                break
            below.append(layer)
            if _opaque(f"{layer}/{sub}"):
                break
        active = below
    for layer in active:
        d = f"{layer}/{rel}" if rel else layer
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for name in entries:
            if name in hidden or name in names:
                continue
            try:
                s = os.lstat(f"{d}/{name}")
            except OSError:
                continue
            if st_.S_ISCHR(s.st_mode) and s.st_rdev == 0:
                hidden.add(name)
            else:
                names.add(name)
        if _opaque(d):
            break
    return names


class _Exactly(io.RawIOBase):
    """size bytes of f: cut, or padded with zeros (a file that changed size
    while it was read: the tar entry's size was taken first)."""

    def __init__(self, f: Any, size: int):
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left <= 0:
            return 0
        n = min(len(b), self.left)
        data = self.f.read(n) or bytes(n)
        b[:len(data)] = data
        self.left -= len(data)
        return len(data)


def _id_map(path: str) -> list[tuple[int, int, int]]:
    """(inside, outside, count) ranges of a /proc/PID/uid_map or gid_map."""
    with open(path) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]  # type: ignore


def _inside(i: int, ranges: list[tuple[int, int, int]]) -> int:
    """A host id as the container sees it (65534, nobody, where unmapped)."""
    for inside, outside, count in ranges:
        if outside <= i < outside + count:
            return inside + i - outside
    return 65534


_MAX_DEPTH = 512


def _diff(root: int, layers: tuple[str, ...], tar: tarfile.TarFile,
          ids: tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]],
          budget: int, ref: str) -> int:
    """Add to tar what the container's root (root: an O_PATH fd of it, the
    container's to write) changed against layers: new and changed entries,
    and a whiteout for each removed one. Nothing is followed: every entry
    is opened beneath root without symlinks and used by that fd, mounts are
    left out, and only regular files are read, never waiting (a lease).
    At most budget bytes of file content. Returns the count of entries."""
    import stat as st_
    from . import _isolate
    resolve = (_isolate.RESOLVE_BENEATH | _isolate.RESOLVE_NO_SYMLINKS |
               _isolate.RESOLVE_NO_MAGICLINKS | _isolate.RESOLVE_NO_XDEV)
    links: dict[tuple[int, int], str] = {}
    count = 0
    left = budget

    def info_for(rel: str, s: os.stat_result, efd: int) -> tarfile.TarInfo:
        t = tarfile.TarInfo(rel)
        t.mode = st_.S_IMODE(s.st_mode)
        t.uid, t.gid = _inside(s.st_uid, ids[0]), _inside(s.st_gid, ids[1])
        t.mtime = s.st_mtime
        if st_.S_ISDIR(s.st_mode):
            t.type = tarfile.DIRTYPE
        elif st_.S_ISLNK(s.st_mode):
            t.type = tarfile.SYMTYPE
            t.linkname = os.readlink("", dir_fd=efd)      # this very symlink (O_PATH fd)
        elif st_.S_ISCHR(s.st_mode) or st_.S_ISBLK(s.st_mode):
            t.type = tarfile.CHRTYPE if st_.S_ISCHR(s.st_mode) else tarfile.BLKTYPE
            t.devmajor, t.devminor = os.major(s.st_rdev), os.minor(s.st_rdev)
        elif st_.S_ISFIFO(s.st_mode):
            t.type = tarfile.FIFOTYPE
        elif st_.S_ISREG(s.st_mode):
            t.size = s.st_size
        else:
            raise ValueError("a socket")
        return t

    def same(s: os.stat_result, lower: str | None) -> bool:
        if lower is None:
            return False
        try:
            ls = os.lstat(lower)
        except OSError:
            return False
        if s.st_mode != ls.st_mode or (s.st_uid, s.st_gid) != (ls.st_uid, ls.st_gid):
            return False
        if st_.S_ISDIR(s.st_mode):
            return True         # its entries are compared one by one
        if st_.S_ISLNK(s.st_mode):
            return s.st_mtime_ns == ls.st_mtime_ns
        return s.st_size == ls.st_size and s.st_mtime_ns == ls.st_mtime_ns and \
            s.st_rdev == ls.st_rdev

    def entry(rel: str, dfd: int, name: str) -> bool:
        """Add rel if changed; whether it is a directory to walk."""
        nonlocal count, left
        try:    # EXDEV: a mount point (/proc, /dev, a volume), not committed
            efd = _isolate.openat2(dfd, name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   resolve=resolve)
        except OSError:
            return False
        try:
            s = os.fstat(efd)
            if not same(s, lookup(layers, rel)):
                try:
                    t = info_for(rel, s, efd)
                except (OSError, ValueError):
                    return False
                if t.type == tarfile.REGTYPE:
                    key = (s.st_dev, s.st_ino)
                    if s.st_nlink > 1 and key in links:
                        t.type, t.linkname, t.size = tarfile.LNKTYPE, links[key], 0
                        tar.addfile(t)
                    else:
                        left -= t.size
                        if left < 0:
                            raise ImageError(f"the container's changes hold more than {budget} "
                                             "bytes (its storage_size; a sparse file counts "
                                             "whole)", ref=ref, step="commit")
                        if _add_file(tar, t, efd, ref):
                            links[key] = rel
                else:
                    tar.addfile(t)
                count += 1
            return st_.S_ISDIR(s.st_mode)
        finally:
            os.close(efd)

    stack = [("", 0)]
    while stack:
        rel, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ImageError(f"directories deeper than {_MAX_DEPTH}", ref=ref, step="commit")
        try:
            dfd = _isolate.openat2(root, rel or ".", os.O_RDONLY | os.O_DIRECTORY |
                                   os.O_CLOEXEC, resolve=resolve)
        except OSError:
            continue    # swapped meanwhile, or a mount: not the container's layer
        try:
            names = set(os.listdir(dfd))
            for name in sorted(names):
                if name.startswith(_WH):
                    raise ImageError(f"/{rel}/{name}: a file named so would be a whiteout in "
                                     "a layer", ref=ref, step="commit")
            subdirs = []
            for name in sorted(names):
                path = f"{rel}/{name}" if rel else name
                if entry(path, dfd, name):
                    subdirs.append(path)
            lower_dir = lookup(layers, rel) if rel else layers[0]
            if lower_dir is not None and os.path.isdir(lower_dir) and \
                    not os.path.islink(lower_dir):
                for gone in sorted(_merged_names(layers, rel) - names):
                    t = tarfile.TarInfo(f"{rel}/{_WH}{gone}" if rel else f"{_WH}{gone}")
                    t.mtime = 0
                    tar.addfile(t, io.BytesIO(b""))
                    count += 1
            stack.extend((p, depth + 1) for p in reversed(subdirs))
        finally:
            os.close(dfd)
    return count


_WH = ".wh."


def _add_file(tar: tarfile.TarFile, t: tarfile.TarInfo, efd: int, ref: str) -> bool:
    """The regular file whose O_PATH fd efd is, added if it still is one;
    opened without waiting (a lease held by the container fails the commit)."""
    import errno
    try:
        fd = reopen_regular(efd, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.EWOULDBLOCK:
            raise ImageError(f"/{t.name}: the container holds a lease on it", ref=ref,
                             step="commit") from None
        return False
    if fd is None:
        return False
    with open(fd, "rb") as f:
        tar.addfile(t, _Exactly(f, t.size))     # type: ignore[arg-type]
    return True


class _HashWriter(io.RawIOBase):
    def __init__(self, f: Any):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        self.f.write(b)
        return len(b)


def commit(container: Any, ref: str | None = None, *, message: str = "",
           author: str = "") -> Image:
    """A new image: the container's image with one more layer, what the
    container changed (see Container.commit)."""
    import datetime
    img = container._cfg.image
    if img is None:
        raise ImageError("only a container of an image can be committed (image=)",
                         ref=ref or "", step="commit")
    if container.pid is None or not container.running:
        raise ImageError(f"container {container.id} is not running", ref=ref or "",
                         step="commit")
    name = parse_ref(ref) if ref else None
    s = _Store(img.store)       # the image's own store, whatever ISOLATE_HOME says now
    s.sweep_tmp()
    layers = img.layer_dirs()
    what = ref or img.ref or img.digest
    root = -1
    ld: _Load | None = None
    paused = False
    try:
        root = os.open(f"/proc/{container.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # the ids of the container's files as it sees them (a user namespace maps them)
        ids = (_id_map(f"/proc/{container.pid}/uid_map"),
               _id_map(f"/proc/{container.pid}/gid_map"))
        ld = _Load(s, what)
        if container._cgroups is not None:
            paused = True       # thawed in any case: a freeze may fail midway
            try:
                container.pause()       # as docker commit: a still picture
            except OSError:
                pass
        part = f"{ld.dir}/layer.tar.gz"
        with open(part, "wb") as raw:
            gz_hash = _HashWriter(raw)
            with gzip.GzipFile(fileobj=gz_hash, mode="wb", mtime=0,      # type: ignore
                               compresslevel=6) as gz:     # as Docker
                tar_hash = _HashWriter(gz)
                with tarfile.open(fileobj=tar_hash, mode="w|",          # type: ignore
                                  format=tarfile.PAX_FORMAT) as tar:
                    _diff(root, layers, tar, ids, container._cfg.storage_size, what)
        diff_id = "sha256:" + tar_hash.h.hexdigest()
        with open(part, "rb") as f:
            digest = ld.add_blob(f, None, None, ref or "")
        size = os.path.getsize(ld.blob_path(digest))
        manifest = s.read_json(img.digest, img.ref)
        config = s.read_json(manifest["config"]["digest"], img.ref)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        config["created"] = now
        if author:
            config["author"] = author
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(diff_id)
        config.setdefault("history", []).append(
            {"created": now, "created_by": "isolate commit", **({"comment": message}
                                                                 if message else {})})
        config_digest = ld.add_json(config)
        with open(ld.blob_path(config_digest), "rb") as f:
            config_size = len(f.read())
        docker = manifest.get("mediaType") == "application/vnd.docker.distribution.manifest.v2+json"
        manifest["config"] = {**manifest["config"], "digest": config_digest, "size": config_size}
        manifest["layers"] = list(manifest["layers"]) + [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
            else _LAYER + "+gzip", "digest": digest, "size": size}]
        manifest_digest = ld.add_json(manifest)
        ld.unpack(digest, diff_id, ref or img.ref)
        ld.commit({name or manifest_digest: manifest_digest})
    except OSError as e:
        raise ImageError(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
                         ref=what, step="commit") from None
    finally:
        if paused:
            try:
                container.resume()
            except OSError:
                pass
        if root >= 0:
            os.close(root)
        if ld is not None:
            ld.close()
    return s.image(name or "", manifest_digest)

"""Unpacking one image layer (a tar stream) into a directory: hostile input.

Every entry is made relative to an fd of the layer's directory. A parent is
opened with openat2 and RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: a symlink of
the layer is never followed while unpacking, '..' never leaves it, and no
host path is ever built by joining strings.

Refused (the layer fails and nothing of it is kept): a name with a '..'
component or a NUL; a path through a symlink or through a file; a hard link
whose target is not a file already unpacked in the same layer; more
uncompressed bytes than the limit (see _images.MAX_LAYER_SIZE); a sparse
file (its holes would be written out, past any limit); an extended header
over 1 MiB (tarfile reads one whole).

Neutralised: a leading '/' is dropped (names are relative to the layer, as
Docker reads them). Not as root: device nodes are skipped, setuid and setgid
bits cleared, and everything belongs to the caller. Extended attributes
other than user.* (and security.capability, as root) are dropped, and
overlayfs's own (trusted.overlay.*, user.overlay.*) always: a layer cannot
redirect or make opaque a directory but through the whiteout marker.

Whiteouts become overlayfs's: '.wh.NAME' a character device 0/0 named NAME,
'.wh..wh..opq' the "opaque" attribute of its directory
(trusted.overlay.opaque as root, user.overlay.opaque for overlays mounted in
a user namespace).
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
from typing import IO, Iterator

from . import _isolate as _c

_BENEATH = _c.RESOLVE_BENEATH | _c.RESOLVE_NO_SYMLINKS | _c.RESOLVE_NO_MAGICLINKS | _c.RESOLVE_NO_XDEV
_OPAQUE = ".wh..wh..opq"
_WHITEOUT = ".wh."
_FDS = 64       # parent directories kept open


class LayerRefused(Exception):
    """The layer tries to leave its directory, or otherwise cannot be trusted."""


class SafeTarInfo(tarfile.TarInfo):
    """tarfile reads an extended header (pax, GNU long name) whole into
    memory: one over 1 MiB is refused before it is read."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                         tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) and self.size > 1 << 20:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _parts(name: str) -> tuple[str, ...]:
    if "\0" in name:
        raise LayerRefused(f"{name!r}: a name with a NUL byte")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerRefused(f"{name!r}: a name with '..'")
    return parts


class _Tree:
    """The layer's directory and its subdirectories, opened beneath it."""

    def __init__(self, fd: int):
        self.root = fd
        self.open: dict[tuple[str, ...], int] = {}

    def dir(self, parts: tuple[str, ...]) -> int:
        """An O_PATH fd of the directory parts (made as 0755 where missing)."""
        if not parts:
            return self.root
        fd = self.open.pop(parts, None)
        if fd is None:
            fd = self._open(parts)
            if len(self.open) >= _FDS:
                os.close(self.open.pop(next(iter(self.open))))
        self.open[parts] = fd
        return fd

    def _open(self, parts: tuple[str, ...]) -> int:
        path = "/".join(parts)
        for attempt in (0, 1):
            try:
                return _c.openat2(self.root, path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                                  resolve=_BENEATH)
            except FileNotFoundError:
                if attempt:
                    raise
                try:
                    os.mkdir(parts[-1], 0o755, dir_fd=self.dir(parts[:-1]))
                except FileExistsError:     # a dangling symlink, say
                    pass
            except OSError as e:
                if e.errno in (40, 18):     # ELOOP, EXDEV
                    raise LayerRefused(f"{path!r}: a path through a symlink") from None
                if e.errno == 20:           # ENOTDIR
                    raise LayerRefused(f"{path!r}: a path through a file") from None
                raise
        raise AssertionError("unreachable")

    def forget(self) -> None:
        """After a directory was removed: its fds may name other paths now."""
        for fd in self.open.values():
            os.close(fd)
        self.open.clear()

    def close(self) -> None:
        self.forget()


def _remove(tree: _Tree, parent: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(name, dir_fd=parent)
        tree.forget()


def _ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in ns, within what the kernel stores."""
    return max(0, min(int(member.mtime), 1 << 40)) * 10**9


def _xattrs(member: tarfile.TarInfo, root: bool) -> Iterator[tuple[str, bytes]]:
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr."):]
        if (name.startswith("user.") and not name.startswith("user.overlay.")) or \
                (root and name == "security.capability"):
            yield name, value.encode("utf-8", "surrogateescape")


def _meta(fd: int, member: tarfile.TarInfo, root: bool) -> None:
    """Owner, mode, extended attributes and times, on an open fd."""
    mode = member.mode & 0o7777
    if root:
        os.chown(fd, member.uid, member.gid)
    else:
        mode &= ~0o6000
    for name, value in _xattrs(member, root):
        try:
            os.setxattr(fd, name, value)
        except OSError:
            pass    # a filesystem without them: the layer works without
    os.chmod(fd, mode)
    t = _ns(member)
    os.utime(fd, ns=(t, t))


def unpack(stream: IO[bytes], dest: int, *, root: bool) -> int:
    """Unpack the tar read from stream into the directory fd dest; the count
    of entries skipped (device nodes, when not root). LayerRefused or
    OSError on failure: the caller removes dest."""
    tree = _Tree(dest)
    dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
    opaque: list[tuple[str, ...]] = []
    skipped = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", errorlevel=2, tarinfo=SafeTarInfo) as tar:
            for m in tar:
                if m.sparse is not None:    # its holes would be written out: no limit holds
                    raise LayerRefused(f"{m.name!r}: a sparse file")
                parts = _parts(m.name)
                if not parts:
                    continue        # the layer's own root: its mode is the store's
                name, parent = parts[-1], tree.dir(parts[:-1])
                if name == _OPAQUE:
                    opaque.append(parts[:-1])
                    continue
                if name.startswith(_WHITEOUT):
                    hidden = name[len(_WHITEOUT):]
                    if hidden in ("", ".", ".."):
                        raise LayerRefused(f"{m.name!r}: a whiteout of nothing")
                    _remove(tree, parent, hidden)
                    parent = tree.dir(parts[:-1])      # _remove may have closed it
                    os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent)
                    continue
                try:
                    old = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    old = None
                if old is not None and not (m.isdir() and stat.S_ISDIR(old.st_mode)):
                    _remove(tree, parent, name)
                    parent = tree.dir(parts[:-1])
                    old = None
                if m.isdir():
                    if old is None:
                        os.mkdir(name, 0o700, dir_fd=parent)
                    dirs.append((parts, m))
                elif m.isreg():
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                                 os.O_CLOEXEC, 0o600, dir_fd=parent)
                    with open(fd, "wb", closefd=True) as out:
                        src = tar.extractfile(m)
                        assert src is not None
                        shutil.copyfileobj(src, out, 1 << 20)
                        out.flush()
                        _meta(out.fileno(), m, root)
                elif m.issym():
                    os.symlink(m.linkname, name, dir_fd=parent)
                    if root:
                        os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
                    t = _ns(m)
                    os.utime(name, ns=(t, t), dir_fd=parent, follow_symlinks=False)
                elif m.islnk():
                    target = _parts(m.linkname)
                    if not target:
                        raise LayerRefused(f"{m.name!r}: a hard link to the layer's root")
                    tparent = tree.dir(target[:-1])
                    try:
                        st = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
                    except FileNotFoundError:
                        st = None
                    if st is None or stat.S_ISDIR(st.st_mode):
                        raise LayerRefused(f"{m.name!r}: a hard link to {m.linkname!r}, which "
                                           "is not a file of this layer")
                    os.link(target[-1], name, src_dir_fd=tparent, dst_dir_fd=parent,
                            follow_symlinks=False)
                elif m.ischr() or m.isblk():
                    if not root:
                        skipped += 1
                        continue
                    kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                    os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor),
                             dir_fd=parent)
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                    try:        # chmod and chown by fd: through /proc/self/fd (O_PATH)
                        _meta_path(f"/proc/self/fd/{fd}", m, root)
                    finally:
                        os.close(fd)
                elif m.isfifo():
                    os.mkfifo(name, 0o600, dir_fd=parent)
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                    try:
                        _meta_path(f"/proc/self/fd/{fd}", m, root)
                    finally:
                        os.close(fd)
                else:
                    skipped += 1
            # directories last: their modes may forbid the entries above,
            # and each entry made in one changed its times
            for parts, m in reversed(dirs):
                dfd = _open_dir(dest, parts)
                if dfd is not None:
                    try:
                        _meta(dfd, m, root)
                    finally:
                        os.close(dfd)
            for parts in opaque:
                dfd = _open_dir(dest, parts)
                if dfd is not None:
                    try:
                        _set_opaque(dfd, root)
                    finally:
                        os.close(dfd)
    except tarfile.TarError as e:
        raise LayerRefused(f"not a valid tar: {e}") from None
    finally:
        tree.close()
    return skipped


def _open_dir(dest: int, parts: tuple[str, ...]) -> int | None:
    """A directory of the layer, or None where a later entry replaced or
    removed it."""
    try:
        return _c.openat2(dest, "/".join(parts) or ".", os.O_RDONLY | os.O_DIRECTORY |
                          os.O_CLOEXEC, resolve=_BENEATH)
    except (NotADirectoryError, FileNotFoundError):
        return None
    except OSError as e:
        if e.errno in (40, 18):
            raise LayerRefused(f"{'/'.join(parts)!r}: a path through a symlink") from None
        raise


def _meta_path(path: str, m: tarfile.TarInfo, root: bool) -> None:
    """_meta for a node that cannot be opened (a device, a FIFO): through
    /proc/self/fd of its O_PATH fd, which names that node and no other."""
    mode = m.mode & 0o7777
    if root:
        os.chown(path, m.uid, m.gid)
    else:
        mode &= ~0o6000
    os.chmod(path, mode)
    t = _ns(m)
    os.utime(path, ns=(t, t))


def _set_opaque(fd: int, root: bool) -> None:
    done = False
    for name in (("trusted.overlay.opaque",) if root else ()) + ("user.overlay.opaque",):
        try:
            os.setxattr(fd, name, b"y")
            done = True
        except OSError:
            pass
    if not done:
        raise LayerRefused("an opaque directory cannot be marked on this filesystem "
                           "(no trusted.* or user.* extended attributes)")

"""Images (isolate.load, isolate.images, Image, ...): layered roots from OCI image layouts and `docker save` archives.

    import isolate
    [img] = isolate.load("busybox.tar")           # docker save, or an OCI layout (dir or tar)
    isolate.images()                             # [Image(ref=..., digest=..., layers=...)]
    isolate.run(["echo", "hi"], image="busybox")  # the image's Entrypoint before the args
    with isolate.Container(image=img, memory="64M") as c:
        c.run(["cat", "/etc/os-release"])        # as `docker exec`: args as given
    img.save("copy.tar", format="docker")

A container of an image has the image's layers, unpacked once in the store and
shared by every container, as the read-only lower layers of an overlay, and
writes only its own layer (in RAM, as with rootfs=). The image's Env,
WorkingDir and User apply unless the caller gives env (merged over the
image's), cwd or user, as with `docker run`.

The store is ISOLATE_HOME, else /var/lib/isolate for root and
$XDG_DATA_HOME/isolate (~/.local/share/isolate) for others:

    blobs/sha256/HEX   manifests, configs and layer blobs as they came, verified
    layers/HEX         each layer unpacked once, named by its diff id (the
                       sha256 of its uncompressed tar)
    refs.json          reference (or, untagged, manifest digest) -> manifest digest
    tmp/               loads in progress: nothing there is ever trusted
    lock               flock held while refs.json changes, and by prune

A load verifies and unpacks everything in a directory of its own under tmp/,
then renames each blob and layer into place (an existing one is kept: the same
digest is the same content), then lists the images: a load that fails, or a
process killed midway, leaves the store as it was (its tmp/ directory is
removed by the next load). See _unpack for how a layer is unpacked.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from typing import IO, Any, Iterable, Iterator

from ._fs import reopen_regular, start_time
from .errors import ImageError

__all__ = ["Image", "load", "images", "get_image", "rmi", "prune", "save", "parse_ref"]

#: most uncompressed bytes of one layer (ISOLATE_MAX_LAYER_SIZE overrides)
MAX_LAYER_SIZE = 64 << 30

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_MANIFESTS = (_OCI_MANIFEST, _DOCKER_MANIFEST)
_INDEXES = (_OCI_INDEX, _DOCKER_LIST)
_LAYER = "application/vnd.oci.image.layer.v1.tar"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


# -- references -----------------------------------------------------------------

def parse_ref(ref: str) -> str:
    """A reference in its full form, as Docker normalises it:
    "busybox" -> "docker.io/library/busybox:latest",
    "localhost:5000/me/tool" -> "localhost:5000/me/tool:latest";
    "NAME@sha256:..." keeps its digest (and a tag given with it)."""
    if not isinstance(ref, str):
        raise TypeError(f"an image reference is a str, not {type(ref).__name__}")
    rest, at, digest = ref.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ImageError("the digest is not sha256:<64 hex digits>", ref=ref,
                         step="parse reference")
    domain, slash, path = rest.partition("/")
    if not slash or not ("." in domain or ":" in domain or domain == "localhost"):
        domain, path = "docker.io", rest
    name, colon, tag = path.rpartition(":")
    if not colon:
        name, tag = path, ""
    if domain == "docker.io" and name and "/" not in name:
        name = "library/" + name
    if not _DOMAIN.fullmatch(domain) or not _NAME.fullmatch(name) or \
            (tag and not _TAG.fullmatch(tag)) or len(name) > 255:
        raise ImageError("not a valid image reference (NAME[:TAG][@DIGEST], lowercase name)",
                         ref=ref, step="parse reference")
    if not tag and not at:
        tag = "latest"
    return f"{domain}/{name}" + (f":{tag}" if tag else "") + (f"@{digest}" if at else "")


def _short(ref: str) -> str:
    """docker.io/library/busybox:latest -> busybox:latest (as `docker images` shows it)."""
    return ref.removeprefix("docker.io/").removeprefix("library/")


# -- the image ------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    """An image in the store. `ref` is its reference ("" when untagged),
    `digest` its manifest's, `id` its config's (as `docker images` shows
    IMAGE ID), `layers` the diff ids of its layers, bottom first."""

    ref: str
    digest: str
    id: str
    layers: tuple[str, ...]
    size: int
    created: str
    env: tuple[str, ...]
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    working_dir: str
    user: str
    exposed_ports: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    store: str

    def __repr__(self) -> str:
        name = _short(self.ref) if self.ref else "<untagged>"
        return f"<Image {name} {self.id[7:19]} {len(self.layers)} layers {self.size} bytes>"

    def layer_dirs(self) -> tuple[str, ...]:
        """The unpacked layers' directories, top first (overlayfs's lowerdir order)."""
        return tuple(f"{self.store}/layers/{d[7:]}" for d in reversed(self.layers))

    def command(self, args: Iterable[str] | None = None) -> list[str]:
        """What `docker run IMAGE [ARGS]` runs: the Entrypoint, then args
        (or the image's Cmd without args)."""
        tail = list(args) if args else list(self.cmd or ())
        argv = list(self.entrypoint or ()) + tail
        if not argv:
            raise ImageError("the image has no Entrypoint or Cmd: give a command",
                             ref=self.ref or self.digest, step="command")
        return argv

    def save(self, path: str | os.PathLike[str], format: str = "oci") -> str:
        """Write the image as an archive: "oci" (an OCI image layout in a
        tar, as `skopeo copy ... oci-archive:` writes) or "docker" (as
        `docker save`, read by `docker load`). Returns the path."""
        return save(self, path, format=format)


# -- the store --------------------------------------------------------------------

def store_path() -> str:
    home = os.environ.get("ISOLATE_HOME")
    if not home:
        if os.geteuid() == 0:
            home = "/var/lib/isolate"
        else:
            data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
            home = os.path.join(data, "isolate")
    home = os.path.abspath(home)
    if any(c in home for c in ",:\\\n"):
        raise ImageError(f"the store's path {home!r} cannot name an overlay layer "
                         "(no ',', ':', '\\' or newline): set ISOLATE_HOME", step="open store")
    return home


class _Store:
    def __init__(self, root: str):
        self.root = root
        for d in ("blobs/sha256", "layers", "tmp"):
            os.makedirs(f"{root}/{d}", mode=0o700, exist_ok=True)

    def blob(self, digest: str) -> str:
        return f"{self.root}/blobs/sha256/{digest[7:]}"

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob(digest))

    def read_json(self, digest: str, ref: str = "") -> Any:
        try:
            with open(self.blob(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store", ref=ref,
                             step="read store") from None
        return json.loads(data)

    def lock(self) -> int:
        fd = os.open(f"{self.root}/lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def refs(self) -> dict[str, str]:
        try:
            with open(f"{self.root}/refs.json") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def write_refs(self, refs: dict[str, str]) -> None:
        tmp = f"{self.root}/refs.json.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(refs, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, f"{self.root}/refs.json")

    def image(self, ref: str, digest: str) -> Image:
        """The Image of a manifest: read once (a digest names its content
        for good), so that image="busybox" costs a start one refs.json read."""
        key = (self.root, ref, digest)
        img = _IMAGES.get(key)
        if img is None:
            if len(_IMAGES) > 256:
                _IMAGES.clear()
            img = _IMAGES[key] = self._read_image(ref, digest)
        return img

    def _read_image(self, ref: str, digest: str) -> Image:
        manifest = self.read_json(digest, ref)
        config_digest = manifest["config"]["digest"]
        config = self.read_json(config_digest, ref)
        c = config.get("config") or {}
        diff_ids = tuple(config.get("rootfs", {}).get("diff_ids") or ())
        labels = c.get("Labels") or {}
        return Image(
            ref=ref, digest=digest, id=config_digest, layers=diff_ids,
            size=sum(int(x.get("size", 0)) for x in manifest.get("layers") or ()),
            created=str(config.get("created") or ""),
            env=tuple(c.get("Env") or ()),
            entrypoint=tuple(c["Entrypoint"]) if c.get("Entrypoint") else None,
            cmd=tuple(c["Cmd"]) if c.get("Cmd") else None,
            working_dir=c.get("WorkingDir") or "",
            user=c.get("User") or "",
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or ())),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            store=self.root)

    def sweep_tmp(self) -> None:
        """Remove loads that are not in progress: their process (pid and
        start time, in the name) is gone."""
        for name in os.listdir(f"{self.root}/tmp"):
            pid, _, rest = name.partition("-")
            if pid.isdigit() and rest.partition("-")[0] == str(start_time(int(pid))):
                continue
            shutil.rmtree(f"{self.root}/tmp/{name}", ignore_errors=True)


#: (store, reference, manifest digest) -> Image (see _Store.image)
_IMAGES: dict[tuple[str, str, str], Image] = {}


def _me() -> str:
    """This process, as the names of its work under tmp/ give it: PID-STARTTIME."""
    return f"{os.getpid()}-{start_time(os.getpid())}"


_stores: dict[str, _Store] = {}


def _store() -> _Store:
    root = store_path()
    s = _stores.get(root)
    if s is None or not os.path.isdir(f"{root}/layers"):
        try:
            s = _stores[root] = _Store(root)
        except OSError as e:
            raise ImageError(f"{root}: {e.strerror}", step="open store") from None
    return s


# -- lookups ------------------------------------------------------------------------

def images() -> list[Image]:
    """Every image in the store (one entry per reference; untagged ones too)."""
    s = _store()
    out = []
    for key, digest in sorted(s.refs().items()):
        try:
            out.append(s.image("" if key == digest else key, digest))
        except (ImageError, OSError, ValueError, KeyError, TypeError, AttributeError):
            continue    # its blobs are gone (removed by hand): rmi takes the name
    return out


def get_image(ref: str | Image) -> Image:
    """The image for a reference ("busybox", "docker.io/library/busybox:1"),
    a digest of its manifest or config, or an id prefix (12 or more hex
    digits of its config's digest)."""
    if isinstance(ref, Image):
        return ref
    s = _store()
    refs = s.refs()
    if not isinstance(ref, str):
        raise TypeError(f"image is an Image or a reference str, not {type(ref).__name__}")
    hexes = ref.removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{12,64}", hexes):
        found: dict[str, str] = {}
        for key, d in sorted(refs.items(), key=lambda kv: kv[0] == kv[1]):
            config = s.read_json(d, key)["config"]["digest"]
            if d[7:].startswith(hexes) or config[7:].startswith(hexes):
                found.setdefault(d, key)
        if len(found) > 1:
            raise ImageError(f"{len(found)} images have ids that start so: give more digits",
                             ref=ref, step="find image")
        if found:
            d, key = next(iter(found.items()))
            return s.image("" if key == d else key, d)
    full = parse_ref(ref)
    digest = refs.get(full) if "@" not in full else None
    if digest is not None:
        return s.image(full, digest)
    if "@" in full:     # NAME@DIGEST: the image of that digest, under its own name
        wanted = full.partition("@")[2]
        for key, d in sorted(refs.items(), key=lambda kv: kv[0] == kv[1]):
            if d == wanted:
                return s.image("" if key == d else key, d)
    raise ImageError("no such image in the store (isolate.images() lists them; "
                     "isolate.load() adds one)", ref=ref, step="find image")


def lookup(layers: tuple[str, ...], path: str) -> str | None:
    """The host path of path as the overlay of layers (top first) shows it,
    or None where it is not there (whited out, hidden by an opaque
    directory, or under a symlink, which this does not follow)."""
    import stat
    parts = [p for p in path.split("/") if p not in ("", ".")]
    active = list(layers)
    found = layers[0] if not parts else None
    for i, part in enumerate(parts):
        rel = "/".join(parts[:i + 1])
        below = []
        found = None
        for layer in active:
            p = f"{layer}/{rel}"
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                break       # a whiteout
            if found is None:
                found = p
            if i == len(parts) - 1 or not stat.S_ISDIR(st.st_mode):
                break
            below.append(layer)
            if _opaque(p):
                break
        if found is None:
            return None
        if i < len(parts) - 1:
            if not below:
                return None
            active = below
    return found


def short_links(layers: tuple[str, ...]) -> tuple[str, ...]:
    """Short names for layer directories (STORE/l/HEX10 -> ../layers/HEX),
    made where missing, as Docker's overlay2 makes its l/ links: an
    overlay's lower layers are named in one page of mount options, and
    64-digit names fill it after about 35 layers."""
    out = []
    for d in layers:
        store, _, name = d.rpartition("/layers/")
        os.makedirs(f"{store}/l", mode=0o700, exist_ok=True)
        for n in (10, 16, 64):
            link = f"{store}/l/{name[:n]}"
            try:
                os.symlink(f"../layers/{name}", link)
            except FileExistsError:
                pass
            try:
                if os.readlink(link) == f"../layers/{name}":
                    break
            except OSError:
                continue
        else:
            raise ImageError(f"no short name for layer {name} in {store}/l", step="mount layers")
        out.append(link)
    return tuple(out)


def _opaque(path: str) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


# -- archives -----------------------------------------------------------------------

class _Archive:
    """The files of an image archive: a directory, or a tar (read in place)."""

    def __init__(self, path: str):
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(path):
            return
        from ._unpack import SafeTarInfo
        try:
            self.tar = tarfile.open(path, "r:", tarinfo=SafeTarInfo)
            for m in self.tar:
                name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
                if m.isreg() and m.sparse is None:
                    self.members[name] = m
        except FileNotFoundError:
            raise ImageError("no such file or directory", ref=path, step="read archive") from None
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"not an image archive (a tar or a directory): {e}",
                             ref=path, step="read archive") from None

    def has(self, name: str) -> bool:
        if self.tar is None:
            return os.path.lexists(self._join(name))
        return name in self.members

    def _join(self, name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ImageError(f"{name!r}: a path out of the archive", ref=self.path,
                             step="read archive")
        return os.path.join(self.path, *parts)

    def open(self, name: str) -> IO[bytes]:
        try:
            if self.tar is None:    # a regular file of the directory, through no symlink
                return open(self._open_beneath(name), "rb")
            member = self.members["/".join(p for p in name.split("/") if p not in ("", "."))]
            f = self.tar.extractfile(member)
            assert f is not None
            return f
        except (KeyError, FileNotFoundError):
            raise ImageError(f"{name} is missing", ref=self.path, step="read archive") from None

    def _open_beneath(self, name: str) -> int:
        from . import _isolate
        self._join(name)        # '..' refused
        dirfd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path = _isolate.openat2(dirfd, name, os.O_PATH | os.O_CLOEXEC,
                                    resolve=_isolate.RESOLVE_BENEATH | _isolate.RESOLVE_NO_SYMLINKS)
        except OSError as e:
            if e.errno in (40, 18):     # ELOOP, EXDEV
                raise ImageError(f"{name}: a symlink in the archive", ref=self.path,
                                 step="read archive") from None
            raise
        finally:
            os.close(dirfd)
        try:
            fd = reopen_regular(path)
        finally:
            os.close(path)
        if fd is None:
            raise ImageError(f"{name} is not a regular file", ref=self.path, step="read archive")
        return fd

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(16 << 20)
        try:
            return json.loads(data)
        except ValueError as e:
            raise ImageError(f"{name}: not JSON: {e}", ref=self.path, step="read archive") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


class _Hashing(io.RawIOBase):
    """A reader that hashes (sha256) and counts what passes, up to a limit."""

    def __init__(self, f: IO[bytes], limit: int, what: str):
        self.f, self.limit, self.what = f, limit, what
        self.h = hashlib.sha256()
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        self.n += len(data)
        if self.n > self.limit:
            raise ImageError(f"more than {self.limit} bytes", step=self.what)
        self.h.update(data)
        b[:len(data)] = data
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _max_layer() -> int:
    return int(os.environ.get("ISOLATE_MAX_LAYER_SIZE") or MAX_LAYER_SIZE)


def _decompressed(f: Any) -> IO[bytes]:
    buffered = f if isinstance(f, io.BufferedReader) else io.BufferedReader(f, 1 << 20)
    magic = buffered.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")     # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard    # type: ignore[import-not-found]
        except ImportError:
            raise ImageError("a zstd-compressed layer needs the zstandard package "
                             "(pip install zstandard)", step="unpack layer") from None
        return zstandard.ZstdDecompressor().stream_reader(buffered)  # type: ignore[return-value]
    return buffered


class _Load:
    """One load: everything staged under tmp/PID-RANDOM, then moved in."""

    def __init__(self, store: _Store, source: str):
        self.s = store
        self.source = source
        self.dir = f"{store.root}/tmp/{_me()}-{os.urandom(4).hex()}"
        os.mkdir(self.dir, 0o700)
        os.mkdir(f"{self.dir}/blobs")
        os.mkdir(f"{self.dir}/layers")
        self.blobs: dict[str, str] = {}      # digest -> staged path
        self.layers: dict[str, str] = {}     # diff id -> staged dir
        # what the store had, and the images rely on: checked again at commit
        self.needed_blobs: set[str] = set()
        self.needed_layers: set[str] = set()

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs or self.s.has_blob(digest)

    def blob_path(self, digest: str) -> str:
        return self.blobs.get(digest) or self.s.blob(digest)

    def add_blob(self, src: Any, digest: str | None, size: int | None, ref: str) -> str:
        """Copy src into the stage, verified against digest and size when
        given; its digest."""
        if digest is not None and not _DIGEST.fullmatch(digest):
            raise ImageError(f"unsupported digest {digest!r} (sha256 only)", ref=ref,
                             step="verify blob")
        if digest is not None and self.has_blob(digest):
            if digest not in self.blobs:
                self.needed_blobs.add(digest)
            return digest
        tmp = f"{self.dir}/blobs/{os.urandom(8).hex()}.part"    # pulls add blobs in threads
        limit = _max_layer()
        if size is not None and not (isinstance(size, int) and 0 <= size <= limit):
            raise ImageError(f"blob {digest}: a declared size of {size!r}", ref=ref,
                             step="verify blob")
        h = _Hashing(src, size if size is not None else limit, "verify blob")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(h, out, 1 << 20)     # type: ignore[misc]
        got = h.digest()
        if size is not None and h.n != size:
            raise ImageError(f"blob {digest or got}: {h.n} bytes, {size} declared", ref=ref,
                             step="verify blob")
        if digest is not None and got != digest:
            raise ImageError(f"blob {digest}: its content's digest is {got}", ref=ref,
                             step="verify blob")
        if got in self.blobs or self.s.has_blob(got):
            os.unlink(tmp)
            if got not in self.blobs:
                self.needed_blobs.add(got)
        else:
            final = f"{self.dir}/blobs/{got[7:]}"
            os.rename(tmp, final)
            self.blobs[got] = final
        return got

    def add_json(self, obj: Any) -> str:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        return self.add_blob(io.BytesIO(data), None, None, self.source)

    def unpack(self, blob: str, diff_id: str, ref: str) -> None:
        from . import _unpack
        if not _DIGEST.fullmatch(diff_id or ""):
            raise ImageError(f"diff id {diff_id!r} is not sha256:<hex>", ref=ref,
                             step="unpack layer")
        if diff_id in self.layers:
            return
        if os.path.isdir(f"{self.s.root}/layers/{diff_id[7:]}"):
            # unpacked already; this blob must still be that layer (else an
            # image would name content it does not have)
            self._verify(blob, diff_id, ref)
            self.needed_layers.add(diff_id)
            return
        dest = f"{self.dir}/layers/{diff_id[7:]}"
        os.mkdir(dest, 0o755)
        limit = _max_layer()
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with open(self.blob_path(blob), "rb") as raw:
                stream = _Hashing(_decompressed(raw), limit, "unpack layer")
                reader = io.BufferedReader(stream, 1 << 20)
                _unpack.unpack(reader, fd, root=os.geteuid() == 0)
                while reader.read(1 << 20):     # the tar's padding, for the digest
                    pass
        except _unpack.LayerRefused as e:
            raise ImageError(f"layer {blob} refused: {e}", ref=ref, step="unpack layer") from None
        except ImageError as e:
            raise ImageError(f"layer {blob}: {e}", ref=ref, step=e.step) from None
        except Exception as e:      # whatever a hostile stream makes of the parsers
            raise ImageError(f"layer {blob}: {e}", ref=ref, step="unpack layer") from None
        finally:
            os.close(fd)
        if stream.digest() != diff_id:
            raise ImageError(f"layer {blob}: its uncompressed digest is {stream.digest()}, "
                             f"the config says {diff_id}", ref=ref, step="verify layer")
        self.layers[diff_id] = dest

    def _verify(self, blob: str, diff_id: str, ref: str) -> None:
        try:
            with open(self.blob_path(blob), "rb") as raw:
                stream = _Hashing(_decompressed(raw), _max_layer(), "verify layer")
                while stream.read(1 << 20):
                    pass
        except ImageError:
            raise
        except Exception as e:
            raise ImageError(f"layer {blob}: {e}", ref=ref, step="verify layer") from None
        if stream.digest() != diff_id:
            raise ImageError(f"layer {blob}: its uncompressed digest is {stream.digest()}, "
                             f"the config says {diff_id}", ref=ref, step="verify layer")

    def commit(self, names: dict[str, str]) -> None:
        """Move the staged blobs and layers into the store, then list names
        (reference or digest -> manifest digest). Under the lock: prune
        must not see them before they are listed."""
        fd = self.s.lock()
        try:
            gone = [d for d in self.needed_blobs if not self.s.has_blob(d)] + \
                [d for d in self.needed_layers if not os.path.isdir(f"{self.s.root}/layers/{d[7:]}")]
            if gone:
                raise ImageError(f"{gone[0]} was pruned from the store meanwhile: try again",
                                 ref=self.source, step="commit")
            for digest, path in self.blobs.items():
                if not self.s.has_blob(digest):
                    os.rename(path, self.s.blob(digest))
            for diff_id, path in self.layers.items():
                try:
                    os.rename(path, f"{self.s.root}/layers/{diff_id[7:]}")
                except OSError:     # unpacked meanwhile by another load: the same content
                    pass
            refs = self.s.refs()
            for key, digest in names.items():
                if key == digest and digest in refs.values():
                    continue    # untagged, but listed already under a name
                refs[key] = digest
            self.s.write_refs(refs)
        finally:
            os.close(fd)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _platform_ok(p: dict[str, Any] | None) -> bool:
    if not p:
        return True
    return p.get("os", "linux") == "linux" and \
        p.get("architecture") == _ARCH.get(os.uname().machine, os.uname().machine)


def _oci_manifests(a: _Archive, load: _Load) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """(manifest descriptor, names) of each image of an OCI layout."""
    index = a.json("index.json")
    for d in index.get("manifests") or ():
        names = []
        ann = d.get("annotations") or {}
        full = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        if full:
            try:
                names.append(parse_ref(full) if ("/" in full or ":" in full) else "")
            except ImageError:
                pass
        mt = d.get("mediaType")
        if mt in _INDEXES:
            sub = _oci_blob_json(a, load, d)
            picked = [m for m in sub.get("manifests") or () if _platform_ok(m.get("platform"))]
            if not picked:
                raise ImageError("no manifest for this platform in the index", ref=a.path,
                                 step="read archive")
            d = picked[0]
            mt = d.get("mediaType")
        if mt not in _MANIFESTS:
            raise ImageError(f"unsupported manifest media type {mt!r}", ref=a.path,
                             step="read archive")
        yield d, [n for n in names if n]


def _oci_blob_json(a: _Archive, load: _Load, d: dict[str, Any]) -> Any:
    digest = d.get("digest", "")
    if not _DIGEST.fullmatch(digest):
        raise ImageError(f"unsupported digest {digest!r}", ref=a.path, step="read archive")
    with a.open(f"blobs/sha256/{digest[7:]}") as f:
        load.add_blob(f, digest, d.get("size"), a.path)
    with open(load.blob_path(digest), "rb") as f:
        try:
            return json.loads(f.read(16 << 20))
        except ValueError as e:
            raise ImageError(f"{digest}: not JSON: {e}", ref=a.path, step="read archive") from None


def _load_oci(a: _Archive, load: _Load) -> dict[str, str]:
    names: dict[str, str] = {}
    for d, refs in _oci_manifests(a, load):
        manifest = _oci_blob_json(a, load, d)
        _load_manifest(a, load, manifest, refs[0] if refs else a.path)
        for r in refs or [d["digest"]]:
            names[_name(r, d["digest"], a.path) if r != d["digest"] else r] = d["digest"]
    return names


def check_config(config: Any, ref: str, step: str) -> None:
    """An image config's fields of the types the spec gives them: what
    Store.image reads is never a surprise to it."""
    def strs(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    ok = isinstance(config, dict)
    c = config.get("config") if ok else None
    ok = ok and (c is None or isinstance(c, dict))
    c = c or {}
    ok = ok and all(c.get(k) is None or strs(c[k]) for k in ("Env", "Entrypoint", "Cmd"))
    ok = ok and all(c.get(k) is None or isinstance(c[k], str) for k in ("WorkingDir", "User"))
    ok = ok and (c.get("Labels") is None or (isinstance(c["Labels"], dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in c["Labels"].items())))
    ok = ok and (c.get("ExposedPorts") is None or isinstance(c["ExposedPorts"], dict))
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ok = ok and isinstance(rootfs, dict) and strs(rootfs.get("diff_ids")) and \
        isinstance(config.get("history", []), list) and \
        isinstance(config.get("created", ""), str)
    if not ok:
        raise ImageError("the image config has fields of the wrong type (Env, Entrypoint and "
                         "Cmd are lists of str, Labels a map of str, rootfs.diff_ids a list)",
                         ref=ref, step=step)


def _name(full: str, digest: str, ref: str) -> str:
    """The key a name lists an image under: NAME[:TAG]; a name pinned to a
    digest must be that image's (else a pinned name would serve other
    content), and lists it by that digest when it has no tag."""
    base, at, pinned = full.partition("@")
    if at and pinned != digest:
        raise ImageError(f"the name {full} pins {pinned}, but its manifest is {digest}",
                         ref=ref, step="read archive")
    if at and ":" not in base.rpartition("/")[2]:
        return digest
    return base


def _load_manifest(a: _Archive, load: _Load, manifest: dict[str, Any], ref: str) -> None:
    config = _oci_blob_json(a, load, manifest.get("config") or {})
    check_config(config, ref, "read archive")
    layers = manifest.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if not layers or len(layers) != len(diff_ids):
        raise ImageError(f"{len(layers)} layers in the manifest, {len(diff_ids)} diff ids in "
                         "the config (an image has one or more)", ref=ref, step="read archive")
    for layer, diff_id in zip(layers, diff_ids):
        digest = layer.get("digest", "")
        if not _DIGEST.fullmatch(digest):
            raise ImageError(f"unsupported layer digest {digest!r}", ref=ref, step="read archive")
        with a.open(f"blobs/sha256/{digest[7:]}") as f:
            load.add_blob(f, digest, layer.get("size"), ref)
        load.unpack(digest, diff_id, ref)


def _load_docker(a: _Archive, load: _Load) -> dict[str, str]:
    """A `docker save` archive: manifest.json's entries become OCI manifests."""
    names: dict[str, str] = {}
    entries = a.json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ImageError("manifest.json lists no image", ref=a.path, step="read archive")
    for e in entries:
        try:
            config_name, layer_names = e["Config"], list(e["Layers"])
        except (KeyError, TypeError):
            raise ImageError("manifest.json: an entry without Config and Layers", ref=a.path,
                             step="read archive") from None
        with a.open(config_name) as f:
            config_digest = load.add_blob(f, None, None, a.path)
        with open(load.blob_path(config_digest), "rb") as f:
            config = json.loads(f.read(16 << 20))
        check_config(config, a.path, "read archive")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if not layer_names or len(layer_names) != len(diff_ids):
            raise ImageError(f"{len(layer_names)} layers, {len(diff_ids)} diff ids in the config",
                             ref=a.path, step="read archive")
        descriptors = []
        for name, diff_id in zip(layer_names, diff_ids):
            with a.open(name) as f:
                digest = load.add_blob(f, None, None, a.path)
            size = os.path.getsize(load.blob_path(digest))
            load.unpack(digest, diff_id, a.path)
            with open(load.blob_path(digest), "rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
            descriptors.append({"mediaType": _LAYER + ("+gzip" if gz else ""),
                                "digest": digest, "size": size})
        manifest = {"schemaVersion": 2, "mediaType": _OCI_MANIFEST,
                    "config": {"mediaType": _OCI_CONFIG, "digest": config_digest,
                               "size": os.path.getsize(load.blob_path(config_digest))},
                    "layers": descriptors}
        digest = load.add_json(manifest)
        tags = [_name(parse_ref(t), digest, a.path) for t in (e.get("RepoTags") or ())]
        for r in tags or [digest]:
            names[r] = digest
    return names


def _plain(path: str, ld: _Load) -> str:
    """A compressed archive (docker save | gzip) decompressed once into the
    load's own directory: read in place, each member would decompress it
    from its start again."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except IsADirectoryError:
        return path
    except FileNotFoundError:
        raise ImageError("no such file or directory", ref=path, step="read archive") from None
    if magic[:2] != b"\x1f\x8b" and magic != b"\x28\xb5\x2f\xfd":
        return path
    out = f"{ld.dir}/archive.tar"
    with open(path, "rb") as raw, open(out, "wb") as dst:
        shutil.copyfileobj(_Hashing(_decompressed(raw), _max_layer(), "read archive"),  # type: ignore
                           dst, 1 << 20)
    return out


def load(path: str | os.PathLike[str], *, tag: str | None = None) -> list[Image]:
    """Load the images of an archive into the store: an OCI image layout
    (a directory, or a tar of one) or a `docker save` archive. tag names
    the image (the archive must hold one) besides the names it carries.
    Returns the images loaded; raises ImageError, leaving the store as it was."""
    path = os.fspath(path)
    s = _store()
    s.sweep_tmp()
    ld = _Load(s, path)
    a: _Archive | None = None
    try:
        a = _Archive(_plain(path, ld))
        if a.has("index.json"):
            names = _load_oci(a, ld)
        elif a.has("manifest.json"):
            names = _load_docker(a, ld)
        else:
            raise ImageError("neither an OCI image layout (index.json) nor a docker save "
                             "archive (manifest.json)", ref=path, step="read archive")
        if tag is not None:
            if len(set(names.values())) != 1:
                raise ImageError("tag= names one image; the archive holds "
                                 f"{len(set(names.values()))}", ref=path, step="tag")
            only = next(iter(names.values()))
            names[_name(parse_ref(tag), only, path)] = only
        ld.commit(names)
    except OSError as e:
        raise ImageError(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
                         ref=path, step="load") from None
    except ImageError:
        raise
    except Exception as e:
        # JSON of the archive's that is not what the specs say (or nests too deep)
        raise ImageError(f"a malformed manifest or config ({type(e).__name__}: {e})",
                         ref=path, step="read archive") from None
    finally:
        ld.close()
        if a is not None:
            a.close()
    out, seen = [], set()
    for key, digest in names.items():
        if (key, digest) not in seen:
            seen.add((key, digest))
            out.append(s.image("" if key == digest else key, digest))
    return out


def rmi(ref: str | Image) -> None:
    """Remove an image's reference from the store (its layers stay until prune())."""
    s = _store()
    if isinstance(ref, Image):
        key, digest = ref.ref or ref.digest, ref.digest
    elif ref in s.refs() or (isinstance(ref, str) and "@" not in ref and ":" in ref
                             and parse_ref(ref) in s.refs()):
        key = ref if ref in s.refs() else parse_ref(ref)
        digest = s.refs()[key]
    else:
        img = get_image(ref)
        key, digest = img.ref or img.digest, img.digest
    fd = s.lock()
    try:
        refs = s.refs()
        if refs.get(key) != digest:
            raise ImageError("no such image in the store", ref=key, step="remove image")
        del refs[key]
        s.write_refs(refs)
    finally:
        os.close(fd)


def _in_use() -> set[str]:
    """Layer directories some mount namespace has mounted (the overlays of
    running containers), as their paths appear in mountinfo."""
    used: set[str] = set()
    shorts: set[str] = set()
    seen: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            if ns in seen:
                continue
            seen.add(ns)
            with open(f"/proc/{pid}/mountinfo") as f:
                text = f.read()
        except OSError:
            continue
        for m in re.finditer(r"/layers/([0-9a-f]{64})", text):
            used.add(m.group(1))
        for m in re.finditer(r"(/[^ ,:]*)/l/([0-9a-f]{10,64})", text):
            shorts.add(m.group(2))
    root = _store().root
    for short in shorts:        # short names (see short_links): what they name
        try:
            used.add(os.readlink(f"{root}/l/{short}").rpartition("/")[2])
        except OSError:
            pass
    return used


def prune() -> int:
    """Remove blobs and layers that no image in the store uses (and no
    running container has mounted); the count of bytes freed, roughly."""
    s = _store()
    fd = s.lock()
    try:
        keep_blobs: set[str] = set()
        keep_layers: set[str] = set()
        for key, digest in s.refs().items():
            keep_blobs.add(digest[7:])
            manifest = s.read_json(digest, key)
            keep_blobs.add(manifest["config"]["digest"][7:])
            keep_blobs.update(x["digest"][7:] for x in manifest.get("layers") or ())
            config = s.read_json(manifest["config"]["digest"], key)
            keep_layers.update(d[7:] for d in config["rootfs"]["diff_ids"])
        keep_layers |= _in_use()
        freed = 0
        for name in os.listdir(f"{s.root}/blobs/sha256"):
            if name not in keep_blobs:
                p = f"{s.root}/blobs/sha256/{name}"
                freed += os.path.getsize(p)
                os.unlink(p)
        if os.path.isdir(f"{s.root}/l"):
            for short in os.listdir(f"{s.root}/l"):
                target = os.readlink(f"{s.root}/l/{short}").rpartition("/")[2]
                if target not in keep_layers:
                    os.unlink(f"{s.root}/l/{short}")
        for name in os.listdir(f"{s.root}/layers"):
            if name not in keep_layers:
                # out of the way first: a layer is never half there
                gone = f"{s.root}/tmp/{_me()}-prune-{name}"
                os.rename(f"{s.root}/layers/{name}", gone)
                shutil.rmtree(gone, ignore_errors=True)
        return freed
    finally:
        os.close(fd)


def save(image: str | Image, path: str | os.PathLike[str], *, format: str = "oci") -> str:
    """Write an image of the store to an archive (see Image.save)."""
    if format not in ("oci", "docker"):
        raise ValueError(f"format={format!r}: 'oci' or 'docker'")
    img = get_image(image)
    s = _store()
    path = os.fspath(path)
    manifest = s.read_json(img.digest, img.ref)
    blobs = [img.digest, manifest["config"]["digest"]] + [x["digest"] for x in manifest["layers"]]
    tmp = f"{path}.{os.getpid()}.part"
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            def add(name: str, data: bytes | None = None, src: str | None = None) -> None:
                info = tarfile.TarInfo(name)
                info.mode = 0o644
                info.mtime = int(time.time())
                if src is not None:
                    info.size = os.path.getsize(src)
                    with open(src, "rb") as f:
                        tar.addfile(info, f)
                else:
                    assert data is not None
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            for d in dict.fromkeys(blobs):
                add(f"blobs/sha256/{d[7:]}", src=s.blob(d))
            ann = {"io.containerd.image.name": img.ref,
                   "org.opencontainers.image.ref.name": img.ref.rpartition(":")[2]} \
                if img.ref else {}
            desc = {"mediaType": manifest.get("mediaType", _OCI_MANIFEST), "digest": img.digest,
                    "size": os.path.getsize(s.blob(img.digest))}
            if ann:
                desc["annotations"] = ann
            add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            add("index.json", json.dumps({"schemaVersion": 2, "mediaType": _OCI_INDEX,
                                          "manifests": [desc]}).encode())
            if format == "docker":
                tags = [_short(img.ref)] if img.ref else None
                add("manifest.json", json.dumps([{
                    "Config": f"blobs/sha256/{manifest['config']['digest'][7:]}",
                    "RepoTags": tags,
                    "Layers": [f"blobs/sha256/{x['digest'][7:]}" for x in manifest["layers"]],
                }]).encode())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path

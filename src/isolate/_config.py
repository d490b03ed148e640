"""Container options, validated before anything is created.

`make_config` turns the keyword arguments of `Container(...)` and
`isolate.run(...)` into an immutable `Config`; every bad value raises here
(TypeError, ValueError, FileNotFoundError, NotADirectoryError), so a bad
option never leaves anything behind.
"""
from __future__ import annotations

import functools
import os
import re
import resource
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._security import caps_for, may_raise_rlimits, rlimits_for
from .errors import ContainerError


class ContainerSetupRefused(ContainerError):
    """Something the container would be made from is not what it must be."""

    def __init__(self, message: str):
        super().__init__(1, message, None, step="check")
from .mounts import Mount

DEFAULT_NAMESPACES = frozenset({"mount", "pid", "uts", "ipc", "net", "cgroup"})
ALL_NAMESPACES = DEFAULT_NAMESPACES | {"user", "time"}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = ("none", "host")
#: user-mode stacks (network="bridge" for a caller without root)
USERMODE = ("pasta", "slirp4netns")
#: what a container's writable layer (and /tmp, /run on the host's root) may
#: hold by default: tmpfs is host RAM
DEFAULT_STORAGE_SIZE = "1G"
#: the kernel's PID_MAX_LIMIT on 64-bit: pids.max refuses more
PID_MAX_LIMIT = 4 * 1024 * 1024
#: letters, digits, '-', '.' and '_', not first '-' or '.': no '/', space,
#: newline or other byte that files and tools built from a hostname choke on
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", re.ASCII)


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Config:
    rootfs: str | None
    readonly: bool
    hostname: str | None
    network: str
    namespaces: frozenset[str]
    mounts: tuple[Mount, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    user: User
    #: host (euid, egid) that container root maps to when "user" is set
    host_ids: tuple[int, int]
    #: capability mask, or None when privileged (the caller's, unrestricted)
    caps: int | None = None
    no_new_privs: bool = True
    rlimits: tuple[tuple[int, int, int], ...] = ()
    #: the seccomp filter as BPF, or None
    seccomp: bytes | None = None
    #: (inside, outside, count) ranges written by the caller, or None: the
    #: container's root is the caller's own uid and gid alone
    uid_map: tuple[tuple[int, int, int], ...] | None = None
    gid_map: tuple[tuple[int, int, int], ...] | None = None
    #: resource limits: (("memory", bytes), ("pids", n), ("cpus", float), ...)
    limits: tuple[tuple[str, Any], ...] = ()
    #: the most each writable tmpfs of the container holds (its writable
    #: layer, and /tmp and /run on the host's root), in bytes
    storage_size: int = 1 << 30
    #: host device nodes given to the container: (host path, path inside)
    devices: tuple[tuple[str, str], ...] = ()
    #: the root is rootfs itself, bound writable (readonly: read-only), not a
    #: layer over it: an OCI bundle's root, which its engine made for it
    rootfs_inplace: bool = False
    #: paths hidden, and made read-only, when not privileged (None: isolate's
    #: lists, as Docker's)
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    #: (key, value) of namespaced sysctls, written at the start ("net.ipv4.ip_forward")
    sysctls: tuple[tuple[str, str], ...] = ()
    #: (name, path) of existing namespaces the container joins instead of
    #: making its own ("net", "/proc/PID/ns/net"): a Kubernetes pod's
    #: containers share its sandbox's network, IPC and UTS namespaces so
    joins: tuple[tuple[str, str], ...] = ()
    #: (clock, seconds, nanoseconds) of a time namespace: "monotonic" or
    #: "boottime" as the container sees them, ahead of the host's
    time_offsets: tuple[tuple[str, int, int], ...] = ()
    #: the execution domain (personality(2)) of its processes: 0x0008
    #: (PER_LINUX32) has `uname -m` say i686; None leaves the caller's
    personality: int | None = None
    #: the container's cgroup at /sys/fs/cgroup even without limits (its
    #: cgroups then come from the caller, see container._start)
    cgroupfs: bool = False
    #: an image's layer directories, top first (rootfs is the first): the
    #: lower layers of the root's overlay
    layers: tuple[str, ...] = ()
    #: the images.Image the root comes from, or None
    image: Any = None
    #: published ports (network.Port) of a container on a network
    ports: tuple[Any, ...] = ()

    @property
    def privileged(self) -> bool:
        return self.caps is None

    def security(self) -> tuple:
        """What ExecSpec takes as security."""
        return (self.caps, self.no_new_privs, self.rlimits, self.seccomp)

    @property
    def userns(self) -> bool:
        return "user" in self.namespaces


def _namespaces(namespaces: Iterable[str] | None, network: str | None) -> tuple[frozenset[str], str]:
    """The namespaces, and the network: "none", "host" or a network's name."""
    bridged = network is not None and network not in NETWORKS
    if bridged:
        if not isinstance(network, str):
            raise TypeError(f"network={network!r}: 'none', 'host', 'bridge', an isolate.Network "
                            "or a network's name")
        made, _ = _namespaces(namespaces, "none")
        if "net" not in made:
            raise ValueError(f"network={network!r} needs the 'net' namespace")
        return made, network
    if namespaces is None:
        ns = set(DEFAULT_NAMESPACES)
        if network == "host":
            ns.discard("net")
    else:
        if isinstance(namespaces, str):
            raise TypeError("namespaces is a collection of names, e.g. ('mount', 'pid')")
        ns = set(namespaces)
        unknown = ns - ALL_NAMESPACES
        if unknown:
            raise ValueError(
                f"unknown namespace(s) {sorted(unknown)}: choose from {sorted(ALL_NAMESPACES)}"
            )
        if network == "none" and "net" not in ns:
            raise ValueError("network='none' needs the 'net' namespace")
        if network == "host" and "net" in ns:
            raise ValueError("network='host' conflicts with the 'net' namespace")
    if os.geteuid() != 0:
        ns.add("user")          # the only way an unprivileged caller gets the others
    return frozenset(ns), "none" if "net" in ns else "host"


def _env(env: Mapping[str, str] | None, home: str) -> tuple[tuple[str, str], ...]:
    if env is None:
        return (("PATH", DEFAULT_PATH), ("HOME", home))
    if not isinstance(env, Mapping):
        raise TypeError("env must be a mapping of str to str")
    items = []
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"env entries must be str, got {k!r}: {v!r}")
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise ValueError(f"invalid environment variable name or value: {k!r}")
        try:
            os.fsencode(k), os.fsencode(v)
        except UnicodeError:
            raise ValueError(f"environment variable {k!r}: not encodable as bytes") from None
        items.append((k, v))
    return tuple(items)


def env_list(env: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[bytes]:
    items = env.items() if isinstance(env, Mapping) else env
    out = []
    for k, v in items:
        k, v = os.fsencode(k), os.fsencode(v)
        if not k or b"=" in k or b"\0" in k or b"\0" in v:
            raise ValueError(f"invalid environment variable name or value: {k!r}")
        out.append(k + b"=" + v)
    return out


def _limits(memory=None, pids=None, cpus=None, memory_swap=None, cpu_weight=None,
            cpuset=None, cpuset_mems=None, io_weight=None, io_max=None
            ) -> tuple[tuple[str, Any], ...]:
    """Validated limits; an impossible one is refused here, before anything."""
    from ._sizes import parse_size
    out: list[tuple[str, Any]] = []
    if memory is not None:
        n = parse_size(memory, "memory")
        if n < 1 << 20:
            raise ValueError(f"memory={memory!r}: a container needs at least 1M")
        out.append(("memory", n))
    if pids is not None and pids != -1:
        if not isinstance(pids, int) or isinstance(pids, bool):
            raise TypeError(f"pids={pids!r}: an int, or None (or -1) for no limit")
        if pids < 1:
            raise ValueError(f"pids={pids}: at least 1 (the init), or None for no limit")
        if pids > PID_MAX_LIMIT:
            raise ValueError(f"pids={pids}: at most {PID_MAX_LIMIT} (the kernel's most "
                             "processes), or None for no limit")
        out.append(("pids", pids))
    if memory_swap is not None and memory_swap != -1:
        if memory is None:
            raise ValueError("memory_swap (memory and swap together) needs memory too")
        n = parse_size(memory_swap, "memory_swap")
        if n < dict(out)["memory"]:
            raise ValueError(f"memory_swap={memory_swap!r} is below memory={memory!r}: it "
                             "counts memory and swap together")
        out.append(("memory_swap", n))
    for name, w in (("cpu_weight", cpu_weight), ("io_weight", io_weight)):
        if w is None:
            continue
        if not isinstance(w, int) or isinstance(w, bool):
            raise TypeError(f"{name}={w!r}: an int from 1 to 10000 (default 100)")
        if not 1 <= w <= 10000:
            raise ValueError(f"{name}={w}: from 1 to 10000 (default 100)")
        out.append((name, w))
    if cpus is not None:
        if not isinstance(cpus, (int, float)) or isinstance(cpus, bool):
            raise TypeError(f"cpus={cpus!r}: a number of CPUs, like 0.5")
        if not 0.01 <= cpus <= (os.cpu_count() or 1):
            raise ValueError(f"cpus={cpus}: between 0.01 and the {os.cpu_count()} CPUs here")
        out.append(("cpus", float(cpus)))
    if cpuset is not None:
        out.append(("cpuset", _cpu_list(cpuset, "cpuset", _online("cpu"))))
    if cpuset_mems is not None:
        out.append(("cpuset_mems", _cpu_list(cpuset_mems, "cpuset_mems", _online("node"))))
    if io_max is not None:
        out.append(("io_max", _io_max(io_max)))
    return tuple(out)


_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def _online(kind: str) -> set[int]:
    """The CPUs or memory nodes online here (a machine without NUMA has node 0)."""
    try:
        with open(f"/sys/devices/system/{kind}/online") as f:
            text = f.read().strip()
    except OSError:
        return set(range(os.cpu_count() or 1)) if kind == "cpu" else {0}
    return _expand(text)


def _expand(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _cpu_list(value: object, name: str, online: set[int]) -> str:
    """A list like "0-2,4", of CPUs (or memory nodes) that are online."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"{name}={value!r}: a list like '0-2,4'")
    text = value.replace(" ", "")
    if not _LIST.fullmatch(text):
        raise ValueError(f"{name}={value!r}: a list like '0-2,4'")
    chosen = _expand(text)
    if not chosen or not chosen <= online:
        raise ValueError(f"{name}={value!r}: not online here ({', '.join(map(str, sorted(online)))} are)")
    return text


_IO_KEYS = ("rbps", "wbps", "riops", "wiops")


def _io_max(value: object) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """{"/dev/sda": {"rbps": "10M", "wiops": 100}} as (("8:0", (("rbps", n), ...)), ...)."""
    from ._sizes import parse_size
    if not isinstance(value, Mapping):
        raise TypeError("io_max is a mapping like {'/dev/sda': {'rbps': '10M', 'wiops': 100}}")
    out = []
    for dev, rates in value.items():
        try:
            st = os.stat(dev)
        except OSError as e:
            raise ValueError(f"io_max: {dev}: {e.strerror}") from None
        if not stat.S_ISBLK(st.st_mode):
            raise ValueError(f"io_max: {dev} is not a block device")
        if not isinstance(rates, Mapping) or not rates:
            raise TypeError(f"io_max[{dev!r}] is a mapping of rbps, wbps, riops, wiops")
        limits = []
        for key, n in rates.items():
            if key not in _IO_KEYS:
                raise ValueError(f"io_max[{dev!r}]: {key!r} is not one of {', '.join(_IO_KEYS)}")
            if key.endswith("bps"):
                limits.append((key, parse_size(n, f"io_max[{dev!r}][{key!r}]")))
            elif isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1 << 32:
                limits.append((key, n))     # the kernel keeps iops limits as 32 bits
            else:
                raise ValueError(f"io_max[{dev!r}][{key!r}]={n!r}: a positive int below 2**32")
        out.append((f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}", tuple(sorted(limits))))
    return tuple(out)


def check_cwd(cwd: object) -> None:
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ValueError(f"cwd={cwd!r} must be an absolute path inside the container")
    if "\0" in cwd:
        raise ValueError(f"cwd={cwd!r} contains a NUL byte")
    try:
        os.fsencode(cwd)
    except UnicodeError:
        raise ValueError(f"cwd={cwd!r} is not encodable as bytes") from None
    if os.path.normpath(cwd).split("/")[1:2] == ["proc"]:
        raise ValueError(f"cwd={cwd!r}: a working directory in /proc can lead outside the container")


def _lookup(root: str | tuple[str, ...] | None, db: str, name: str) -> list[str] | None:
    """The /etc/passwd or /etc/group line for name in the container's image
    (root: a directory, or an image's layers, top first)."""
    from . import _isolate
    from ._fs import reopen_regular
    try:
        # a root's file is hostile: resolved inside the root (an image's:
        # the layer that holds it, no symlink), and read only if a regular
        # file (no FIFO, no device of the host opened)
        if isinstance(root, tuple):
            from ._images import lookup
            found = lookup(root, f"/etc/{db}")
            if found is None:
                return None
            path = os.open(found, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            top = os.open(root or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                path = _isolate.openat2(top, f"etc/{db}", os.O_PATH | os.O_CLOEXEC,
                                        resolve=_isolate.RESOLVE_IN_ROOT |
                                        _isolate.RESOLVE_NO_MAGICLINKS)
            finally:
                os.close(top)
        try:
            fd = reopen_regular(path)
        finally:
            os.close(path)
        if fd is None:
            return None
        with open(fd, encoding="utf-8", errors="replace") as f:
            if os.fstat(fd).st_size > 64 << 20:
                return None
            for line in f:
                fields = line.rstrip("\n").split(":")
                if fields and fields[0] == name:
                    return fields
    except OSError:
        return None
    return None


def _number(text: str) -> bool:
    """ASCII digits only (str.isdigit takes '³' and '٣', which int() reads or not)."""
    return text.isascii() and text.isdigit()


def parse_user(user: int | str | None, rootfs: str | tuple[str, ...] | None) -> User:
    """uid[:gid], name[:group] (looked up in the image's /etc), or None for root."""
    if user is None:
        return User(0, 0, ())
    if isinstance(user, bool):
        raise TypeError("user is an int uid or a 'uid:gid' str")
    if isinstance(user, int):
        if not 0 <= user < 2**32 - 1:
            raise ValueError(f"user={user} is out of range")
        return User(user, user, ())
    if not isinstance(user, str):
        raise TypeError("user is an int uid or a 'uid:gid' str")
    name, colon, group = user.partition(":")
    if colon and not group:
        raise ValueError(f"user={user!r}: an empty group after ':'")
    if _number(name):
        uid, gid = int(name), int(name)
    else:
        entry = _lookup(rootfs, "passwd", name)
        if entry is None or len(entry) < 4:
            raise ValueError(f"user {name!r} is not in the container's /etc/passwd")
        if not (_number(entry[2]) and _number(entry[3])):
            raise ValueError(f"user {name!r}: its /etc/passwd entry has no numeric uid and gid")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if _number(group):
            gid = int(group)
        else:
            gentry = _lookup(rootfs, "group", group)
            if gentry is None or len(gentry) < 3:
                raise ValueError(f"group {group!r} is not in the container's /etc/group")
            if not _number(gentry[2]):
                raise ValueError(f"group {group!r}: its /etc/group entry has no numeric gid")
            gid = int(gentry[2])
    if not (0 <= uid < 2**32 - 1 and 0 <= gid < 2**32 - 1):
        raise ValueError(f"user={user!r} is out of range")
    return User(uid, gid, ())


def _mapped(i: int, ranges) -> bool:
    return any(inside <= i < inside + count for inside, _, count in ranges)


def check_ids(user: User, userns: bool, uid_map=None, gid_map=None) -> None:
    if not userns:
        return
    if uid_map is None:
        if user.uid != 0 or user.gid != 0:
            raise ValueError(
                f"user {user.uid}:{user.gid} is not mapped in the container's user namespace, "
                "which maps only root (0:0) to the caller (give uid_map and gid_map)")
    elif not _mapped(user.uid, uid_map) or not _mapped(user.gid, gid_map):
        raise ValueError(f"user {user.uid}:{user.gid} is outside uid_map/gid_map")


def id_map(ranges, name: str) -> tuple[tuple[int, int, int], ...] | None:
    """Validated (inside, outside, count) ranges: no overlap inside or outside."""
    if ranges is None:
        return None
    if isinstance(ranges, (str, bytes)):
        raise TypeError(f"{name} is a list of (inside, outside, count)")
    out = []
    for r in ranges:
        try:
            inside, outside, count = r
        except (TypeError, ValueError):
            raise TypeError(f"{name}: {r!r} is not (inside, outside, count)") from None
        for v in (inside, outside, count):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}: {r!r} holds a value that is not an id")
        if count == 0 or inside + count > 2**32 - 1 or outside + count > 2**32 - 1:
            raise ValueError(f"{name}: {r!r} is empty or runs past the last id")
        out.append((inside, outside, count))
    if not out or len(out) > 340:
        raise ValueError(f"{name} takes 1 to 340 ranges")
    for side in (0, 1):
        spans = sorted((r[side], r[side] + r[2]) for r in out)
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            if b0 < a1:
                raise ValueError(f"{name}: ranges overlap {'inside' if side == 0 else 'outside'}"
                                 f" the container ({a0}-{a1 - 1} and {b0}-{b1 - 1})")
    return tuple(out)


def _have_newidmap() -> bool:
    import shutil
    return shutil.which("newuidmap") is not None and shutil.which("newgidmap") is not None


def _subids(path: str, name: str, uid: int) -> tuple[int, int] | None:
    """The first range /etc/subuid or /etc/subgid gives this user."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in (name, str(uid)):
                    return int(fields[1]), int(fields[2])
    except (OSError, ValueError):
        return None
    return None


def subid_maps() -> tuple[tuple[tuple[int, int, int], ...] | None, tuple[tuple[int, int, int], ...] | None]:
    """Maps from /etc/subuid and /etc/subgid, or (None, None) for the caller's
    own ids alone. Root gets its range as the container's ids from 0; another
    user is the container's root, its range the ids from 1 (written by
    newuidmap/newgidmap, which check the ranges)."""
    import pwd
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    su, sg = _subids("/etc/subuid", name, uid), _subids("/etc/subgid", name, uid)
    if su is None or sg is None:
        return None, None
    if uid == 0:
        return ((0, su[0], su[1]),), ((0, sg[0], sg[1]),)
    if not _have_newidmap():
        return None, None
    return ((0, uid, 1), (1, su[0], su[1])), ((0, gid, 1), (1, sg[0], sg[1]))


def write_id_maps(cfg: Config, pid: int) -> None:
    """Write pid's id maps from outside: directly as root, else with
    newuidmap/newgidmap (setuid helpers that check /etc/subuid)."""
    import subprocess
    assert cfg.uid_map is not None and cfg.gid_map is not None
    for name, ranges in (("gid_map", cfg.gid_map), ("uid_map", cfg.uid_map)):
        if os.geteuid() == 0:
            text = "".join(f"{i} {o} {n}\n" for i, o, n in ranges)
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
            continue
        tool = "newgidmap" if name == "gid_map" else "newuidmap"
        args = [tool, str(pid), *(str(v) for r in ranges for v in r)]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise ContainerError(1, f"{tool} refused the map: {r.stderr.strip()} (check /etc/sub"
                                 f"{'g' if name == 'gid_map' else 'u'}id)", None, step=tool)


def _rootfs(rootfs: str | os.PathLike[str] | None) -> str | None:
    if rootfs is None:
        return None
    path = os.fspath(rootfs)
    if not isinstance(path, str):
        raise TypeError("rootfs is a str path")
    path = os.path.realpath(path)
    st = os.stat(path)          # FileNotFoundError names it
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "rootfs is not a directory", path)
    if "," in path or ":" in path:
        raise ValueError(f"rootfs {path!r}: a path with ',' or ':' cannot be an overlay layer")
    for name in ("proc", "sys", "dev"):
        p = os.path.join(path, name)
        if os.path.islink(p):
            raise ValueError(f"rootfs {path!r}: /{name} is a symlink; refusing to mount over it")
    return path


def _image_root(image: Any) -> tuple[str, ...]:
    """The layer directories of an image (top first), checked as _rootfs
    checks a directory."""
    from .errors import ImageError
    from ._images import lookup
    layers = image.layer_dirs()
    for d in layers:
        if not os.path.isdir(d):
            raise ImageError(f"layer {d} is missing from the store (pruned?): load the image "
                             "again", ref=image.ref or image.digest, step="find layers")
    for name in ("proc", "sys", "dev"):
        found = lookup(layers, name)
        if found is not None and os.path.islink(found):
            raise ValueError(f"image {image.ref or image.digest}: /{name} is a symlink; "
                             "refusing to mount over it")
    return layers


def make_config(rootfs: str | os.PathLike[str] | None = None, _subid_maps: bool = True,
                **options: Any) -> Config:
    """A validated Config from Container's options (see _build_config); the
    same options twice give the cached one, rechecked against the filesystem
    (rootfs and bind sources must still be there)."""
    options = dict(options, rootfs=rootfs, _subid_maps=_subid_maps)
    network = options.get("network")
    if network is not None and not isinstance(network, str):
        from .network import Network
        if isinstance(network, Network):
            options["network"] = network.name
    if options.get("ports") is not None:
        from .network import parse_ports
        options["ports"] = parse_ports(options["ports"])
    if options.get("image") is not None:     # the image a reference names now
        from ._images import get_image
        options["image"] = get_image(options["image"])
    try:
        key = tuple((name, _frozen(name, options[name])) for name in sorted(options))
        cfg = _cached_config(key + (("ids", (os.geteuid(), os.getegid(), _hard_limits())),))
    except (TypeError, AttributeError):   # unhashable, wrong types or not to cache
        return _build_config(**options)
    if cfg.image is not None:   # its layers are still in the store (prune); their
        if not all(os.path.isdir(d) for d in cfg.layers):      # content does not change
            _image_root(cfg.image)
    elif cfg.rootfs is not None and not os.path.isdir(cfg.rootfs):
        _rootfs(cfg.rootfs)     # raises what the first call would have
    for m in cfg.mounts:
        if m.source is not None:
            os.stat(m.source)
    return cfg


_MAPPINGS = ("env", "rlimits")


def _hard_limits() -> tuple[int, ...]:
    """This process's hard rlimits: what rlimits, and the default nofile, are checked against."""
    return tuple(resource.getrlimit(n)[1] for n in _RLIMITS)


_RLIMITS = tuple(getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_"))


def _frozen(name: str, value: Any) -> Any:
    """A hashable form of an option's value for the cache key (TypeError: do
    not cache). A seccomp profile of the caller's (a dict, a file that may
    change) is read anew each time."""
    if name == "seccomp" and value not in ("default", None):
        raise TypeError("not cached")
    if value is None or isinstance(value, (str, int, os.PathLike)):
        return value
    if name in _MAPPINGS:
        return tuple((k, _frozen(k, v)) for k, v in value.items())
    if name == "namespaces":
        return frozenset(value)
    if name == "image":
        return value        # an images.Image: frozen, and names its content by digest
    return tuple(_frozen("", v) if isinstance(v, (list, tuple)) else v for v in value)


@functools.lru_cache(maxsize=128)
def _cached_config(key: tuple) -> Config:
    options: dict[str, Any] = {
        name: dict(value) if name in _MAPPINGS and value is not None else value
        for name, value in key if name != "ids"}
    return _build_config(**options)


def _build_config(
    rootfs: str | os.PathLike[str] | None = None,
    _subid_maps: bool = True,
    *,
    hostname: str | None = None,
    network: str | None = None,
    mounts: Iterable[Mount] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: int | str | None = None,
    readonly: bool = False,
    namespaces: Iterable[str] | None = None,
    cap_add: Iterable[str] = (),
    cap_drop: Iterable[str] = (),
    privileged: bool = False,
    rlimits: Mapping[str, tuple[int, int]] | None = None,
    seccomp: str | os.PathLike[str] | Mapping[str, Any] | None = "default",
    uid_map: Iterable[tuple[int, int, int]] | None = None,
    gid_map: Iterable[tuple[int, int, int]] | None = None,
    userns: bool = False,
    memory: int | str | None = None,
    memory_swap: int | str | None = None,
    pids: int | None = None,
    cpus: float | None = None,
    cpu_weight: int | None = None,
    cpuset: str | None = None,
    cpuset_mems: str | None = None,
    io_weight: int | None = None,
    io_max: Mapping[str, Mapping[str, int | str]] | None = None,
    storage_size: int | str = DEFAULT_STORAGE_SIZE,
    devices: Iterable[str] = (),
    image: Any = None,
    ports: Any = None,
) -> Config:
    root = _rootfs(rootfs)
    layers: tuple[str, ...] = ()
    if image is not None:
        if root is not None:
            raise ValueError("give rootfs or image, not both")
        layers = _image_root(image)
        root = layers[0]
        # the image's settings, unless the caller gives them (as docker run)
        if cwd is None:
            cwd = image.working_dir or "/"
        if user is None and image.user:
            user = image.user
        base = dict(e.split("=", 1) for e in image.env if "=" in e)
        if env is not None:
            if not isinstance(env, Mapping):
                raise TypeError("env must be a mapping of str to str")
            base.update(env)
        env = base
    if cwd is None:
        cwd = "/"
    umap, gmap = id_map(uid_map, "uid_map"), id_map(gid_map, "gid_map")
    if (umap is None) != (gmap is None):
        raise ValueError("give uid_map and gid_map together")
    if not isinstance(userns, bool):
        raise TypeError("userns is True or False")
    if umap is None and _subid_maps and (userns or os.geteuid() != 0):
        umap, gmap = subid_maps()
    if umap is not None or userns:
        if namespaces is not None and "user" not in namespaces:
            raise ValueError("userns, uid_map and gid_map need the 'user' namespace")
        namespaces = set(DEFAULT_NAMESPACES if namespaces is None else namespaces) | {"user"}
        if network == "host":
            namespaces.discard("net")
    if umap is not None and os.geteuid() != 0 and not _have_newidmap():
        raise ValueError("mapping id ranges as an unprivileged user needs newuidmap and "
                         "newgidmap (Debian: apt-get install uidmap) and /etc/subuid entries")
    ns, network = _namespaces(namespaces, network)
    from .network import parse_ports
    ports = parse_ports(ports)
    if ports and network in NETWORKS:
        raise ValueError(f"ports= needs a network (network='bridge' or a Network), not "
                         f"network={network!r}")
    if hostname is not None:
        if not isinstance(hostname, str):
            raise TypeError("hostname is a str")
        if not 0 < len(hostname) <= 64 or not _HOSTNAME.fullmatch(hostname):
            raise ValueError(f"hostname {hostname!r} must be 1 to 64 letters, digits, '-', '.'"
                             " or '_' (not first '-' or '.')")
        if "uts" not in ns:
            raise ValueError("hostname needs the 'uts' namespace")
    if mounts is None or isinstance(mounts, (Mount, str, bytes)):
        raise TypeError(f"mounts is a list of Mount objects (Mount.bind, Mount.tmpfs), not {mounts!r}")
    mounts = tuple(mounts)
    for m in mounts:
        if not isinstance(m, Mount):
            raise TypeError(f"mounts takes Mount objects (Mount.bind, Mount.tmpfs), not {m!r}")
        if m.kind == "bind" and m.source is not None:
            os.stat(m.source)   # FileNotFoundError names the missing source
        if m.kind == "overlay" and m.source is not None:
            if not os.path.isdir(m.source):
                os.stat(m.source)
                raise NotADirectoryError(20, "an overlay's source is a directory", m.source)
            real = os.path.realpath(m.source)       # what the plan mounts (Mount saw the link)
            if any(c in real for c in ",:\\"):
                raise ValueError(f"overlay source {m.source!r} leads to {real!r}: overlayfs "
                                 "cannot take a path with ',', ':' or '\\'")
    if network in USERMODE or (network == "bridge" and os.geteuid() != 0):
        from ._usermode import choose
        network = choose(network)
    elif network not in NETWORKS:
        from .network import _need_net_admin, attached_network
        _need_net_admin()
        net = attached_network(network)        # NetworkError if there is none
        # its names and resolvers, under what the caller binds there itself
        mounts = (Mount.bind(net.hosts_file, "/etc/hosts", readonly=True),
                  Mount.bind(net.resolv_conf, "/etc/resolv.conf", readonly=True), *mounts)
    if (root is not None or mounts) and "mount" not in ns:
        raise ValueError("rootfs and mounts need the 'mount' namespace")
    check_cwd(cwd)
    u = parse_user(user, layers or root)
    check_ids(u, "user" in ns, umap, gmap)
    if "user" in ns:    # its nodes are bound from the host's /dev (CVE-2025-31133 family)
        st = os.stat("/dev/null")
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 1 or os.minor(st.st_rdev) != 3:
            raise ContainerSetupRefused("the host's /dev/null is not the character device 1:3")
    if not isinstance(privileged, bool):
        raise TypeError("privileged is True or False")
    if not isinstance(readonly, bool):
        raise TypeError("readonly is True or False")
    limits = _limits(memory, pids, cpus, memory_swap, cpu_weight, cpuset, cpuset_mems, io_weight,
                     io_max)
    caps = caps_for(cap_add, cap_drop)
    bpf = None
    if seccomp == "default":
        if not privileged:
            from ._seccomp import default_filter
            bpf = default_filter(caps)
    elif seccomp is not None:
        if isinstance(seccomp, str) and not os.path.exists(seccomp):
            raise ValueError(f"seccomp={seccomp!r}: use 'default', None, a profile dict or "
                             "the path of an OCI/Docker JSON profile")
        from ._seccomp import profile_filter
        bpf = profile_filter(seccomp, caps)
    return Config(
        rootfs=root,
        readonly=readonly,
        hostname=hostname,
        network=network,
        namespaces=ns,
        mounts=mounts,
        env=_image_env(env or {}, u) if image is not None else
        _env(env, "/root" if u.uid == 0 else "/"),
        cwd=cwd,
        user=u,
        host_ids=(os.geteuid(), os.getegid()),
        caps=None if privileged else caps,
        no_new_privs=not privileged,
        rlimits=rlimits_for(rlimits, bool(rlimits) and may_raise_rlimits(
            None if privileged else caps, "user" in ns, u.uid)),
        seccomp=bpf,
        uid_map=umap,
        gid_map=gmap,
        limits=limits,
        storage_size=_storage_size(storage_size),
        devices=_devices(devices, "user" in ns),
        layers=layers,
        image=image,
        ports=ports,
    )


def _image_env(env: Mapping[str, str], u: User) -> tuple[tuple[str, str], ...]:
    """An image container's environment: the image's and the caller's,
    with PATH and HOME where neither gives them (as Docker sets them)."""
    items = dict(_env(env, "/"))
    items.setdefault("PATH", DEFAULT_PATH)
    items.setdefault("HOME", "/root" if u.uid == 0 else "/")
    return tuple(items.items())


def _storage_size(value: int | str) -> int:
    from ._sizes import parse_size
    n = parse_size(value, "storage_size")
    if n < 1 << 20:
        raise ValueError(f"storage_size={value!r}: a container's writable layer needs at least 1M")
    return n


def _devices(devices: Iterable[str], userns: bool) -> tuple[tuple[str, str], ...]:
    """["/dev/fuse", "/dev/sdb:/dev/xvdb"] as ((host, inside), ...), as
    `docker run --device HOST[:CONTAINER]`: each a host character or block
    device, bound into the container's /dev."""
    if isinstance(devices, str):
        raise TypeError("devices is a list like ['/dev/fuse', '/dev/sdb:/dev/xvdb']")
    out = []
    for spec in devices:
        if not isinstance(spec, str):
            raise TypeError(f"devices: {spec!r} is not a str like '/dev/fuse' or 'HOST:CONTAINER'")
        host, _, inside = spec.partition(":")
        inside, _, perms = inside.partition(":")
        inside = inside or host
        if perms and not set(perms) <= set("rwm"):
            raise ValueError(f"devices: {spec!r}: permissions are letters of 'rwm'")
        for p in (host, inside):
            if not p.startswith("/") or "\0" in p or "," in p:
                raise ValueError(f"devices: {spec!r}: give absolute paths")
        if not os.path.normpath(inside).startswith("/dev/") or ".." in inside.split("/"):
            raise ValueError(f"devices: {spec!r}: a device goes under /dev in the container")
        st = os.stat(host)          # FileNotFoundError names it
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise ValueError(f"devices: {host!r} is not a character or block device")
        out.append((os.path.realpath(host), os.path.normpath(inside)))
    return tuple(out)

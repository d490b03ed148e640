"""A Config compiled into the ordered steps that csrc/child.c walks.

The steps are plain tuples, so a plan can be printed and tested without
creating anything:

    >>> for step in describe(container_steps(make_config())): print(step)
"""
from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterable

from . import _isolate as _c
from ._config import USERMODE, Config
from ._security import MASKED_PATHS, READONLY_PATHS

MS = _c.MS
NOSUID, NODEV, NOEXEC, RDONLY, REC = MS["nosuid"], MS["nodev"], MS["noexec"], MS["rdonly"], MS["rec"]

#: The host directory the setup tmpfs goes on, in the container's own mount
#: namespace; the host's content there stays visible as /oldroot/tmp.
BASE = "/tmp"
NEWROOT = "/newroot"
OLDROOT = "/oldroot"

DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
             ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
             ("pts/ptmx", "ptmx"))

_KIND_NAMES = {v: k[3:].lower() for k, v in vars(_c).items() if k.startswith("OP_")}


def _b(s):
    return None if s is None else os.fsencode(s)


def op(kind, *, src=None, dst=None, fstype=None, data=None, flags=0, arg=0):
    return (kind, _b(src), _b(dst), _b(fstype), _b(data), flags, arg)


def describe(steps):
    """Readable lines for a list of steps."""
    for kind, src, dst, fstype, data, flags, arg in steps:
        parts = [_KIND_NAMES.get(kind, str(kind))]
        for name, v in (("src", src), ("dst", dst), ("type", fstype), ("data", data)):
            if v is not None:
                parts.append(f"{name}={os.fsdecode(v)}")
        if flags:
            parts.append(f"flags={flags:#x}")
        if arg:
            parts.append(f"arg={arg:#o}" if kind == _c.OP_MKDIR else f"arg={arg}")
        yield " ".join(parts)


def _userns_steps(cfg: Config) -> list[tuple]:
    uid, gid = cfg.host_ids
    return [
        op(_c.OP_WRITE, dst="/proc/self/setgroups", data="deny"),
        op(_c.OP_WRITE, dst="/proc/self/gid_map", data=f"0 {gid} 1\n"),
        op(_c.OP_WRITE, dst="/proc/self/uid_map", data=f"0 {uid} 1\n"),
    ]


#: the most of a page (the mount's options) the lower layers may take
_LOWER_MAX = 3800


def _root_steps(cfg: Config) -> list[tuple]:
    """Mount the container's / at NEWROOT (the host's root is at OLDROOT)."""
    if cfg.rootfs is None:
        return [op(_c.OP_BIND, src=OLDROOT, dst=NEWROOT, flags=REC),
                op(_c.OP_RDONLY_REC, dst=NEWROOT, flags=NODEV)]
    lower = OLDROOT + cfg.rootfs
    if cfg.rootfs_inplace:
        steps = [op(_c.OP_BIND, src=lower, dst=NEWROOT, flags=REC | NODEV)]
        if cfg.readonly:
            steps.append(op(_c.OP_RDONLY_REC, dst=NEWROOT, flags=NODEV))
        return steps
    if len(cfg.layers) > 1:     # an image's: overlayfs's order, top first
        lower = ":".join(OLDROOT + d for d in cfg.layers)
        if len(lower) > _LOWER_MAX:     # the mount's data is one page, with the rest
            from ._images import short_links
            lower = ":".join(OLDROOT + d for d in short_links(cfg.layers))
        if len(lower) > _LOWER_MAX:
            raise ValueError(f"an image of {len(cfg.layers)} layers: their paths do not fit "
                             "in one overlay mount here (a store with a shorter path, "
                             "ISOLATE_HOME, takes more)")
        if cfg.readonly:        # an overlay without an upper layer is read-only
            return [op(_c.OP_MOUNT, src="overlay", dst=NEWROOT, fstype="overlay",
                       flags=NODEV | RDONLY, data=f"lowerdir={lower}")]
    if cfg.readonly:
        return [op(_c.OP_BIND, src=lower, dst=NEWROOT, flags=REC),
                op(_c.OP_RDONLY_REC, dst=NEWROOT, flags=NODEV)]
    data = f"lowerdir={lower},upperdir=/upper,workdir=/work"
    if cfg.userns:
        data += ",userxattr"
    return [op(_c.OP_MKDIR, dst="/upper", arg=0o755),
            op(_c.OP_MKDIR, dst="/work", arg=0o755),
            op(_c.OP_MOUNT, src="overlay", dst=NEWROOT, fstype="overlay", flags=NODEV,
               data=data)]


def _root_isdir(cfg: Config, path: str) -> bool:
    if cfg.layers:
        from ._images import lookup
        found = lookup(cfg.layers, path)
        return found is not None and os.path.isdir(found) and not os.path.islink(found)
    return os.path.isdir(f"{cfg.rootfs}{path}")


def _special_fs_steps(cfg: Config, beside: bool) -> list[tuple]:
    """/proc, /sys and /dev, as runc and crun lay them out. With beside, the
    network namespace made beside the child is joined just before /sys, which
    shows the namespace of whoever mounts it: as late as that allows, so that
    its making overlaps the mounts before."""
    r = NEWROOT
    steps = []
    if cfg.rootfs is not None and not cfg.readonly:
        steps += [op(_c.OP_MKDIR, dst=r + d, arg=0o755) for d in ("/proc", "/sys", "/dev")
                  if not _root_isdir(cfg, d)]
    # a PID namespace of its own, or one joined (the proc mounted shows it)
    if "pid" in cfg.namespaces or "pid" in dict(cfg.joins):
        steps.append(op(_c.OP_MOUNT, src="proc", dst=r + "/proc", fstype="proc",
                        flags=NOSUID | NODEV | NOEXEC))
    else:
        steps.append(op(_c.OP_BIND, src=OLDROOT + "/proc", dst=r + "/proc", flags=REC))
    # before /proc/sys is made read-only; the keys were checked to be namespaced.
    # /proc/sys/net is the writer's network namespace's: the container's is
    # joined first where it is made beside (else the host's would be written)
    joined = beside and any(key.startswith("net.") for key, _ in cfg.sysctls)
    if joined:
        steps.append(op(_c.OP_JOIN_NET))
    steps += [op(_c.OP_WRITE, dst=f"{r}/proc/sys/{key.replace('.', '/')}", data=value)
              for key, value in cfg.sysctls]

    # Only /dev's nodes can be opened: every other mount is nodev. Where the
    # seccomp filter refuses mknod of devices (the default one), /dev is the
    # one mount that is not, and its nodes are made there; elsewhere (no
    # filter, another profile, privileged), and in a user namespace (where
    # mknod is refused: the host's nodes), /dev is nodev too and each node a
    # bind of its own, made in the setup tmpfs: a node made later stays shut.
    dev = r + "/dev"
    binds = cfg.userns or not _refuses_mknod(cfg)
    steps.append(op(_c.OP_MOUNT, src="tmpfs", dst=dev, fstype="tmpfs",
                    flags=NOSUID | (NODEV if binds else 0) | MS["strictatime"],
                    data="mode=755,size=1m"))
    if binds and not cfg.userns:
        steps.append(op(_c.OP_MKDIR, dst="/nodes", arg=0o755))
    for name, major, minor in DEVICES:
        if not binds:
            steps.append(op(_c.OP_MKNOD, dst=f"{dev}/{name}", flags=0o666,
                            arg=os.makedev(major, minor)))
            continue
        if cfg.userns:
            source = f"{OLDROOT}/dev/{name}"
        else:
            source = f"/nodes/{name}"
            steps.append(op(_c.OP_MKNOD, dst=source, flags=0o666, arg=os.makedev(major, minor)))
        steps += [op(_c.OP_MKNOD, dst=f"{dev}/{name}", flags=stat.S_IFREG | 0o644),  # target
                  op(_c.OP_BIND, src=source, dst=f"{dev}/{name}")]
    for host, inside in cfg.devices:
        if os.path.dirname(inside) != "/dev":
            steps.append(op(_c.OP_MKDIR, dst=r + os.path.dirname(inside), arg=0o755))
        steps += [op(_c.OP_TOUCH, dst=r + inside),
                  op(_c.OP_BIND, src=OLDROOT + host, dst=r + inside)]
    pts_opts = "newinstance,ptmxmode=0666,mode=0620" + ("" if cfg.userns else ",gid=5")
    steps += [
        op(_c.OP_MKDIR, dst=dev + "/pts", arg=0o755),
        op(_c.OP_MOUNT, src="devpts", dst=dev + "/pts", fstype="devpts",
           flags=NOSUID | NOEXEC, data=pts_opts),
        op(_c.OP_MKDIR, dst=dev + "/shm", arg=0o1777),
        op(_c.OP_MOUNT, src="shm", dst=dev + "/shm", fstype="tmpfs",
           flags=NOSUID | NODEV | NOEXEC, data="mode=1777,size=65536k"),
    ]
    steps += [op(_c.OP_SYMLINK, src=target, dst=f"{dev}/{name}") for target, name in DEV_LINKS]

    ro = RDONLY | NOSUID | NODEV | NOEXEC
    if beside and not joined:
        steps.append(op(_c.OP_JOIN_NET))
    if "net" not in cfg.namespaces and cfg.rootfs is None:
        pass    # the host's /sys is there, read-only with the root (a new sysfs of the
        #         host's network namespace would be its superblock, rw: EBUSY for ro)
    elif "net" in cfg.namespaces or not cfg.userns:
        steps.append(op(_c.OP_MOUNT, src="sysfs", dst=r + "/sys", fstype="sysfs", flags=ro))
    else:   # sysfs belongs to the network namespace's owner
        steps += [op(_c.OP_BIND, src=OLDROOT + "/sys", dst=r + "/sys", flags=REC),
                  op(_c.OP_RDONLY_REC, dst=r + "/sys")]
    if (cfg.limits or cfg.cgroupfs) and "cgroup" in cfg.namespaces:
        steps += _cgroupfs_steps(cfg, r + "/sys/fs/cgroup")

    if cfg.rootfs is None:
        cap = _tmpfs_cap(cfg.storage_size)
        steps += [
            op(_c.OP_MOUNT, src="tmpfs", dst=r + "/tmp", fstype="tmpfs",
               flags=NOSUID | NODEV, data="mode=1777," + cap),
            op(_c.OP_MOUNT, src="tmpfs", dst=r + "/run", fstype="tmpfs",
               flags=NOSUID | NODEV, data="mode=755," + cap),
        ]
    return steps


def _hardening_steps(cfg: Config) -> list[tuple]:
    """The masked and the read-only paths, after every mount (a path under a
    mount of the user's is masked too, as runc does it)."""
    if cfg.privileged:
        return []
    r = NEWROOT
    ro = RDONLY | NOSUID | NODEV | NOEXEC
    masked = MASKED_PATHS if cfg.masked_paths is None else cfg.masked_paths
    readonly = READONLY_PATHS if cfg.readonly_paths is None else cfg.readonly_paths
    # an empty file and directory in the setup tmpfs, on a read-only bind:
    # a bind copies the source mount's flags, so each mask is one bind (no
    # remount), and writes fail (a /dev/null would take them)
    steps = [op(_c.OP_MKDIR, dst="/mask/dir", arg=0o555),
             op(_c.OP_TOUCH, dst="/mask/file"),
             op(_c.OP_BIND, src="/mask", dst="/mask", flags=ro)]
    steps += _mask_steps(masked)
    # the read-only paths of /proc, each one bind from a read-only view of it
    steps += [op(_c.OP_MKDIR, dst="/roproc", arg=0o555),
              op(_c.OP_BIND, src=r + "/proc", dst="/roproc", flags=ro)]
    steps += [op(_c.OP_RO_IF_ANY, src="/roproc" + p.removeprefix("/proc"), dst=r + p)
              if p.startswith("/proc/") else op(_c.OP_RO_IF_ANY, dst=r + p)
              for p in readonly]
    return steps


def _refuses_mknod(cfg: Config) -> bool:
    """Whether cfg's seccomp filter is the default one, which refuses mknod
    of character and block devices whatever the capabilities."""
    if cfg.seccomp is None or cfg.caps is None:
        return False
    from ._seccomp import default_filter
    return cfg.seccomp == default_filter(cfg.caps)


def _tmpfs_cap(size: int) -> str:
    """tmpfs options that bound what it takes of host memory: bytes, and
    inodes (each costs memory too; one per 16 KiB)."""
    return f"size={size},nr_inodes={_inodes(size)}"


def _inodes(size: int) -> int:
    return max(size // 16384, 4096)


def _mask_steps(paths: Iterable[str]) -> list[tuple]:
    """Each path that exists hidden under the empty file or directory."""
    return [op(_c.OP_MASK, src="/mask/file", data="/mask/dir", dst=NEWROOT + p) for p in paths]


def _cgroupfs_steps(cfg: Config, dst: str) -> list[tuple]:
    """The container's own cgroup, read-only at /sys/fs/cgroup: the cgroup
    namespace makes it the root. v1: a tmpfs with a directory per hierarchy
    of the container's controllers, as runc lays it out."""
    from . import _cgroups
    ro = RDONLY | NOSUID | NODEV | NOEXEC
    kind = _cgroups.layout()
    if kind == "v2":
        return [op(_c.OP_MOUNT, src="cgroup2", dst=dst, fstype="cgroup2", flags=ro)]
    if kind != "v1":
        return []
    wanted = {_cgroups.CONTROLLERS[o] for o, _ in cfg.limits} | set(_cgroups.ALWAYS)
    steps = [op(_c.OP_MOUNT, src="tmpfs", dst=dst, fstype="tmpfs", flags=NOSUID | NODEV | NOEXEC,
                data="mode=755,size=4k")]
    with open("/proc/self/cgroup") as f:
        for line in f:
            names = line.split(":", 2)[1]
            if set(names.split(",")) & wanted:
                steps += [op(_c.OP_MKDIR, dst=f"{dst}/{names}", arg=0o755),
                          op(_c.OP_MOUNT, src="cgroup", dst=f"{dst}/{names}", fstype="cgroup",
                             flags=ro, data=names)]
    steps.append(op(_c.OP_MOUNT, dst=dst, flags=MS["remount"] | ro))
    return steps


def _user_mount_steps(cfg: Config) -> list[tuple]:
    """One step per mount, its target as written: the child resolves it inside
    NEWROOT, and makes what is missing there, as it mounts (MOUNT_IN_ROOT).
    Nothing of the image is looked at here: a plan serves every start with
    the same options, and the image may change between them."""
    steps = []
    for m in cfg.mounts:
        target = NEWROOT + m.target
        extra = (NOSUID if m.nosuid else 0) | (NOEXEC if m.noexec else 0) | \
            (RDONLY if m.readonly else 0)
        if m.kind == "tmpfs":
            size = m.size or cfg.storage_size      # RAM: never unbounded
            data = f"mode={m.mode:o},size={size},nr_inodes={_inodes(size)}"
            steps.append(op(_c.OP_MOUNT_IN_ROOT, dst=target, fstype="tmpfs",
                            flags=NOSUID | NODEV | extra, data=data))
            continue
        if m.kind == "mqueue":
            steps.append(op(_c.OP_MOUNT_IN_ROOT, dst=target, fstype="mqueue",
                            flags=NODEV | extra, data=""))
            continue
        assert m.source is not None
        source = os.path.realpath(m.source)     # OLDROOT + a symlink would leave OLDROOT
        if m.kind == "overlay":
            # its writable layer in the setup tmpfs, beside the root's
            layer = f"/layer{len(steps)}"
            data = f"lowerdir={OLDROOT}{source},upperdir={layer}/upper,workdir={layer}/work"
            if cfg.userns:
                data += ",userxattr"
            steps += [op(_c.OP_MKDIR, dst=f"{layer}/upper", arg=0o755),
                      op(_c.OP_MKDIR, dst=f"{layer}/work", arg=0o755),
                      op(_c.OP_MOUNT_IN_ROOT, dst=target, fstype="overlay",
                         flags=NOSUID | NODEV | extra, data=data)]
            continue
        # a directory or a file target, as the source is when the child binds it
        # nodev: a device is given with devices=, never through a bind
        steps.append(op(_c.OP_MOUNT_IN_ROOT, src=OLDROOT + source, dst=target,
                        flags=NODEV | extra))
    return steps


def net_beside(cfg: Config) -> bool:
    """Whether the container's network namespace is made beside the child
    (see start_container), not by its clone: a namespace owned by the
    caller's user namespace, as with CLONE_NEWNET from the caller."""
    # (not with a user-mode network, whose tool attaches to the child's; nor
    # with a PID namespace joined: the helper, made in it, would not see its
    # parent, and take it for gone)
    return _c.NET_BESIDE and "net" in cfg.namespaces and not cfg.userns \
        and cfg.network not in USERMODE and "pid" not in dict(cfg.joins)


@functools.lru_cache(maxsize=64)
def container_steps(cfg: Config, beside: bool = False) -> tuple[tuple, ...]:
    """Every step of creating a container for cfg, but the hostname. With
    beside (see net_beside), the child joins a network namespace made beside
    it instead of bringing up lo in its own."""
    # the caller writes ranges after clone; a single own id the child can
    # the caller writes ranges after clone, and a single id too where a
    # user-mode stack must enter the namespace as its root (_core._start);
    # else the child writes its single own id
    steps = _userns_steps(cfg) if cfg.userns and cfg.uid_map is None \
        and cfg.network not in USERMODE else []
    # namespaces joined by path, before /sys (the joined network's) is mounted
    # (a PID namespace is joined by the caller, before the clone: see
    # _core.pid_namespace_for_children)
    steps += [op(_c.OP_SETNS, src=path, flags=_c.NAMESPACE_FLAGS[name])
              for name, path in cfg.joins if name != "pid"]
    if "mount" in cfg.namespaces:
        steps += [
            op(_c.OP_MOUNT, dst="/", flags=REC | MS["private"]),
            # the setup tmpfs: the writable layer, the masks and the /dev
            # nodes (hence not nodev: nothing of it is visible but through
            # binds and the overlay, which have flags of their own)
            op(_c.OP_MOUNT, src="tmpfs", dst=BASE, fstype="tmpfs", flags=NOSUID,
               data="mode=755," + _tmpfs_cap(cfg.storage_size)),
            op(_c.OP_MKDIR, dst=BASE + NEWROOT, arg=0o755),
            op(_c.OP_MKDIR, dst=BASE + OLDROOT, arg=0o755),
            op(_c.OP_PIVOT_ROOT, dst=BASE, src=BASE + OLDROOT),
        ]
        steps += _root_steps(cfg)
        steps += _special_fs_steps(cfg, beside)
        steps += _user_mount_steps(cfg)
        steps += _hardening_steps(cfg)
        steps.append(op(_c.OP_PIVOT_ROOT, dst=NEWROOT))
    if beside and "mount" not in cfg.namespaces:
        steps.append(op(_c.OP_JOIN_NET))
    elif "net" in cfg.namespaces and not beside:
        steps.append(op(_c.OP_LO_UP))
    if cfg.personality is not None:
        steps.append(op(_c.OP_PERSONALITY, arg=cfg.personality))
    if "time" in cfg.namespaces:
        # clone cannot take CLONE_NEWTIME; the init enters it when it execs
        steps.append(op(_c.OP_UNSHARE, flags=_c.NAMESPACE_FLAGS["time"], data="time"))
        if cfg.time_offsets:    # before any process is in it: the init's exec enters it
            steps.append(op(_c.OP_WRITE, dst="/proc/self/timens_offsets", data="".join(
                f"{clock} {s} {ns}\n" for clock, s, ns in cfg.time_offsets)))
    return tuple(steps)


def clone_flags(cfg: Config, beside: bool = False) -> int:
    flags = 0
    for name in cfg.namespaces:
        if name != "time" and not (beside and name == "net"):
            flags |= _c.NAMESPACE_FLAGS[name]
    return flags


def join_flags(cfg: Config) -> int:
    """The namespaces a process started in a running container joins."""
    flags = 0
    for name in cfg.namespaces | {name for name, _ in cfg.joins}:
        flags |= _c.NAMESPACE_FLAGS[name]
    return flags

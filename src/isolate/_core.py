"""Starting a container from a Config: the steps around the C core that
Container, isolate.run, Pool and isolate-runc share, kept apart from the API
modules so that isolate-runc, which starts on every container's path, imports
only this."""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from typing import Any, Callable

from . import _isolate as _c
from . import _plan
from ._cgroups import Cgroups
from ._config import USERMODE, Config, write_id_maps

_devnull_fd = -1
_devnull_rdev = -1
_devnull_lock = threading.Lock()


def _devnull() -> int:
    """One /dev/null fd for the inits' stdio, opened once per process (and
    again where the process closed it: a daemon, a call's process)."""
    global _devnull_fd, _devnull_rdev
    with _devnull_lock:
        if _devnull_fd >= 0:
            try:
                st = os.fstat(_devnull_fd)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == _devnull_rdev:
                    return _devnull_fd
            except OSError:
                pass
        _devnull_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        _devnull_rdev = os.fstat(_devnull_fd).st_rdev
        return _devnull_fd


_TIOCSPTLCK = 0x40045431        # unlockpt
_TIOCGPTPEER = 0x5441           # open the slave of a master (Linux 4.13)


_DEVPTS_SUPER_MAGIC = 0x1cd1
_PTMX = os.makedev(5, 2)


def open_pty(init: int) -> tuple[int, int]:
    """(master, slave) of a new pseudo-terminal in the /dev/pts of the
    container whose init is `init`, close-on-exec.

    The container may have replaced /dev/pts or its ptmx with a symlink to
    a host path: /dev/pts/ptmx is resolved inside the container's root
    (RESOLVE_IN_ROOT), opened O_PATH first, and opened for real only if it
    is the ptmx of a devpts (no other file is ever opened for reading or
    writing: the open of a device may have effects of its own)."""
    import fcntl
    import struct
    root = os.open(f"/proc/{init}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        path = _c.openat2(root, "dev/pts/ptmx", os.O_PATH | os.O_CLOEXEC,
                                resolve=_c.RESOLVE_IN_ROOT | _c.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)
    try:
        st = os.fstat(path)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != _PTMX \
                or _c.fs_magic(path) != _DEVPTS_SUPER_MAGIC:
            raise OSError(errno.ENOTTY, "the container's /dev/pts/ptmx is not a devpts ptmx",
                          f"/proc/{init}/root/dev/pts/ptmx")
        master = os.open(f"/proc/self/fd/{path}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(path)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))       # unlockpt
        slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def _check_own_child(pid: int, init: int) -> None:
    """That pid, reported from inside the container, is a child of ours in a
    PID namespace of the init's (NSpid: the same depth, not ours): a report
    forged by the container (which may take fds with CAP_SYS_PTRACE) must
    not point the caller's signals and waits at a host process. Read from
    /proc/PID/status, which needs no ptrace access (the command may be
    non-dumpable yet)."""
    def nspid(p: int) -> list[str]:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return line.split()[1:]
        return []

    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
        ours = nspid(pid)
        same = len(ours) >= 2 and len(ours) == len(nspid(init))
    except OSError:
        same = False
    if not same:
        from .errors import ContainerError
        raise ContainerError(1, f"the container reported pid {pid} for a command it started, "
                             "which is no child of ours there: the report was tampered with",
                             None, step="exec")


def _set_groups(cfg: Config) -> bool:
    """setgroups is denied in a user namespace whose maps the child wrote."""
    return not cfg.userns or cfg.uid_map is not None


def _map_writer(cfg: Config) -> Callable[[int], None] | None:
    if cfg.uid_map is None:
        return None
    return functools.partial(write_id_maps, cfg)


@contextlib.contextmanager
def pid_namespace_for_children(cfg: Config) -> Iterator[None]:
    """A PID namespace the container joins by path (an OCI config's: the
    containers of a Kubernetes pod that shares its processes join its
    sandbox's): the calling thread's children are made in it, for the
    container's clone, then in its own again. (setns cannot move a process
    into a PID namespace, only its children: as runc's does, the container's
    first process is made in it.)"""
    path = dict(cfg.joins).get("pid")
    if path is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _c.set_namespace(fd, _c.NAMESPACE_FLAGS["pid"])
        except OSError as e:
            from .errors import ContainerError
            raise ContainerError(e.errno or errno.EINVAL, f"setns: {path}: {e.strerror}", path,
                                 step="setns") from None
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _c.set_namespace(own, _c.NAMESPACE_FLAGS["pid"])
    finally:
        os.close(own)


def _start(cfg: Config, container_id: str, spec: Any, run: int,
           cgroups: Cgroups | None = None) -> tuple[int, int, int, Any]:
    """Make the container's cgroups (unless given: the caller's, which stay
    the caller's to remove), then the container in them. On a network, what
    is returned for the cgroups is a network.Held: the cgroups (its
    .cgroups) and the container's lease, which its remove() releases too."""
    made = cgroups is None
    if made and cfg.limits:
        cgroups = Cgroups.make(dict(cfg.limits), container_id)
    cgroup_fd = -1
    lease: Any = None       # a network.Lease, or a _usermode.UserMode
    after_clone = _map_writer(cfg)
    try:
        if cfg.network in USERMODE:
            from ._usermode import UserMode
            lease = usermode = UserMode(cfg.network, cfg.ports)
            after_clone = functools.partial(_attach_usermode, cfg, usermode, after_clone)
        elif cfg.network not in ("none", "host"):
            from .network import Lease, attached_network
            lease = Lease(attached_network(cfg.network), cfg.hostname or container_id, cfg.ports,
                          spare=_plan.net_beside(cfg))
        if cgroups is not None:
            cgroup_fd = cgroups.open()          # v2: cloned straight into it
        pre, plan, post = _steps(cfg, container_id, cgroups, cgroup_fd < 0)
        for attempt in range(16):
            try:
                # on a network: its interface, and the namespace made ahead
                # for it (a spare) if there was one
                bridged = lease is not None and cfg.network not in USERMODE
                with pid_namespace_for_children(cfg):
                    pid, pidfd, ctl, _, held = _c.start_container(
                        plan, _clone_flags(cfg, cgroups), spec, run, after_clone, cgroup_fd,
                        pre, post, _plan.net_beside(cfg), lease.netif() if bridged else None,
                        lease.netns if bridged else -1, bridged)
                break
            except OSError as e:
                # its address was taken meanwhile by another process's container,
                # or the spare it joined had lost its veth (its network closed
                # by another): made anew
                if lease is None or cfg.network in USERMODE \
                        or getattr(e, "step", "") != "network interface" \
                        or (e.errno != errno.EEXIST and lease.netns < 0) or attempt == 15:
                    raise
                lease.pick()
        if lease is not None and cfg.network not in USERMODE:
            lease.started(held)
    except BaseException:
        if lease is not None:
            lease.release()
        if made and cgroups is not None:
            cgroups.remove()
        raise
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
    if lease is not None:
        from .network import Held
        return pid, pidfd, ctl, Held(cgroups if made else None, lease)
    return pid, pidfd, ctl, cgroups


def _attach_usermode(cfg: Config, usermode: Any, write_maps: Callable[[int], None] | None,
                     pid: int) -> None:
    """After clone, the child waiting: its id maps (a single own id is written
    here, not by the child, so that the stack enters the user namespace as its
    root), then its user-mode network stack, up before the child goes on."""
    if write_maps is not None:
        write_maps(pid)
    elif cfg.userns:
        uid, gid = cfg.host_ids
        for name, text in (("setgroups", "deny"), ("gid_map", f"0 {gid} 1\n"),
                           ("uid_map", f"0 {uid} 1\n")):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
    usermode.start(pid)


def _steps(cfg: Config, container_id: str, cgroups: Cgroups | None = None,
           join: bool = True) -> tuple[Any, Any, Any]:
    """(pre, plan, post): the container's plan, built once per Config, and
    the steps of this one container around it."""
    pre = None
    if cgroups is not None:
        # join the cgroups first (unless cloned into it), then (if asked) a
        # cgroup namespace, so that the container sees its own cgroup as the root
        first = tuple(_plan.op(_c.OP_WRITE, dst=p, data="0") for p in cgroups.procs()) \
            if join else ()
        if "cgroup" in cfg.namespaces:
            first += (_plan.op(_c.OP_UNSHARE, flags=_c.NAMESPACE_FLAGS["cgroup"], data="cgroup"),)
        pre = _c.Plan(first)
    post = None
    if "uts" in cfg.namespaces:
        post = _c.Plan((_plan.op(_c.OP_HOSTNAME, data=cfg.hostname or container_id),))
    return pre, _base_plan(cfg), post


@functools.lru_cache(maxsize=64)
def _base_plan(cfg: Config) -> Any:
    return _c.Plan(_plan.container_steps(cfg, _plan.net_beside(cfg)))


def _clone_flags(cfg: Config, cgroups: Cgroups | None) -> int:
    flags = _plan.clone_flags(cfg, _plan.net_beside(cfg))
    if cgroups is not None:
        flags &= ~_c.NAMESPACE_FLAGS["cgroup"]     # unshared after joining (see _steps)
    return flags


#: a waiting init's command message (see iso_command_msg): its header, and
#: its most, below ISO_COMMAND_MAX and a socket's send buffer
_HEADER = struct.Struct("II")
_MAX = 192 * 1024


def give(ctl: int, cwd: bytes, file: bytes, path: bytes, argv: list[bytes],
         envp: list[bytes], fds: list[int]) -> int:
    """Send a waiting init its command and fds (stdio, and oci's gate), and
    return the status of its answer; raise what it reports as failed."""
    strings = [cwd, file, path, *argv, *envp]
    message = _HEADER.pack(len(argv), len(envp)) + b"".join(s + b"\0" for s in strings)
    if len(message) >= _MAX:
        raise OSError(7, "Argument list too long: a pool's command, its arguments and "
                      f"environment take at most {_MAX // 1024} KiB")
    sock = socket.socket(fileno=ctl)
    try:
        socket.send_fds(sock, [message], fds)
    finally:
        sock.detach()
    data = os.read(ctl, _c.MSG_SIZE)
    if len(data) != _c.MSG_SIZE:
        from .errors import ContainerError
        raise ContainerError(0, "the container's init ended before starting the command",
                             None, step="init")
    kind, status, step, err, where = _c.parse_msg(data)
    if kind == _c.MSG_ERROR:
        from .errors import child_error
        raise child_error(step, err, where)
    return status

"""Containers and the processes that run in them.

`Container` owns a running container: its namespaces, its root and a small
init as PID 1. `Container.run`/`spawn` start commands inside it by joining its
namespaces (as `docker exec` does); `isolate.run` makes a container for one
command, the fastest path. Processes are `subprocess.Popen` objects in every
respect but how they start.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import select
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import IO, Any, Callable, TypeVar, Union

from . import _call
from . import _isolate as _c
from . import _plan
from ._cgroups import Cgroups
from ._core import _check_own_child, _devnull, _set_groups, _start, open_pty
from ._config import (DEFAULT_PATH, Config, check_cwd, check_ids, env_list, make_config,
                      parse_user)
from .mounts import Mount

__all__ = ["CompletedProcess", "Container", "Process", "Stats", "run"]

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Args = Union[StrOrBytesPath, Sequence[StrOrBytesPath]]
File = Union[None, int, IO[Any]]
T = TypeVar("T")

def _argv(args: Args, shell: bool) -> list[bytes]:
    if isinstance(args, (str, bytes, os.PathLike)):
        items = [args]
    else:
        items = list(args)
    if shell:
        items = ["/bin/sh", "-c", *items]
    if not items:
        raise ValueError("args is empty: give the command to run")
    argv = [os.fsencode(a) for a in items]
    if any(b"\0" in a for a in argv):      # C would cut it short; subprocess refuses too
        raise ValueError(f"embedded null byte in args: {items!r}")
    return argv


class _Launch:
    """What a Process needs to start: everything but the stdio Popen makes."""

    def __init__(self, cfg: Config, cwd: str | None, env: Mapping[str, str] | None,
                 user: int | str | None):
        self.cfg = cfg
        self.cwd = cwd
        self.env = env
        self.tty = False
        self.user = cfg.user
        if user is not None:
            self.user = parse_user(user, cfg.layers or cfg.rootfs)
            check_ids(self.user, cfg.userns, cfg.uid_map, cfg.gid_map)

    def command(self, argv: list[bytes], executable: StrOrBytesPath | None
                ) -> tuple[bytes, list[bytes], bytes, bytes]:
        """The file to exec, the environment, PATH and the directory."""
        cfg = self.cfg
        env = list(cfg.env) if self.env is None else self.env
        envp = env_list(env)
        path = (dict(env) if not isinstance(env, Mapping) else env).get("PATH", DEFAULT_PATH)
        cwd = cfg.cwd if self.cwd is None else os.fspath(self.cwd)
        check_cwd(cwd)
        file = argv[0] if executable is None else os.fsencode(executable)
        if b"\0" in file:
            raise ValueError(f"embedded null byte in executable: {executable!r}")
        return file, envp, os.fsencode(path), os.fsencode(cwd)

    def spec(self, argv: list[bytes], executable: StrOrBytesPath | None,
             stdio: tuple[int, int, int], pass_fds: Sequence[int]) -> Any:
        file, envp, path, cwd = self.command(argv, executable)
        u = self.user
        return _c.ExecSpec(file, argv, envp, path, cwd, stdio,
                           tuple(pass_fds), (u.uid, u.gid, u.groups), _set_groups(self.cfg),
                           _c.SESSION_TTY if self.tty else 1, 0o022, self.cfg.security())


class Process(subprocess.Popen):
    """A process running in a container: a `subprocess.Popen` in all but its start.

    Made by `Container.spawn` (and by `isolate.run`), never directly. For a
    process of `isolate.run`, `pid` is the container's init and a signal sent
    to it reaches the command; `kill()` ends the whole container.
    """

    def __init__(self, launch: Callable[..., int], args: Args, **kwargs: Any):
        self._launch = launch
        self._ctl = -1      # isolate.run: the container's control socket
        self._cgroups: Cgroups | None = None    # isolate.run: the container's cgroups
        self._oom_killed = False
        super().__init__(args, **kwargs)  # type: ignore[call-overload]

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
                       startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite,
                       errread, errwrite, *unused):
        try:
            argv = _argv(args, shell)
            self.pid = self._launch(self, argv, executable, (p2cread, c2pwrite, errwrite),
                                    pass_fds)
            self._child_created = True
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _handle_exitstatus(self, sts, *args, **kwargs):
        if self._ctl >= 0:
            sts = self._command_status(sts)
        if self._cgroups is not None:       # the container has ended: its cgroups go
            cgroups, self._cgroups = self._cgroups, None
            self._oom_killed = cgroups.oom_kills() > 0
            cgroups.remove()
        super()._handle_exitstatus(sts, *args, **kwargs)

    def _command_status(self, sts: int) -> int:
        """The command's wait status, as the init reported it before it ended.

        Called once the init is reaped: its end of the socket is closed, so
        the read returns at once, with the report or with nothing.
        """
        ctl, self._ctl = self._ctl, -1
        return _command_status(ctl, sts)

    def __del__(self, *args, **kwargs):
        if getattr(self, "_ctl", -1) >= 0:
            os.close(self._ctl)     # the container's init ends when this closes
            self._ctl = -1
        if getattr(self, "_cgroups", None) is not None:
            try:        # once the init is gone; else the next start's sweep takes them
                self._cgroups.remove(wait=0.5)
            except OSError:
                pass
        super().__del__(*args, **kwargs)

    def _kill_all(self) -> None:
        """Kill the process and its process group (what it started)."""
        if self.returncode is not None:
            return
        try:
            if self._ctl >= 0:
                os.kill(self.pid, signal.SIGKILL)   # the init: the whole container
            else:
                os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _command_status(ctl: int, sts: int) -> int:
    """The wait status the init of an ended isolate.run container reported
    for its command (sts, the init's own, if it was killed first); closes ctl."""
    try:
        data = os.read(ctl, _c.MSG_SIZE)
        if len(data) == _c.MSG_SIZE:
            kind, status, *_ = _c.parse_msg(data)
            if kind == _c.MSG_EXIT:
                return status
    except OSError:
        pass
    finally:
        os.close(ctl)
    return sts     # the init itself was killed: that is the command's fate too


def _popen_kwargs(input, capture_output, kwargs):
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = subprocess.PIPE
        kwargs["stderr"] = subprocess.PIPE
    return kwargs


def _complete(proc: Process, input, timeout, check) -> CompletedProcess:
    """subprocess.run's second half; a timeout kills what the command started."""
    with proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc._kill_all()
            proc.wait()
            raise
        except BaseException:
            proc._kill_all()
            raise
        retcode = proc.poll()
        assert retcode is not None
        if check and retcode:
            raise subprocess.CalledProcessError(retcode, proc.args, output=stdout, stderr=stderr)
    result = CompletedProcess(proc.args, retcode, stdout, stderr)
    result.oom_killed = proc._oom_killed
    return result


class Container:
    """A Linux container: namespaces, a root filesystem and an init as PID 1.

    Keyword options (all validated here, before anything is created):

    rootfs      directory to use as /, entered with pivot_root; writes go to a
                throw-away overlay unless readonly=True. None: the host's root,
                read-only, with fresh /proc, /dev, /tmp and /run.
    image       an image of the store instead (a reference such as "busybox",
                or an isolate.Image; see isolate.load): its layers under the
                container's own, and its Env (merged under env), WorkingDir and
                User where env, cwd and user are not given
    hostname    the container's hostname (default: its id)
    network     "none" (own network namespace, lo up), "host", "bridge" (the
                default network, made on first use), or an isolate.Network (or
                its name): an address on its bridge as eth0, a default route
                out, and the hostnames of its containers in /etc/hosts
    ports       published ports of a container on a network: {8080: 80}
                (host port: container port; a key may be "8080/udp" or
                "127.0.0.1:8080"), or ["127.0.0.1:8080:80/tcp", ...] as docker -p
    mounts      Mount.bind(...) and Mount.tmpfs(...) entries
    env         environment of commands (default PATH and HOME only)
    cwd         working directory of commands (default /)
    user        "uid:gid", uid or a name from the image's /etc/passwd
    readonly    make rootfs read-only instead of copy-on-write
    namespaces  the namespaces to create; default mount, pid, uts, ipc, net,
                cgroup (plus user when the caller is not root); "time" on request
    cap_add, cap_drop  change Docker's default 14 capabilities (names as in
                capabilities(7), with or without CAP_; cap_drop=["ALL"])
    privileged  the caller's capabilities; no masked paths, no_new_privs or seccomp
    rlimits     {"nofile": (soft, hard), ...}, None or -1 for unlimited; nofile
                is 1024:1024 (runc's default) unless named here
    seccomp     "default" (Docker's profile in effect: keyctl, bpf, io_uring,
                mount, unshare, namespace clone flags... fail with EPERM), None,
                or an OCI/Docker JSON profile (a dict or a file's path)
    userns      a user namespace: the container's root is an unprivileged
                host id (the caller's /etc/subuid range, else its own id);
                automatic for a caller that is not root
    uid_map, gid_map  [(inside, outside, count), ...]: that namespace's ranges
                (root writes them; another user through newuidmap/newgidmap)
    memory, pids, cpus  limits, enforced by cgroups (v1 or v2): bytes or
                "256M", a number of processes, a fraction of CPUs like 0.5
    memory_swap  memory and swap together (at least memory)
    cpu_weight  share of CPU under contention, 1 to 10000 (default 100)
    cpuset, cpuset_mems  the CPUs and memory nodes it may use, like "0-1,3"
    io_weight   share of block I/O under contention, 1 to 10000 (default 100;
                needs an I/O scheduler that honours weights, like BFQ)
    io_max      {"/dev/sda": {"rbps": "10M", "wbps": ..., "riops": 100, "wiops": ...}}:
                bandwidth and I/O operations per second, per device (v1 throttles
                direct I/O only)
    storage_size  the most the writable layer holds (and /tmp and /run, each,
                on the host's root): bytes or "256M", default 1G. They are
                tmpfs, host RAM; Mount.tmpfs without a size gets the same cap
    devices     host device nodes to give, as `docker run --device`:
                ["/dev/fuse", "/dev/sdb:/dev/xvdb"]. No other device can be
                opened: every mount but the default /dev nodes is nodev
    trusted     what call() and submit() return is unpickled as is. By default
                only data comes back (builtins, collections, datetime, Decimal,
                Fraction, UUID, paths; exceptions rebuilt without their class's
                code) and anything else raises SerializationError. WARNING: with
                trusted=True the function can run any code in the caller (a
                pickle runs what it names): only for functions you trust

    Every process gets no_new_privs, a new session, only stdio and pass_fds,
    and sees /proc/kcore, /proc/keys and their kind masked and /proc/sys read-only.

    Entering (or start()) creates it; leaving (or close()) kills every process
    in it and removes everything it created.
    """

    def __init__(
        self,
        rootfs: str | os.PathLike[str] | None = None,
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
        storage_size: int | str = "1G",
        devices: Iterable[str] = (),
        trusted: bool = False,
        image: Any = None,
        ports: Any = None,
    ) -> None:
        self._state = "new"
        self._ended = threading.Event()     # set once close() has done it all
        self._trusted = bool(trusted)      # call()/submit() results: see the docstring
        self._cfg = make_config(rootfs, hostname=hostname, network=network, mounts=mounts,
                                env=env, cwd=cwd, user=user, readonly=readonly,
                                namespaces=namespaces, cap_add=cap_add, cap_drop=cap_drop,
                                privileged=privileged, rlimits=rlimits, seccomp=seccomp,
                                uid_map=uid_map, gid_map=gid_map, userns=userns,
                                memory=memory, memory_swap=memory_swap, pids=pids, cpus=cpus,
                                cpu_weight=cpu_weight, cpuset=cpuset, cpuset_mems=cpuset_mems,
                                io_weight=io_weight, io_max=io_max,
                                storage_size=storage_size, devices=devices, image=image,
                                ports=ports)
        self.id: str = os.urandom(6).hex()
        self.pid: int | None = None
        self._pidfd = -1
        self._ctl = -1
        self._procs: list[Process] = []
        self._calls: set[int] = set()     # pids of call() processes in flight
        self._restrict: Any = None         # what call() processes get; made once
        self._cgroups: Cgroups | None = None
        self._lease: Any = None            # on a network: its network.Lease
        self._cg_join: Any = None          # the steps that join them, for exec_in
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Container:
        """Create the container. Called by `with`; a container starts once."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"container {self.id} is {self._state}; it starts only once")
            cfg = self._cfg
            init = _c.ExecSpec(b"", [], [], None, b"/", (_devnull(),) * 3, (), (0, 0, ()),
                               _set_groups(cfg), True, 0o022, cfg.security())
            pid, pidfd, ctl, cgroups = _start(cfg, self.id, init, False)
            self.pid, self._pidfd, self._ctl = pid, pidfd, ctl
            self._lease = getattr(cgroups, "lease", None)
            if self._lease is not None:
                cgroups = cgroups.cgroups
            self._cgroups = cgroups
            if cgroups is not None:
                self._cg_join = _c.Plan([_plan.op(_c.OP_WRITE, dst=p, data="0")
                                         for p in cgroups.procs()])
            self._join = _plan.join_flags(cfg)
            self._state = "running"
        return self

    def __enter__(self) -> Container:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process in the container and remove it. Idempotent; a
        close from another thread returns once the first one is done."""
        with self._lock:
            if self._state != "running":
                if self._state == "new":
                    self._ended.set()
                self._state = "closed"
                under_way = True
            else:
                under_way = False
                try:
                    self._close_locked()
                except BaseException:
                    self._ended.set()
                    raise
        if under_way:
            self._ended.wait()
            return
        try:
            self._close_unlocked()
        finally:
            self._ended.set()

    def _close_locked(self) -> None:
        """close, its part under the lock: no command starts any more, and
        every process is killed."""
        self._state = "closed"
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # The init's end waits for every process of its PID namespace to be
        # reaped, ours (children of this process) too: reap them first.
        for p in self._procs:
            if "pid" not in self._cfg.namespaces:
                p._kill_all()
            p.wait()
        if "pid" not in self._cfg.namespaces and self._cgroups is not None:
            self._cgroups.kill_all()            # what escaped the process groups too
        if "pid" not in self._cfg.namespaces:
            for pid in list(self._calls):     # their threads reap them
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._procs.clear()

    def _close_unlocked(self) -> None:
        """close, its part without the lock: a command another thread was
        starting meanwhile is a child of ours in the namespace, which its
        thread reaps once it has the lock again (or _wait_init does)."""
        late = self._wait_init()
        os.close(self._pidfd)
        os.close(self._ctl)
        self._pidfd = self._ctl = -1
        try:
            if self._cgroups is not None:
                self._cgroups.remove()
        finally:
            if self._lease is not None:
                self._lease.release()
        if late is not None:
            raise late

    def _wait_init(self) -> BaseException | None:
        """Reap the killed init: its end waits for every process of its PID
        namespace to be reaped, those that starts under way add to _procs
        meanwhile too. To the end, even if interrupted: the interruption is
        returned, for close to raise once it has cleaned up."""
        assert self.pid is not None
        late = None
        ended = select.poll()
        ended.register(self._pidfd, select.POLLIN)
        while True:
            try:
                if ended.poll(10):
                    break
                with self._lock:
                    procs = list(self._procs)
                for p in procs:
                    p.poll()
            except BaseException as e:      # KeyboardInterrupt, or a signal handler's
                late = late or e
        try:
            _, again = _reap_killed(self.pid)
            late = late or again
        except ChildProcessError:
            pass
        with self._lock:
            self._procs.clear()
        return late

    def __del__(self) -> None:
        if getattr(self, "_state", None) == "running":
            warnings.warn(f"unclosed container {self!r}", ResourceWarning, source=self)
            self.close()

    # -- resources ---------------------------------------------------------

    def _cg(self) -> Cgroups:
        if self._state != "running":
            raise RuntimeError(f"container {self.id} is {self._state}")
        if self._cgroups is None:
            raise RuntimeError(f"container {self.id} has no cgroups: give it a limit "
                               "(memory=, pids=, cpus=) when creating it")
        return self._cgroups

    def stats(self) -> Stats:
        """Resource use now: memory_current, memory_peak, memory_limit,
        oom_kills, pids_current, pids_limit, cpu_usage_ns (None: not limited)."""
        return Stats(**self._cg().stats())

    def update(self, *, memory: int | str | None = None, pids: int | None = None,
               cpus: float | None = None, cpu_weight: int | None = None,
               cpuset: str | None = None, cpuset_mems: str | None = None,
               io_weight: int | None = None,
               io_max: Mapping[str, Mapping[str, int | str]] | None = None) -> None:
        """Change limits while running; an invalid value is refused and the
        old one stays."""
        from ._config import _limits
        self._cg().update(dict(_limits(memory, pids, cpus, None, cpu_weight, cpuset,
                                       cpuset_mems, io_weight, io_max)))

    def commit(self, ref: str | None = None, *, message: str = "", author: str = "") -> Any:
        """A new image of the store (an isolate.Image, named ref if given): the
        container's image with one more layer holding what the container
        changed, as `docker commit` makes it (the container is paused
        meanwhile where it has cgroups). Mounts (volumes, /proc, /dev) are
        left out; a removed file becomes a whiteout."""
        from ._commit import commit
        return commit(self, ref, message=message, author=author)

    def pause(self) -> None:
        """Freeze every process in the container."""
        self._cg().freeze(True)

    def resume(self) -> None:
        """Thaw what pause() froze."""
        self._cg().freeze(False)

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def ip(self) -> str | None:
        """Its IPv4 address on its network (None: not on one, or not started)."""
        lease = self._lease
        return str(lease.address) if lease is not None and lease.address is not None else None

    @property
    def ip6(self) -> str | None:
        """Its IPv6 address on a network made with ipv6=True, else None."""
        lease = self._lease
        return str(lease.address6) if lease is not None and lease.address6 is not None else None

    def __repr__(self) -> str:
        parts = [f"<Container {self.id} {self._state}"]
        if self._state == "running":
            parts.append(f"pid={self.pid}")
        parts.append(f"rootfs={self._cfg.rootfs or '<host, read-only>'}")
        return " ".join(parts) + ">"

    # -- processes --------------------------------------------------------

    def spawn(
        self,
        args: Args,
        *,
        stdin: File = None,
        stdout: File = None,
        stderr: File = None,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        bufsize: int = -1,
        executable: StrOrBytesPath | None = None,
        shell: bool = False,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        user: int | str | None = None,
        pass_fds: Sequence[int] = (),
        tty: bool = False,
    ) -> Process:
        """Start a command in the container; returns a Popen-like `Process`.

        The arguments mean what they mean to `subprocess.Popen`; cwd, env and
        user override the container's defaults (env replaces, as in Popen).
        With tty, stdin is a terminal (see open_pty) that becomes the
        command's controlling terminal: ^C, ^Z and job control work.
        """
        launch = _Launch(self._cfg, cwd, env, user)
        launch.tty = bool(tty)

        def start(proc: Process, argv, exe, stdio, fds) -> int:
            with self._lock:
                if self._state != "running":
                    raise RuntimeError(f"container {self.id} is {self._state}")
                pid, status_fd = _c.exec_in(self._pidfd, self._join,
                                            launch.spec(argv, exe, stdio, fds), self._cg_join)
                assert self.pid is not None
                init = self.pid
            # a process in the container can stop the command before its exec:
            # wait for that without the lock, so that close() still ends it all
            try:
                _check_own_child(pid, init)
            except BaseException:
                os.close(status_fd)
                raise
            _c.exec_finish(status_fd, pid)
            with self._lock:
                self._procs.append(proc)
            return pid

        return Process(start, args, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
                       encoding=encoding, errors=errors, universal_newlines=universal_newlines,
                       bufsize=bufsize, executable=executable, shell=shell, pass_fds=pass_fds)

    def open_pty(self) -> tuple[int, int]:
        """A pseudo-terminal of the container's own /dev/pts: (master, slave)
        fds, close-on-exec. Give the slave to spawn(..., tty=True) as stdio
        (inside, `tty` names /dev/pts/N); the caller reads and writes the master."""
        if self._state != "running":
            raise RuntimeError(f"container {self.id} is {self._state}")
        assert self.pid is not None
        return open_pty(self.pid)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a new process inside the container; its result.

        The process is a fork of the caller that joined the container, so
        closures and lambdas work and arguments are not copied. An exception
        raised inside is raised here, its remote traceback as __cause__; a
        process that dies raises `isolate.ContainerDied`. Every keyword goes
        to fn. What fn started is killed when it returns.
        """
        return _call.call_in(self, fn, args, kwargs)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """`call` in the background: a `concurrent.futures.Future`, whose
        `cancel()` kills the call's process."""
        return _call.submit_in(self, fn, args, kwargs)

    def run(
        self,
        args: Args,
        *,
        input: str | bytes | None = None,
        capture_output: bool = False,
        timeout: float | None = None,
        check: bool = False,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess:
        """Run a command in the container and wait for it, as `subprocess.run`.

        On timeout the command and its process group are killed and
        `subprocess.TimeoutExpired` is raised.
        """
        ooms = self._cgroups.oom_kills() if self._cgroups is not None else 0
        proc = self.spawn(args, **_popen_kwargs(input, capture_output, kwargs))
        result = _complete(proc, input, timeout, check)
        if self._cgroups is not None:
            result.oom_killed = self._cgroups.oom_kills() > ooms
        return result


@dataclasses.dataclass(frozen=True)
class Stats:
    """A container's resource use, from its cgroups."""

    memory_current: int | None
    memory_peak: int | None
    memory_limit: int | None
    oom_kills: int | None
    pids_current: int | None
    pids_limit: int | None
    cpu_usage_ns: int | None


class CompletedProcess(subprocess.CompletedProcess):
    """subprocess.CompletedProcess, and whether the container's OOM killer
    ended the command (with a memory limit)."""

    oom_killed: bool = False


def run(
    args: Args | None,
    *,
    input: str | bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    stdin: File = None,
    stdout: File = None,
    stderr: File = None,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
    executable: StrOrBytesPath | None = None,
    shell: bool = False,
    pass_fds: Sequence[int] = (),
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    user: int | str | None = None,
    **container_options: Any,
) -> CompletedProcess:
    """Run one command in a fresh container and remove the container.

    Takes `subprocess.run`'s arguments and `Container`'s options. The
    container ends when the command ends; a timeout kills it all. With
    image=, as `docker run IMAGE [ARGS]`: the image's Entrypoint, then args
    (None: the image's Cmd).
    """
    cfg = make_config(cwd=cwd, env=env, user=user, **container_options)
    if cfg.image is not None and not shell:
        args = cfg.image.command(None if args is None else
                                 [args] if isinstance(args, (str, bytes, os.PathLike)) else args)
    elif args is None:
        raise ValueError("args is None: give the command to run (or an image with a Cmd)")
    container_id = os.urandom(6).hex()
    if (input is None and not capture_output and stdin is None and stdout is None
            and stderr is None and not pass_fds):
        exe = None if executable is None else os.fsencode(executable)
        spec = _inherited_spec(cfg, tuple(_argv(args, shell)), exe)
        return _run_inherited(cfg, container_id, spec, args, timeout, check)
    launch = _Launch(cfg, None, None, None)

    def start(proc: Process, argv, exe, stdio, fds) -> int:
        pid, pidfd, ctl, cgroups = _start(cfg, container_id, launch.spec(argv, exe, stdio, fds),
                                          True)
        os.close(pidfd)
        proc._ctl = ctl
        proc._cgroups = cgroups
        return pid

    kwargs = _popen_kwargs(input, capture_output, dict(stdin=stdin, stdout=stdout, stderr=stderr))
    proc = Process(start, args, text=text, encoding=encoding, errors=errors,
                   universal_newlines=universal_newlines, executable=executable, shell=shell,
                   pass_fds=pass_fds, **kwargs)
    return _complete(proc, input, timeout, check)


@functools.lru_cache(maxsize=64)
def _inherited_spec(cfg: Config, argv: tuple[bytes, ...], executable: bytes | None) -> Any:
    """The ExecSpec of a command that keeps the caller's stdio, made once for
    runs of the same command (C only reads it, from any thread)."""
    return _Launch(cfg, None, None, None).spec(list(argv), executable, (-1, -1, -1), ())


_POLL_MAX_S = (2 ** 31 - 1) / 1000      # poll's longest timeout; longer is forever here


def _reap_killed(pid: int) -> tuple[int, BaseException | None]:
    """Reap a process just sent SIGKILL (its end is near): to the end, even
    if interrupted (a second Ctrl-C), else it would stay a zombie. Returns
    its wait status and the interruption, for the caller to raise once it
    has cleaned up."""
    late = None
    while True:
        try:
            return os.waitpid(pid, 0)[1], late
        except OSError:
            raise
        except BaseException as e:      # KeyboardInterrupt, or a signal handler's
            late = e


def _run_inherited(cfg: Config, container_id: str, spec: Any, args: Args,
                   timeout: float | None, check: bool) -> CompletedProcess:
    """isolate.run for a command that keeps the caller's stdio: with no pipe
    to serve, no Popen; the init's pidfd says when the container has ended."""
    pid, pidfd, ctl, cgroups = _start(cfg, container_id, spec, True)
    sts = None
    try:
        if timeout is not None and timeout < _POLL_MAX_S:
            poll = select.poll()
            poll.register(pidfd, select.POLLIN)
            if not poll.poll(max(timeout, 0) * 1000):
                raise subprocess.TimeoutExpired(args, timeout)
        sts = os.waitpid(pid, 0)[1]
    finally:
        late = None
        if sts is None:     # a timeout, or the caller interrupted: the container goes
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            sts, late = _reap_killed(pid)
        os.close(pidfd)
        retcode = os.waitstatus_to_exitcode(_command_status(ctl, sts))
        oom_killed = False
        if cgroups is not None:
            oom_killed = cgroups.oom_kills() > 0
            cgroups.remove()
        if late is not None:
            raise late
    if check and retcode:
        raise subprocess.CalledProcessError(retcode, args)
    result = CompletedProcess(args, retcode)
    result.oom_killed = oom_killed
    return result

"""isolate-runc: isolate as an OCI runtime, with runc's command line.

containerd's shim, Docker (through containerd), podman (through conmon) and
the OCI validation tools drive a runtime binary with runc's commands; this is
that binary, making its containers with isolate's core:

    isolate-runc [--root DIR] [--log FILE] [--log-format text|json] COMMAND ...

create makes the container from a bundle's config.json (see _oci.py) with
its process parked before exec, as runc's exec.fifo parks it: the init waits
for a word on a FIFO in the container's state directory, which `start`
writes; the process then replaces the init (PID 1 of the container). No
daemon of isolate's stays: `create` exits, and the init is the child of
whoever reaps its orphans (the shim, conmon), as runc's is.

State: a directory per container under --root (default /run/isolate-runc;
$XDG_RUNTIME_DIR/isolate-runc for another user) with state.json, written
atomically, and the FIFO while the container is created. Commands on one id
take a lock on its directory. A pid is trusted only while its start time is
the one recorded: a stale pid is never signalled.

Errors: exit code 1 and one line on stderr, and with --log one more in the
log (JSON lines with --log-format json, as runc writes them), whose text
engines read back ("container does not exist" and others are runc's words).
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
import time

from ._fastjson import dumps, loads
from ._fs import start_time

TYPE_CHECKING = False       # typing costs milliseconds, on every command
if TYPE_CHECKING:
    import signal
    from typing import Any, NoReturn
else:
    import _signal as signal    # signal's own module imports enum: milliseconds again

VERSION = "0.1.0"
SPEC_VERSION = "1.0.2"
_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def _valid_id(cid: str) -> bool:
    """A container id as runc takes it: letters, digits, _ + - and ., not . or .."""
    return bool(cid) and _ID.issuperset(cid) and cid not in (".", "..")


class Fatal(Exception):
    """An error that ends the command: exit code 1 and its message."""


class Options:
    """runc's global options."""

    root = ""
    log = ""
    log_format = "text"
    debug = False
    systemd_cgroup = False


OPTS = Options()


def _default_root() -> str:
    if os.geteuid() == 0:
        return "/run/isolate-runc"
    run = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/isolate-runc-{os.geteuid()}"
    return os.path.join(run, "isolate-runc")


def _log(level: str, message: str) -> None:
    if not OPTS.log:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    if OPTS.log_format == "json":
        line = dumps({"level": level, "msg": message, "time": now}) + "\n"
    else:
        line = f'time="{now}" level={level} msg="{message}"\n'
    try:
        fd = os.open(OPTS.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _warn(message: str) -> None:
    _log("warning", message)
    print(f"isolate-runc: warning: {message}", file=sys.stderr)


# -- arguments -------------------------------------------------------------

def _parse(argv: list[str], flags: dict[str, str], name: str) -> tuple[dict[str, Any], list[str]]:
    """Go-style flags (-f, --f, --f=v, --f v) for a command, then its
    positional arguments. flags: name -> "bool", "str", "int" or "list"."""
    values: dict[str, Any] = {k: ([] if t == "list" else None) for k, t in flags.items()}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i + 1:]
            break
        if not a.startswith("-") or a == "-" or rest:
            rest.append(a)
            i += 1
            continue
        key, eq, value = a.lstrip("-").partition("=")
        kind = flags.get(key)
        if kind is None:
            raise Fatal(f"{name}: flag provided but not defined: -{key}")
        if kind == "bool":
            values[key] = value.lower() not in ("false", "0") if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise Fatal(f"{name}: flag needs an argument: -{key}")
                value = argv[i]
            if kind == "int":
                try:
                    values[key] = int(value)
                except ValueError:
                    raise Fatal(f"{name}: invalid value {value!r} for flag -{key}") from None
            elif kind == "list":
                values[key].append(value)
            else:
                values[key] = value
        i += 1
    return values, rest


def _one_id(rest: list[str], name: str, more: bool = False) -> str:
    if not rest:
        raise Fatal(f"{name}: requires a container id")
    if len(rest) > 1 and not more:
        raise Fatal(f"{name}: takes one container id, got {len(rest)} arguments")
    cid = rest[0]
    if not _valid_id(cid):
        raise Fatal(f"invalid id format: {cid}")
    return cid


# -- state -------------------------------------------------------------------

def _dir(cid: str) -> str:
    return os.path.join(OPTS.root, cid)


class Locked:
    """The state directory of one container, locked (flock) for a command."""

    def __init__(self, cid: str, create: bool = False):
        self.cid = cid
        self.path = _dir(cid)
        os.makedirs(OPTS.root, mode=0o700, exist_ok=True)
        if create:
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                raise Fatal(f"container with id exists: {cid}") from None
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Fatal("container does not exist") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:                    # deleted while we waited (and perhaps made again)
            same = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(self.fd)
            raise Fatal("container does not exist")

    def state(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.path, "state.json")) as f:
                return loads(f.read())
        except FileNotFoundError:
            raise Fatal("container does not exist") from None
        except (OSError, ValueError) as e:
            raise Fatal(f"container {self.cid}: its state is unreadable: {e}") from None

    def save(self, state: dict[str, Any]) -> None:
        _write_atomic(os.path.join(self.path, "state.json"), dumps(state).encode(), 0o600)

    def close(self) -> None:
        os.close(self.fd)


def _write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _alive(state: dict[str, Any]) -> bool:
    pid = state.get("pid") or 0
    return pid > 0 and start_time(pid) == state.get("start_time")


def _pidfd(state: dict[str, Any]) -> int | None:
    """A pidfd of the container's init, or None when it has ended: opened,
    then checked against the recorded start time (no pid reuse)."""
    try:
        fd = os.pidfd_open(state["pid"])
    except (ProcessLookupError, OSError):
        return None
    if not _alive(state):
        os.close(fd)
        return None
    return fd


def _cgroups(state: dict[str, Any]) -> Any:
    from ._cgroups import Cgroups
    cg = state.get("cgroups")
    if not cg:
        return None
    return Cgroups.attach(cg["version"], cg["dirs"], cg.get("limits") or {})


def _status(lock: Locked, state: dict[str, Any]) -> str:
    if not _alive(state):
        return "stopped"
    if os.path.exists(os.path.join(lock.path, "exec.fifo")):
        return "created"
    cg = state.get("cgroups") or {}
    dirs = cg.get("dirs") or {}
    freezer = dirs.get("freezer")
    if freezer is not None:
        try:
            with open(f"{freezer}/freezer.state") as f:
                if f.read().strip() in ("FROZEN", "FREEZING"):
                    return "paused"
        except OSError:
            pass
    elif "" in dirs:
        try:
            with open(f"{dirs['']}/cgroup.freeze") as f:
                if f.read().strip() == "1":
                    return "paused"
        except OSError:
            pass
    return "running"


def _oci_state(lock: Locked, state: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    status = status or _status(lock, state)
    return {"ociVersion": SPEC_VERSION, "id": state["id"], "status": status,
            "pid": state["pid"] if status != "stopped" else 0, "bundle": state["bundle"],
            "rootfs": state.get("rootfs", ""), "created": state.get("created", ""),
            "owner": "", "annotations": state.get("annotations") or {}}


# -- hooks -------------------------------------------------------------------

def _run_hooks(name: str, hooks: list[dict[str, Any]], oci_state: dict[str, Any]) -> None:
    """Each hook with the state on stdin, in order; a failure raises Fatal."""
    import subprocess
    data = dumps(oci_state).encode()
    for h in hooks:
        args = h.get("args") or [h["path"]]
        env = dict(e.split("=", 1) for e in (h.get("env") or []) if "=" in e)
        try:
            r = subprocess.run(args, executable=h["path"], input=data, env=env,
                               capture_output=True, timeout=h.get("timeout"))
        except subprocess.TimeoutExpired:
            raise Fatal(f"{name} hook {h['path']}: timed out after {h.get('timeout')} s") \
                from None
        except OSError as e:
            raise Fatal(f"{name} hook {h['path']}: {e.strerror}") from None
        if r.returncode != 0:
            detail = (r.stderr or r.stdout).decode(errors="replace").strip()
            raise Fatal(f"{name} hook {h['path']}: exit status {r.returncode}"
                        + (f": {detail}" if detail else ""))


# -- create, start, run --------------------------------------------------------

def _create(cid: str, bundle: str, pid_file: str | None, console: str | None,
            detach_stdio: bool = True, preserve: int = 0
            ) -> tuple[Locked, dict[str, Any], int, int]:
    """Make the container, its process parked; returns the locked state
    directory, the state, the init's pid (a child of this process), and
    the terminal's master for `run` in the foreground without a console
    socket (else -1), which `run` serves."""
    from . import _isolate as _c
    from . import _oci
    from ._core import _devnull, _set_groups, _start, give, open_pty
    from ._config import env_list, DEFAULT_PATH

    if console is not None:
        import stat as st
        try:
            if not st.S_ISSOCK(os.stat(console).st_mode):
                raise Fatal(f"console socket {console}: not a socket")
        except OSError as e:
            raise Fatal(f"console socket {console}: {e.strerror}") from None
    try:
        b = _oci.load(bundle)
    except _oci.SpecError as e:
        raise Fatal(str(e)) from None
    for w in b.warnings:
        _warn(w)
    if b.terminal and console is None and detach_stdio:
        raise Fatal("cannot allocate tty if runc will detach without setting console socket")
    if not b.terminal and console is not None:
        raise Fatal("cannot use console socket if runc will not detach or allocate tty")
    if OPTS.systemd_cgroup:
        raise Fatal("--systemd-cgroup: isolate-runc manages cgroups itself (cgroupfs); "
                    "configure the engine with SystemdCgroup = false")
    cfg = b.config
    lock = Locked(cid, create=True)
    cgroups = pid = None
    pidfd = ctl = gate = kept = -1
    fds: list[int] = []
    state: dict[str, Any] = {
        "id": cid, "pid": 0, "start_time": None, "bundle": b.path, "rootfs": cfg.rootfs or "",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "annotations": b.spec.get("annotations") or {},
        "hooks": {k: v for k, v in b.hooks.items() if k in ("poststart", "poststop")},
        "cgroups": None}
    try:
        # what exec reads: the config the container is made from, not the
        # bundle's file, which the container itself may write (a root in it)
        _write_atomic(os.path.join(lock.path, "config.json"), dumps(b.spec).encode(), 0o600)
        # from here on, what a create killed midway leaves, delete --force removes
        lock.save(state)
        from ._cgroups import Cgroups
        try:
            # without a cgroupsPath, /ID, as runc (cgroupfs): nothing above it to leave
            cgroups = Cgroups.at(dict(cfg.limits), b.cgroups_path or f"/{cid}")
        except OSError as e:
            # rootless, as runc: without limits, cgroups are optional
            if os.geteuid() == 0 or cfg.limits or e.errno not in (
                    errno.EACCES, errno.EPERM, errno.EROFS):
                raise Fatal(str(e)) from None
            _warn(f"no cgroup for {cid} ({e}): pause, ps and stats will not work")
        if cgroups is not None:
            state["cgroups"] = {"version": cgroups.version, "dirs": cgroups.dirs,
                                "limits": dict(cfg.limits)}
            lock.save(state)
        if b.cgroup_binds and cgroups is not None:
            import dataclasses
            cfg = dataclasses.replace(cfg, mounts=cfg.mounts + _oci.cgroup_mounts(
                cgroups.version, cgroups.dirs))
        fifo = os.path.join(lock.path, "exec.fifo")
        os.mkfifo(fifo, 0o600)
        gate = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        null = _devnull()
        u = cfg.user
        spec = _c.ExecSpec(b"", [b""], [], None, b"/", (null, null, null), _preserved(preserve),
                           (u.uid, u.gid, u.groups), _set_groups(cfg),
                           _c.SESSION_TTY if b.terminal else 1, b.umask, cfg.security())
        try:
            pid, pidfd, ctl, _ = _start(cfg, cid, spec, _c.RUN_GATED, cgroups)
        except OSError as e:
            raise Fatal(f"create {cid}: {e}") from None
        state.update(pid=pid, start_time=start_time(pid))
        lock.save(state)
        if b.oom_score_adj is not None:
            with open(f"/proc/{pid}/oom_score_adj", "w") as f:
                f.write(str(b.oom_score_adj))
        if b.terminal:
            master, slave = open_pty(pid)
            fds = [slave, slave, slave]
            try:
                size = (b.spec.get("process") or {}).get("consoleSize")
                if isinstance(size, dict):
                    import struct
                    import termios
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack(
                        "HHHH", int(size.get("height", 0)), int(size.get("width", 0)), 0, 0))
                if console is not None:
                    _send_console(console, master)
                else:
                    kept, master = master, -1
            finally:
                if master >= 0:
                    os.close(master)
        else:
            fds = [_own_stdio(n, null) for n in range(3)]
        env = list(b.env)
        path = dict(env).get("PATH", DEFAULT_PATH)
        try:
            give(ctl, os.fsencode(b.cwd), os.fsencode(b.args[0]), os.fsencode(path),
                 [os.fsencode(a) for a in b.args], env_list(env), [*fds, gate])
        except OSError as e:
            from .errors import ContainerError
            if e.errno == errno.ENOENT and not isinstance(e, ContainerError):
                raise Fatal(f'exec: "{b.args[0]}": executable file not found in $PATH') \
                    from None
            raise Fatal(f"create {cid}: {e}") from None
        hooks_state = _oci_state(lock, state, "created")
        for name in ("prestart", "createRuntime"):
            if b.hooks.get(name):
                _run_hooks(name, b.hooks[name], hooks_state)
        if pid_file:
            _write_atomic(os.path.abspath(pid_file), str(pid).encode())
        return lock, state, pid, kept
    except BaseException:
        if kept >= 0:
            os.close(kept)
        if pidfd >= 0:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pid is not None:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if cgroups is not None:
            try:
                cgroups.remove()
            except OSError:
                pass
        _remove_dir(lock.path)
        lock.close()
        raise
    finally:
        for fd in {*fds, gate, ctl, pidfd}:
            if fd > 2:
                os.close(fd)


def _preserved(n: int | None) -> tuple[int, ...]:
    """--preserve-fds N: this process's fds 3 to 3+N-1, which the container's
    process gets as they are (socket activation's LISTEN_FDS)."""
    if not n:
        return ()
    if n < 0:
        raise Fatal(f"--preserve-fds {n}: a count of fds")
    fds = tuple(range(3, 3 + n))
    for fd in fds:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            raise Fatal(f"--preserve-fds {n}: fd {fd} is not open") from None
        # the caller's fds are inherited; ours (the state directory, the
        # FIFO...) are all close-on-exec, and never passed on
        if flags & fcntl.FD_CLOEXEC:
            raise Fatal(f"--preserve-fds {n}: fd {fd} is not the caller's to pass")
    return fds


def _own_stdio(n: int, null: int) -> int:
    try:
        os.fstat(n)
        return n
    except OSError:
        return null


def _send_console(path: str, master: int) -> None:
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        socket.send_fds(s, [b"/dev/ptmx"], [master])
    except OSError as e:
        raise Fatal(f"console socket {path}: {e.strerror}") from None
    finally:
        s.close()


def _remove_dir(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def _release(lock: Locked, state: dict[str, Any]) -> None:
    """start: write the gate (the process execs), then the FIFO goes."""
    fifo = os.path.join(lock.path, "exec.fifo")
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Fatal("cannot start an already running container") from None
    except OSError as e:
        if e.errno == errno.ENXIO:      # no reader: the init is gone
            raise Fatal("cannot start a container that has stopped") from None
        raise
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(fifo)
    hooks = (state.get("hooks") or {}).get("poststart")
    if hooks:
        try:
            _run_hooks("poststart", hooks, _oci_state(lock, state))
        except Fatal as e:
            _warn(str(e))


def cmd_create(argv: list[str]) -> int:
    o, rest = _parse(argv, {"bundle": "str", "b": "str", "pid-file": "str",
                            "console-socket": "str", "no-pivot": "bool",
                            "no-new-keyring": "bool", "preserve-fds": "int"}, "create")
    cid = _one_id(rest, "create")
    _preserved(o["preserve-fds"])      # before this process opens fds of its own
    lock, _, _, _ = _create(cid, o["bundle"] or o["b"] or ".", o["pid-file"],
                            o["console-socket"], preserve=o["preserve-fds"] or 0)
    lock.close()
    return 0


def cmd_start(argv: list[str]) -> int:
    _, rest = _parse(argv, {}, "start")
    cid = _one_id(rest, "start")
    lock = Locked(cid)
    try:
        state = lock.state()
        status = _status(lock, state)
        if status == "stopped":
            raise Fatal("cannot start a container that has stopped")
        if status != "created":
            raise Fatal("cannot start an already running container")
        _release(lock, state)
    finally:
        lock.close()
    return 0


def cmd_run(argv: list[str]) -> int:
    o, rest = _parse(argv, {"bundle": "str", "b": "str", "pid-file": "str",
                            "console-socket": "str", "detach": "bool", "d": "bool",
                            "no-pivot": "bool", "no-new-keyring": "bool",
                            "preserve-fds": "int", "keep": "bool"}, "run")
    cid = _one_id(rest, "run")
    _preserved(o["preserve-fds"])      # before this process opens fds of its own
    detach = o["detach"] or o["d"]
    lock, state, pid, master = _create(cid, o["bundle"] or o["b"] or ".", o["pid-file"],
                                       o["console-socket"], detach_stdio=detach,
                                       preserve=o["preserve-fds"] or 0)
    try:
        _release(lock, state)
    except BaseException:
        lock.close()
        if master >= 0:
            os.close(master)
        _destroy(cid, force=True)
        raise
    lock.close()
    if detach:
        return 0
    if master >= 0:             # -t in the foreground: this terminal is the container's
        code = _proxy_tty(pid, master)
        if not o["keep"]:
            _destroy(cid, force=True)
        return code
    # the foreground: this process is the init's parent; wait, and delete
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
              signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(s, lambda n, frame: _forward_handler(pid, n, frame))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if not o["keep"]:
        _destroy(cid, force=True)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
        else 128 + os.WTERMSIG(status)


def _forward_handler(pid: int, n: int, _frame: object) -> None:
    _forward(pid, n)


def _forward(pid: int, n: int) -> None:
    try:
        os.kill(pid, n)
    except ProcessLookupError:
        pass


# -- the others ------------------------------------------------------------------

def cmd_state(argv: list[str]) -> int:
    _, rest = _parse(argv, {}, "state")
    cid = _one_id(rest, "state")
    lock = Locked(cid)
    try:
        state = lock.state()
        print(dumps(_oci_state(lock, state), indent=2))
    finally:
        lock.close()
    return 0


def _signal(text: str) -> int:
    t = text.upper().removeprefix("SIG")
    if t.isascii() and t.isdigit():
        n = int(t)
        if 0 < n < 65:
            return n
    else:
        # (not the aliases IOT, CLD and POLL, which runc refuses too)
        number = getattr(signal, f"SIG{t}", None) \
            if t.isalnum() and t not in ("IOT", "CLD", "POLL") else None
        if isinstance(number, int) and 0 < number < 65:
            return int(number)
    raise Fatal(f"unknown signal {text!r}")


def cmd_kill(argv: list[str]) -> int:
    o, rest = _parse(argv, {"all": "bool", "a": "bool", "pid": "int"}, "kill")
    cid = _one_id(rest, "kill", more=True)
    if len(rest) > 2:
        raise Fatal("kill: takes a container id and a signal")
    sig = _signal(rest[1]) if len(rest) > 1 else signal.SIGTERM
    lock = Locked(cid)
    try:
        state = lock.state()
        fd = _pidfd(state)
        if fd is None:
            raise Fatal("container not running")
        try:
            if o["all"] or o["a"]:
                cg = _cgroups(state)
                if cg is not None and sig == signal.SIGKILL:
                    cg.kill_all()
                elif cg is not None:
                    for p in _procs(cg):
                        _forward(p, sig)
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
    finally:
        lock.close()
    return 0


def _procs(cg: Any) -> list[int]:
    d = cg.dirs.get("") or cg.dirs.get("pids") or cg.dirs.get("memory") or \
        next(iter(cg.dirs.values()), None)
    if d is None:
        return []
    try:
        with open(f"{d}/cgroup.procs") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _destroy(cid: str, force: bool) -> None:
    """delete: the container's processes, cgroups and state; poststop hooks."""
    lock = Locked(cid)
    try:
        if not os.path.exists(os.path.join(lock.path, "state.json")):
            # a create killed before it wrote anything (it held the lock): nothing
            # of the container was made yet but this directory
            _remove_dir(lock.path)
            return
        state = lock.state()
        status = _status(lock, state)
        if status not in ("stopped", "created") and not force:
            raise Fatal(f"cannot delete container {cid} that is not stopped: {status}")
        cg = _cgroups(state)
        fd = _pidfd(state)
        if fd is not None:
            try:
                if cg is not None and status == "paused":
                    cg.freeze(False)
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                import select
                select.select([fd], [], [], 10.0)   # readable once it has ended
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
        if cg is not None:
            try:
                cg.kill_all()       # without a PID namespace, what the init left
            except OSError:
                pass
            try:
                cg.remove(wait=5.0)
            except OSError as e:
                _warn(f"delete {cid}: {e}")
        hooks = (state.get("hooks") or {}).get("poststop")
        if hooks:
            try:
                _run_hooks("poststop", hooks, _oci_state(lock, state, "stopped"))
            except Fatal as e:
                _warn(str(e))
        _remove_dir(lock.path)
    finally:
        lock.close()


def cmd_delete(argv: list[str]) -> int:
    o, rest = _parse(argv, {"force": "bool", "f": "bool"}, "delete")
    cid = _one_id(rest, "delete")
    force = o["force"] or o["f"]
    try:
        _destroy(cid, force)
    except Fatal as e:
        if force and str(e) == "container does not exist":
            return 0
        raise
    return 0


def cmd_list(argv: list[str]) -> int:
    o, _ = _parse(argv, {"format": "str", "f": "str", "quiet": "bool", "q": "bool"}, "list")
    fmt = o["format"] or o["f"] or "table"
    rows = []
    try:
        names = sorted(os.listdir(OPTS.root))
    except FileNotFoundError:
        names = []
    for cid in names:
        if not _valid_id(cid):
            continue
        try:
            lock = Locked(cid)
        except Fatal:
            continue
        try:
            rows.append(_oci_state(lock, lock.state()))
        except Fatal:
            pass
        finally:
            lock.close()
    if o["quiet"] or o["q"]:
        for r in rows:
            print(r["id"])
    elif fmt == "json":
        print(dumps(rows or None))
    elif fmt == "table":
        print(f"{'ID':<12} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} {'CREATED':<30} OWNER")
        for r in rows:
            print(f"{r['id']:<12} {r['pid']:<8} {r['status']:<10} {r['bundle']:<40} "
                  f"{r['created']:<30} root")
    else:
        raise Fatal(f"invalid format option: {fmt}")
    return 0


def cmd_ps(argv: list[str]) -> int:
    o, rest = _parse(argv, {"format": "str", "f": "str"}, "ps")
    cid = _one_id(rest, "ps", more=True)
    lock = Locked(cid)
    try:
        state = lock.state()
        if not _alive(state):
            raise Fatal("container not running")
        cg = _cgroups(state)
        pids = _procs(cg) if cg is not None else [state["pid"]]
    finally:
        lock.close()
    fmt = o["format"] or o["f"] or "table"
    if fmt == "json":
        print(dumps(pids))
        return 0
    if fmt != "table":
        raise Fatal(f"invalid format option: {fmt}")
    import subprocess
    out = subprocess.run(["ps", *(rest[1:] or ["-ef"])], capture_output=True, text=True)
    lines = out.stdout.splitlines()
    if not lines:
        raise Fatal(f"ps: {out.stderr.strip()}")
    header = lines[0].split()
    col = header.index("PID") if "PID" in header else 1
    print(lines[0])
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            print(line)
    return 0


def _freeze(argv: list[str], name: str, frozen: bool) -> int:
    _, rest = _parse(argv, {}, name)
    cid = _one_id(rest, name)
    lock = Locked(cid)
    try:
        state = lock.state()
        status = _status(lock, state)
        if frozen and status != "running":
            raise Fatal("container not running")
        if not frozen and status != "paused":
            raise Fatal("container not paused")
        cg = _cgroups(state)
        if cg is None:
            raise Fatal(f"{name}: the container has no cgroup")
        try:
            cg.freeze(frozen)
        except OSError as e:
            raise Fatal(f"{name}: {e}") from None
    finally:
        lock.close()
    return 0


def cmd_pause(argv: list[str]) -> int:
    return _freeze(argv, "pause", True)


def cmd_resume(argv: list[str]) -> int:
    return _freeze(argv, "resume", False)


def _stats(cid: str, cg: Any) -> dict[str, Any]:
    s = cg.stats()
    return {"type": "stats", "id": cid, "data": {
        "cpu": {"usage": {"total": s["cpu_usage_ns"] or 0}},
        "memory": {"usage": {"usage": s["memory_current"] or 0, "max": s["memory_peak"] or 0,
                             "limit": s["memory_limit"] or 0, "failcnt": s["oom_kills"] or 0}},
        "pids": {"current": s["pids_current"] or 0, "limit": s["pids_limit"] or 0}}}


def cmd_events(argv: list[str]) -> int:
    o, rest = _parse(argv, {"stats": "bool", "interval": "str"}, "events")
    cid = _one_id(rest, "events")
    interval = 5.0
    if o["interval"]:
        import re
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", o["interval"])
        if not m:
            raise Fatal(f"events: invalid interval {o['interval']!r}")
        interval = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]
    lock = Locked(cid)
    try:
        state = lock.state()
        if not _alive(state):
            raise Fatal("container not running")
    finally:
        lock.close()
    cg = _cgroups(state)
    if cg is None:
        raise Fatal("events: the container has no cgroup")
    if o["stats"]:
        print(dumps(_stats(cid, cg)))
        return 0
    ooms = cg.oom_kills()
    while _alive(state):
        print(dumps(_stats(cid, cg)), flush=True)
        now = cg.oom_kills()
        if now > ooms:
            print(dumps({"type": "oom", "id": cid}), flush=True)
            ooms = now
        time.sleep(interval)
    return 0


def cmd_update(argv: list[str]) -> int:
    from ._config import _limits
    from . import _oci
    o, rest = _parse(argv, {"resources": "str", "r": "str", "memory": "str",
                            "memory-swap": "str", "pids-limit": "int", "cpu-quota": "int",
                            "cpu-period": "int", "cpu-share": "int", "cpuset-cpus": "str",
                            "cpuset-mems": "str", "blkio-weight": "int",
                            "memory-reservation": "str", "kernel-memory": "str",
                            "kernel-memory-tcp": "str", "cpu-rt-period": "int",
                            "cpu-rt-runtime": "int", "l3-cache-schema": "str",
                            "mem-bw-schema": "str"}, "update")
    cid = _one_id(rest, "update")
    res: dict[str, Any] = {}
    source = o["resources"] or o["r"]
    if source:
        try:
            if source == "-":
                res = loads(sys.stdin.read())
            else:
                with open(source) as f:
                    res = loads(f.read())
        except (OSError, ValueError) as e:
            raise Fatal(f"update: --resources {source}: {e}") from None
        if not isinstance(res, dict):
            raise Fatal("update: --resources holds a JSON object")
    from ._sizes import parse_size
    if o["memory"]:
        res.setdefault("memory", {})["limit"] = parse_size(o["memory"], "memory")
    if o["memory-swap"]:
        res.setdefault("memory", {})["swap"] = parse_size(o["memory-swap"], "memory-swap")
    if o["pids-limit"] is not None:
        res.setdefault("pids", {})["limit"] = o["pids-limit"]
    for flag, key in (("cpu-quota", "quota"), ("cpu-period", "period"),
                      ("cpu-share", "shares"), ("cpuset-cpus", "cpus"),
                      ("cpuset-mems", "mems")):
        if o[flag] is not None:
            res.setdefault("cpu", {})[key] = o[flag]
    if o["blkio-weight"] is not None:
        res.setdefault("blockIO", {})["weight"] = o["blkio-weight"]
    try:
        wanted = _oci._resources(res)
        unified = wanted.pop("unified", None)
        limits = dict(_limits(**wanted))
        if unified:
            limits["unified"] = unified
    except (ValueError, TypeError) as e:
        raise Fatal(f"update: {e}") from None
    lock = Locked(cid)
    try:
        state = lock.state()
        if not _alive(state):
            raise Fatal("container not running")
        cg = _cgroups(state)
        if cg is None:
            raise Fatal("update: the container has no cgroup")
        try:
            cg.update(limits)
        except (ValueError, OSError) as e:
            raise Fatal(f"update: {e}") from None
        state["cgroups"]["limits"] = dict(cg.limits)
        lock.save(state)
    finally:
        lock.close()
    return 0


def cmd_exec(argv: list[str]) -> int:
    from . import _isolate as _c
    from . import _oci
    from ._config import env_list, DEFAULT_PATH, Config
    from ._core import _check_own_child, open_pty
    o, rest = _parse(argv, {"process": "str", "p": "str", "console-socket": "str",
                            "detach": "bool", "d": "bool", "pid-file": "str", "tty": "bool",
                            "t": "bool", "cwd": "str", "env": "list", "e": "list",
                            "user": "str", "u": "str", "additional-gids": "list",
                            "g": "list", "cap": "list", "c": "list",
                            "no-new-privs": "bool", "process-label": "str",
                            "apparmor": "str", "preserve-fds": "int", "cgroup": "str",
                            "ignore-paused": "bool"}, "exec")
    cid = _one_id(rest, "exec", more=True)
    process_file = o["process"] or o["p"]
    process: Any = None
    if process_file:
        try:
            with open(process_file) as f:
                process = loads(f.read())
        except (OSError, ValueError) as e:
            raise Fatal(f"exec: --process {process_file}: {e}") from None
    elif len(rest) < 2:
        raise Fatal("exec: give a command, or --process")
    lock = Locked(cid)
    try:
        state = lock.state()
        status = _status(lock, state)
        if status != "running":
            raise Fatal(f"cannot exec in a {status} container")
        try:        # the config the container was made from (see _create)
            with open(os.path.join(lock.path, "config.json")) as f:
                spec = loads(f.read())
        except (OSError, ValueError) as e:
            raise Fatal(f"exec: container {cid}: its config is unreadable: {e}") from None
        if process is None:
            process = _command_line_process(spec.get("process") or {}, rest[1:], o)
        fd = _pidfd(state)
        if fd is None:
            raise Fatal("container not running")
        try:
            base = _oci.load(state["bundle"], spec).config
            p = _oci.process(process, base)
        except _oci.SpecError as e:
            os.close(fd)
            raise Fatal(f"exec: {e}") from None
        detach = o["detach"] or o["d"]
        console = o["console-socket"]
        if p.terminal and console is None and detach:
            os.close(fd)
            raise Fatal("cannot allocate tty if runc will detach without setting console "
                        "socket")
        cg = _cgroups(state)
        from ._plan import op
        steps = [op(_c.OP_WRITE, dst=pth, data="0") for pth in cg.procs()] \
            if cg is not None else []
        cfg: Config = p.config
        if cfg.personality is not None:     # the container's, as runc's exec gives it
            steps.append(op(_c.OP_PERSONALITY, arg=cfg.personality))
        join = _c.Plan(steps) if steps else None
        stdio = [0, 1, 2]
        master = -1
        if p.terminal:
            master, slave = open_pty(state["pid"])
            stdio = [slave] * 3
        env = p.env
        path = dict(env).get("PATH", DEFAULT_PATH)
        xspec = _c.ExecSpec(os.fsencode(p.args[0]), [os.fsencode(a) for a in p.args],
                           env_list(env), os.fsencode(path), os.fsencode(p.cwd), tuple(stdio),
                           _preserved(o["preserve-fds"]),
                           (cfg.user.uid, cfg.user.gid, cfg.user.groups),
                           not cfg.userns or cfg.uid_map is not None,
                           _c.SESSION_TTY if p.terminal else 1, p.umask, cfg.security())
        from ._plan import join_flags
        try:
            pid, status_fd = _c.exec_in(fd, join_flags(cfg), xspec, join)
            try:
                _check_own_child(pid, state["pid"])
            except BaseException:
                os.close(status_fd)
                _forward(pid, signal.SIGKILL)      # ours, whatever the report said
                os.waitpid(pid, 0)
                raise
            _c.exec_finish(status_fd, pid)
        except OSError as e:
            from .errors import ContainerError
            if e.errno == errno.ENOENT and not isinstance(e, ContainerError):
                raise Fatal(f'exec: "{p.args[0]}": executable file not found in $PATH') \
                    from None
            raise Fatal(f"exec: {e}") from None
        finally:
            os.close(fd)
            if p.terminal:
                os.close(slave)
        if master >= 0:
            try:
                if console is not None:
                    _send_console(console, master)
            finally:
                if console is not None:
                    os.close(master)
        if o["pid-file"]:
            _write_atomic(os.path.abspath(o["pid-file"]), str(pid).encode())
    finally:
        lock.close()
    if detach:
        return 0
    if master >= 0:
        return _proxy_tty(pid, master)
    while True:
        try:
            _, sts = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(sts) if os.WIFEXITED(sts) else 128 + os.WTERMSIG(sts)


def _command_line_process(base: dict[str, Any], args: list[str], o: dict[str, Any]
                          ) -> dict[str, Any]:
    """exec without --process: the container's own process (its user,
    capabilities, environment, no_new_privs...), with the flags' changes."""
    process = dict(base, args=args, terminal=bool(o["tty"] or o["t"]))
    if o["cwd"]:
        process["cwd"] = o["cwd"]
    env = o["env"] + o["e"]
    if env:
        names = {e.split("=", 1)[0] for e in env}
        process["env"] = [e for e in process.get("env") or []
                          if e.split("=", 1)[0] not in names] + env
    user = o["user"] or o["u"]
    if user:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or not (gid or "0").isdigit():
            raise Fatal(f"exec: --user {user!r}: give UID[:GID] as numbers")
        process["user"] = dict(process.get("user") or {}, uid=int(uid), gid=int(gid or 0))
    groups = o["additional-gids"] + o["g"]
    if groups:
        if not all(g.isdigit() for g in groups):
            raise Fatal("exec: --additional-gids takes numbers")
        process["user"] = dict(process.get("user") or {},
                               additionalGids=[int(g) for g in groups])
    if o["no-new-privs"]:
        process["noNewPrivileges"] = True
    caps = o["cap"] + o["c"]
    if caps:
        have = dict(process.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted"):
            have[kind] = list(dict.fromkeys([*(have.get(kind) or []), *caps]))
        process["capabilities"] = have
    return process


def _proxy_tty(pid: int, master: int) -> int:
    """Copy between our stdio and the command's terminal until it ends."""
    import select
    while True:
        r, _, _ = select.select([0, master], [], [], 0.1)
        if master in r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if data:
                os.write(1, data)
        if 0 in r:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            os.close(master)
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)


def cmd_spec(argv: list[str]) -> int:
    o, _ = _parse(argv, {"rootless": "bool", "bundle": "str", "b": "str"}, "spec")
    bundle = o["bundle"] or o["b"] or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise Fatal("File config.json already exists")
    import json
    from ._oci import default_spec
    with open(path, "w") as f:
        json.dump(default_spec(o["rootless"]), f, indent="\t")
    return 0


def cmd_features(argv: list[str]) -> int:
    from ._oci import BUILTIN_MOUNTS, NAMESPACES
    from ._security import CAPABILITIES
    print(dumps({
        "ociVersionMin": "1.0.0", "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "noexec", "nodev"],
        "linux": {"namespaces": sorted(NAMESPACES), "capabilities":
                  ["CAP_" + c for c in CAPABILITIES],
                  "cgroup": {"v1": True, "v2": True, "systemd": False,
                             "systemdUser": False},
                  "seccomp": {"enabled": True},
                  "apparmor": {"enabled": False}, "selinux": {"enabled": False}},
        "annotations": {"io.github.isolate.builtin-mounts": ",".join(BUILTIN_MOUNTS)},
    }, indent="    "))
    return 0


COMMANDS = {"create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state,
            "kill": cmd_kill, "delete": cmd_delete, "list": cmd_list, "ps": cmd_ps,
            "pause": cmd_pause, "resume": cmd_resume, "events": cmd_events,
            "update": cmd_update, "exec": cmd_exec, "spec": cmd_spec,
            "features": cmd_features}

_GLOBAL = {"root": "str", "log": "str", "log-format": "str", "debug": "bool",
           "systemd-cgroup": "bool", "rootless": "str", "criu": "str", "version": "bool",
           "v": "bool", "help": "bool", "h": "bool"}


def _usage() -> str:
    return ("usage: isolate-runc [--root DIR] [--log FILE] [--log-format text|json] "
            f"COMMAND [ARGS]\ncommands: {', '.join(COMMANDS)}")


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv[1:] if argv is None else argv
    try:
        # global flags come before the command
        i = 0
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
            key = argv[i].lstrip("-").split("=", 1)[0]
            if _GLOBAL.get(key) == "str" and "=" not in argv[i]:
                i += 1
            i += 1
        g, _ = _parse(argv[:i], _GLOBAL, "isolate-runc")
        OPTS.root = os.path.abspath(g["root"] or _default_root())
        OPTS.log = g["log"] or ""
        OPTS.log_format = g["log-format"] or "text"
        OPTS.debug = bool(g["debug"])
        OPTS.systemd_cgroup = bool(g["systemd-cgroup"])
        if OPTS.log_format not in ("text", "json"):
            raise Fatal(f"invalid log-format: {OPTS.log_format}")
        if g["version"] or g["v"]:
            print(f"isolate-runc version {VERSION}\nspec: {SPEC_VERSION}")
            sys.exit(0)
        if g["help"] or g["h"] or i >= len(argv):
            print(_usage())
            sys.exit(0 if g["help"] or g["h"] else 1)
        name, args = argv[i], argv[i + 1:]
        if name in ("--version", "version"):
            print(f"isolate-runc version {VERSION}\nspec: {SPEC_VERSION}")
            sys.exit(0)
        command = COMMANDS.get(name)
        if command is None:
            raise Fatal(f"No help topic for '{name}'")
        sys.exit(command(args))
    except Fatal as e:
        _log("error", str(e))
        print(f"isolate-runc: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

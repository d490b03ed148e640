"""Python functions inside containers: Container.call and submit, isolate.call, @isolated.

The function runs in a fork of the caller that joined the container's
namespaces, so closures, lambdas and any argument work without pickling;
only the outcome is pickled back.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import _isolate as _c
from . import _wire
from .errors import ContainerDied, ContainerOOMError, child_error

if TYPE_CHECKING:
    import concurrent.futures
    from ._config import Config
    from .container import Container

T = TypeVar("T")


def _stdio_fds() -> set[int]:
    """The fds behind sys.stdin/stdout/stderr, which may not be 0, 1, 2."""
    fds = set()
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    return fds


class _Relay:
    """Output of a call for a caller whose sys.stdout or sys.stderr is not a
    file (contextlib.redirect_stdout, pytest's capsys): the call's fd 1 or 2
    is then a pipe, and what comes through is written to that stream."""

    def __init__(self) -> None:
        self.pipes: dict[int, tuple[int, int, Any]] = {}
        self.threads: list[threading.Thread] = []
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            if stream is None:
                continue
            try:
                stream.fileno()
                continue
            except (AttributeError, OSError, ValueError):
                pass
            r, w = os.pipe2(os.O_CLOEXEC)
            self.pipes[fd] = (r, w, stream)

    def fds(self) -> list[int]:
        return [fd for r, w, _ in self.pipes.values() for fd in (r, w)]

    def in_child(self) -> None:
        for fd, (r, w, _) in self.pipes.items():
            os.dup2(w, fd)
            os.close(w)
            os.close(r)
            f = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                     closefd=False)
            setattr(sys, "stdout" if fd == 1 else "stderr", f)

    def start(self) -> None:
        for r, w, stream in self.pipes.values():
            os.close(w)
            t = threading.Thread(target=self._copy, args=(r, stream), daemon=True,
                                 name="isolate-call-output")
            t.start()
            self.threads.append(t)

    def close(self) -> None:
        """Once the call has ended (and its session was killed): the rest of
        its output. A daemon it started in a session of its own may hold the
        pipe for long: its later output still arrives, but is not waited for."""
        if self.threads:
            for t in self.threads:
                t.join(0.5)
        else:
            for r, w, _ in self.pipes.values():
                os.close(r)
                os.close(w)

    @staticmethod
    def _copy(r: int, stream: Any) -> None:
        import codecs
        decode = codecs.getincrementaldecoder("utf-8")("backslashreplace").decode
        try:
            while data := os.read(r, 65536):
                stream.write(decode(data))
            stream.write(decode(b"", True))
        except (OSError, ValueError):
            pass
        finally:
            os.close(r)


def restrict_spec(cfg: Config) -> Any:
    """What enter_in_child applies: made in the parent, once, since in a fresh
    fork every object made touches pages that must then be copied."""
    u = cfg.user
    return _c.ExecSpec(b"", [], [], None, os.fsencode(cfg.cwd), (-1, -1, -1), (),
                       (u.uid, u.gid, u.groups), not cfg.userns or cfg.uid_map is not None,
                       True, 0o022, (*cfg.security(), True))


def environ_items(cfg: Config) -> list[tuple[bytes, bytes]]:
    return [(os.fsencode(k), os.fsencode(v)) for k, v in cfg.env]


def enter_in_child(cfg: Config, keep_fd: int, spec: Any, keep: Iterable[int] = (),
                   environ: list[tuple[bytes, bytes]] | None = None,
                   stdio: Iterable[int] | None = None) -> None:
    """In the fork, once in the namespaces: what every container process gets.
    Only stdio (as Python sees it), the result pipe and keep stay open; spec
    is restrict_spec(cfg), environ environ_items(cfg), stdio _stdio_fds()
    (made before the fork where the fork is made often: in the fork, every
    object made or line run touches pages that must then be copied)."""
    std = _stdio_fds() if stdio is None else stdio
    _c.enter(spec, {keep_fd, *keep, *std})      # fds, session, cwd, umask, ids, security
    items = environ_items(cfg) if environ is None else environ
    _c.replace_environ(items)
    os.environ._data = dict(items)     # type: ignore[attr-defined]  # see replace_environ


_MFD_EXEC = 0x0010      # Linux 6.3: executable even where memfds are noexec by default
_ALL_SIGNALS = signal.valid_signals()


def sealed_copy(path: str) -> int:
    """A sealed memfd copy of the binary at path, close-on-exec: what a
    process the container can see runs as its /proc/self/exe, which the
    container could otherwise open and, once nothing runs the host's file,
    write (runc CVE-2019-5736)."""
    import fcntl
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create("isolate-python", flags | _MFD_EXEC)
    except OSError:
        fd = os.memfd_create("isolate-python", flags)
    try:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(fd, src.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


_exe_lock = threading.Lock()
_exe: tuple[_c.Exe, int, tuple[int, int]] | None = None


def own_exe() -> _c.Exe:
    """A sealed copy of this process's own binary, made once, and where the
    binary is mapped: a call process is a copy of the caller's memory whose
    executable is the copy (csrc/exe.c), so that the function, which can
    open its /proc/self/exe, holds no host file. Made again if the caller
    closed its fd (a daemon closing every fd, say)."""
    global _exe
    with _exe_lock:
        if _exe is not None:
            exe, fd, ident = _exe
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == ident:
                    return exe
            except OSError:
                pass
        fd = sealed_copy("/proc/self/exe")
        st = os.fstat(fd)
        _exe = (_c.Exe(fd), fd, (st.st_dev, st.st_ino))
        return _exe[0]


def _reraise(e: BaseException) -> None:
    raise e


def died(status: int, what: str) -> ContainerDied:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ContainerDied(f"{what} was killed by {signal.Signals(sig).name}", signal=sig)
    code = os.waitstatus_to_exitcode(status)
    return ContainerDied(f"{what} exited with status {code} without returning", exitcode=code)


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)      # the call's session: what it started
    except (ProcessLookupError, PermissionError):
        pass


def call_in(c: Container, fn: Callable[..., T], args: tuple, kwargs: dict,
            timeout: float | None = None, started: Callable[[int], None] | None = None,
            keep_fds: Iterable[int] = ()) -> T:
    """Run fn(*args, **kwargs) in a fork of this process inside c; keep_fds
    stay open in it besides stdio."""
    _wire.load_pickler()
    exe = own_exe()
    relay = _Relay()
    r, w = os.pipe()
    try:
        with c._lock:
            if c._state != "running":
                raise RuntimeError(f"container {c.id} is {c._state}")
            if c._restrict is None:
                c._restrict = restrict_spec(c._cfg)
            spec = c._restrict
            trusted = c._trusted
            cgroups = c._cgroups
            procs = [os.fsencode(p) for p in cgroups.procs()] if cgroups is not None else None
            ooms = cgroups.oom_kills() if cgroups is not None else 0
            keep = {r, w, *keep_fds, *_stdio_fds(), *relay.fds()}
            # no signal (a process inside may send one to the new process)
            # runs a handler of the caller's before the child is restricted
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
            pid = -1
            try:
                pid, err = _c.fork_into(c._pidfd, c._join, procs or [], keep, exe)
            finally:
                if pid != 0:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if pid == 0:            # the child: never returns
                def child() -> None:
                    try:
                        os.close(r)
                        if err is not None:
                            raise err
                        relay.in_child()
                        enter_in_child(c._cfg, w, spec, keep_fds)
                        signal.pthread_sigmask(signal.SIG_SETMASK, mask)    # restricted now
                    except BaseException as e:
                        _wire.run_and_exit(w, _reraise, (e,), {}, trusted=trusted)
                    _wire.run_and_exit(w, fn, args, kwargs, trusted=trusted)
                _c.exit_after(child)
            c._calls.add(pid)
    except BaseException:
        os.close(r)
        os.close(w)
        relay.close()
        raise
    os.close(w)
    relay.start()
    if started is not None:
        started(pid)
    what = f"the process running {getattr(fn, '__qualname__', repr(fn))}"
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            payload = _wire.receive(r, deadline, _wire.result_limit(c._cfg.limits))
        except TimeoutError:
            _kill_session(pid)
            raise TimeoutError(f"{what} did not return within {timeout} s; it was killed") from None
        finally:
            os.close(r)
    finally:
        # its result is in (or it is gone): what it left running, and the
        # process itself if it sent a result and went on, end now
        _kill_session(pid)
        _, status = os.waitpid(pid, 0)
        c._calls.discard(pid)
        relay.close()
    if payload is None:
        if cgroups is not None and cgroups.oom_kills() > ooms:
            raise ContainerOOMError(f"{what} was killed by the OOM killer: the container's "
                                    "memory limit", signal=signal.SIGKILL)
        raise died(status, what)
    return _wire.decode(payload, trusted)


def submit_in(c: Container, fn: Callable[..., T], args: tuple, kwargs: dict,
              timeout: float | None = None) -> concurrent.futures.Future[T]:
    """call_in in a thread; cancelling the future kills the call's process."""
    import concurrent.futures
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()
    box: dict[str, int] = {}
    lock = threading.Lock()

    def started(pid: int) -> None:
        with lock:
            box["pid"] = pid
        if fut.cancelled():
            _kill_session(pid)

    def on_done(f: concurrent.futures.Future[T]) -> None:
        if f.cancelled():
            with lock:
                pid = box.get("pid")
            if pid is not None:
                _kill_session(pid)

    # The future stays pending while the call runs, so cancel() works until
    # the result is in (a running future could not be cancelled).
    fut.add_done_callback(on_done)
    threading.Thread(target=settle, args=(fut, call_in, c, fn, args, kwargs, timeout, started),
                     name=f"isolate-call-{c.id}", daemon=True).start()
    return fut


def settle(fut: concurrent.futures.Future, run: Callable[..., Any], *args: Any) -> None:
    """Run, and give fut its outcome, unless it was cancelled meanwhile."""
    import concurrent.futures
    if fut.cancelled():
        return
    try:
        result = run(*args)
    except BaseException as e:
        if not fut.cancelled():
            try:
                fut.set_exception(e)
            except concurrent.futures.InvalidStateError:
                pass
    else:
        try:
            fut.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass


def call(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a fresh container (the defaults of `Container()`),
    removed afterwards with everything the call started. The result comes
    back as data only: never trusted (see `Container`)."""
    from .container import Container
    with Container() as c:
        return call_in(c, fn, args, kwargs)


def isolated(fn: Callable[..., T] | None = None, /, *, timeout: float | None = None,
             trusted: bool = False, **container_options: Any) -> Any:
    """Decorate a function so that each call runs in a fresh container.

        @isolated(network="none", timeout=5)
        def parse(blob): ...

    `timeout` kills a call that runs longer and raises TimeoutError; the other
    options are `Container`'s, checked when decorating. Results come back as
    data only (see `Container`); trusted=True unpickles anything, which lets
    the function run code in the caller: only for a function you trust.
    """
    from ._config import make_config
    from .container import Container
    make_config(**container_options)    # bad options fail here, not at the first call

    def decorate(f: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with Container(trusted=trusted, **container_options) as c:
                return call_in(c, f, args, kwargs, timeout)
        return wrapper

    return decorate if fn is None else decorate(fn)

"""Pool: containers made ahead of time, each serving exactly one function call.

    with Pool(size=4, rootfs="/srv/busybox", network="none") as pool:
        pool.call(parse, data)
        futures = [pool.submit(parse, d) for d in blobs]
        results = list(pool.map(parse, blobs))

A Pool is a `concurrent.futures.Executor`. Each container's PID 1 is a
worker forked from a small zygote process (not from the caller), waiting for
one call; after it the container ends and a fresh one takes its place.
Functions and arguments travel by value (pickle, then cloudpickle), so
lambdas and local functions work. With a rootfs, a function can import only
what the image holds or what the pool preloaded (`preload=["json"]`).
"""
from __future__ import annotations

import collections
import concurrent.futures
import functools
import io
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, TypeVar

from . import _wire
from ._call import died, sealed_copy, settle
from ._config import make_config

__all__ = ["Pool"]

T = TypeVar("T")

#: the zygote's start: without the '' that `python -c` puts first on its
#: path. (With site: what .pth files install, import hooks of editable
#: installs among them, the caller's functions may need.)
_ZYGOTE_MAIN = """import sys
if sys.path[:1] == [""]:
    del sys.path[0]
from isolate._zygote import main
main()
"""


@functools.lru_cache(maxsize=1)
def _install_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(p + os.sep for p in paths if p)


def _installed(path: str) -> bool:
    """Whether a module file belongs to Python or its installed packages."""
    return path.startswith(_install_roots())


@functools.lru_cache(maxsize=1)
def _by_value_modules() -> set[str]:
    """Modules the caller registered with cloudpickle to go by value: its
    own set, which registering changes in place."""
    import cloudpickle  # type: ignore[import-untyped]
    found = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", None)
    return found if isinstance(found, set) else set()


@functools.lru_cache(maxsize=1)
def _by_value_pickler() -> type:
    """cloudpickle's Pickler (as _wire's: the standard table for exceptions),
    taking the functions and classes of the modules in its `by_value` by
    value too: for this pickle only (cloudpickle's own
    register_pickle_by_value would change how the rest of the caller, Dask's
    client or worker for one, pickles them)."""
    import types

    from cloudpickle.cloudpickle import _dynamic_class_reduce  # type: ignore[import-untyped]

    class ByValue(_wire.standard_cloudpickler()):  # type: ignore[misc]
        def __init__(self, file: Any, by_value: set[str], also: Callable[[str], bool]) -> None:
            super().__init__(file, pickle.HIGHEST_PROTOCOL, False)
            self.by_value = by_value
            self.also = also            # whether another module goes by value
            self.asked: set[str] = set()

        def reducer_override(self, obj: Any) -> Any:
            module = getattr(obj, "__module__", None)
            if isinstance(module, str) and isinstance(obj, (type, types.FunctionType)):
                if module not in self.by_value and module not in self.asked:
                    self.asked.add(module)
                    if self.also(module):
                        self.by_value.add(module)
                if module in self.by_value:
                    if isinstance(obj, type):
                        return _dynamic_class_reduce(obj)
                    return self._dynamic_function_reduce(obj)
            return super().reducer_override(obj)

    return ByValue


class _Naming(_wire.StandardPickler):
    """The C pickler, noting the module of every function and class it
    pickles by name."""

    def __init__(self, file: Any) -> None:
        self.modules: set[str] = set()
        super().__init__(file, pickle.HIGHEST_PROTOCOL, False)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        return NotImplemented


def _preloaded(name: str, preloaded: frozenset[str]) -> bool:
    """Whether the workers have the module: preloaded, a package of one, or
    a submodule of one (which the preload imports, or which comes from its
    package as the preload found it)."""
    return any(name == p or name.startswith(p + ".") or p.startswith(name + ".")
               for p in preloaded)


def _own_module(name: Any, preloaded: frozenset[str]) -> bool:
    """Whether the module is the caller's own: from a file outside Python's
    and its installed packages', and not the workers'."""
    module = sys.modules.get(name) if isinstance(name, str) else None
    path = getattr(module, "__file__", None)
    return (module is not None and isinstance(path, str) and name != "__main__"
            and name.partition(".")[0] not in _WORKERS_OWN and not _installed(path)
            and not _preloaded(name, preloaded))


#: what every worker has imported, wherever the caller has it from: isolate,
#: and the cloudpickle it pickles with (whose helpers a by-value pickle names)
_WORKERS_OWN = frozenset({"isolate", "cloudpickle"})


def _task(fn: Callable[..., Any], args: tuple, kwargs: dict, preloaded: frozenset[str],
          functions: Sequence[Any] = (), hidden: Callable[[str], bool] = lambda path: True) -> bytes:
    """The framed task. The module of the function (and of `functions`, the
    functions the caller knows the call will run: a Dask task's) travels by
    value when it is the caller's own (a worker inside an image could not
    import it, and importing it in each container costs what it imports);
    so does any other module of the caller's that the task names and that
    the container cannot import (`hidden(path)`: an image's, or under the
    container's own /tmp). Installed packages, the modules the workers
    preloaded, and the caller's modules that the container sees go by name.

    What pickle takes by reference alone goes by the C pickler, much
    cheaper than cloudpickle's; anything naming __main__ or a by-value
    module, or that pickle refuses, by cloudpickle."""
    own = {getattr(f, "__module__", None) for f in (fn, *functions)}
    named = {m for m in own if _own_module(m, preloaded)}
    task = (fn, args, kwargs)
    out = io.BytesIO()
    pickler = _Naming(out)
    try:
        pickler.dump(task)
        data = out.getvalue()
    except Exception:
        data = b""
    def unseen(m: str) -> bool:
        return _own_module(m, preloaded) and hidden(sys.modules[m].__file__ or "")

    seen = pickler.modules
    named |= {m for m in seen - named if unseen(m)}
    if not data or "__main__" in seen or named & seen or seen & _by_value_modules():
        out = io.BytesIO()
        # (what pickle refused, a lambda say, may name a module it did not reach)
        _by_value_pickler()(out, named, unseen).dump(task)
        data = out.getvalue()
    return _wire.frame(data)


def _hidden_paths(cfg: Any) -> Callable[[str], bool]:
    """Whether a host file is out of the container's sight: all are under a
    root of its own; on the host's root, those under the container's own
    /tmp, /run, /dev, /proc and /sys, and under its mounts."""
    if cfg.rootfs is not None:
        return lambda path: True
    # (the deepest of these that holds the path decides: a bind of a host
    # directory at its own path shows it, even under /tmp)
    tops = {t: True for t in ("/tmp", "/run", "/dev", "/proc", "/sys")}
    for m in cfg.mounts:
        source = getattr(m, "source", None)
        tops[m.target] = not (source is not None and os.path.realpath(source) == m.target)
    ordered = sorted(((t.rstrip("/") + "/", hid) for t, hid in tops.items()),
                     key=lambda th: -len(th[0]))

    def hidden(path: str) -> bool:
        for top, hid in ordered:
            if path.startswith(top):
                return hid
        return False
    return hidden


def _what(fn: Callable[..., Any]) -> str:
    return f"the worker running {getattr(fn, '__qualname__', repr(fn))}"


class _Relay:
    """Copies what the workers write to a pipe of the zygote's to sys.stdout
    or sys.stderr (as they are at each write: redirect_stdout and pytest's
    capture see it), as text: in a thread of its own, and at once with
    pump(), so that what a function printed before it returned is out
    before its call returns, as with isolate.call."""

    def __init__(self, pipe: Any, name: str) -> None:
        import codecs
        self._pipe = pipe
        self._fd = pipe.fileno()
        os.set_blocking(self._fd, False)
        self._name = name
        self._decode = codecs.getincrementaldecoder("utf-8")("backslashreplace").decode
        self._lock = threading.Lock()
        self._open = True
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"isolate-pool-{name}")
        self.thread.start()

    def _run(self) -> None:
        import select
        while self._open:
            try:
                select.select([self._fd], [], [])
            except (OSError, ValueError):
                break
            self.pump()

    def pump(self) -> None:
        """Copy what the pipe holds now."""
        with self._lock:
            while self._open:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                text = self._decode(data, not data)
                stream = getattr(sys, self._name)
                if text and stream is not None:
                    try:
                        stream.write(text)
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                if not data:
                    self._open = False
                    self._pipe.close()


_PENDING = object()


class _MapRun:
    """One Pool.map: its items, their outcomes as they come, and the runners
    (tasks of the pool's dispatch threads) that take the items in turn."""

    def __init__(self, pool: Pool, fn: Callable[..., Any], items: list[tuple]):
        self.pool, self.fn, self.items = pool, fn, items
        self.outcomes: list[Any] = [_PENDING] * len(items)
        self.next = iter(range(len(items)))     # shared: next() on it is atomic
        self.cond = threading.Condition()
        self.live = 0           # runners not yet finished (or cancelled)
        self.stopped = False    # the caller stopped reading: take no more items

    def start(self, runners: int) -> None:
        self.live = runners
        for _ in range(runners):
            self.pool._dispatch.submit(self.runner).add_done_callback(self.runner_done)

    def runner(self) -> None:
        for i in self.next:
            if self.stopped:
                return
            try:
                outcome = (True, self.pool._run(self.fn, self.items[i], {}))
            except BaseException as e:
                outcome = (False, e)
            with self.cond:
                self.outcomes[i] = outcome
                self.cond.notify_all()

    def runner_done(self, _: concurrent.futures.Future) -> None:
        with self.cond:
            self.live -= 1
            self.cond.notify_all()

    def results(self, deadline: float | None) -> Iterator[Any]:
        try:
            for i in range(len(self.outcomes)):
                with self.cond:
                    while self.outcomes[i] is _PENDING:
                        if self.live == 0:      # the pool shut down, cancelling
                            raise concurrent.futures.CancelledError()
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise TimeoutError()
                        self.cond.wait(left)
                    ok, value = self.outcomes[i]
                    self.outcomes[i] = None
                if not ok:
                    raise value
                yield value
        finally:
            self.stopped = True


class _Slot:
    """A worker waiting for one call: PID 1 of its own fresh container."""

    __slots__ = ("fd", "token", "pidfd")

    def __init__(self, fd: int, token: int, pidfd: int):
        self.fd = fd            # a stream socket to the worker
        self.token = token
        self.pidfd = pidfd

    def kill(self) -> None:
        """End the worker, and with it its container."""
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.pidfd)


class Pool(concurrent.futures.Executor):
    """`size` containers kept ready, each for one call of a Python function.

    Options: `timeout` (seconds a call may run; then it is killed and
    TimeoutError raised), `preload` (modules the workers import before
    entering their containers), `trusted`, and every option of `Container`
    but the time namespace and uid_map: limits hold for each call's container.

    Results come back as data only (builtins, collections, datetime, Decimal,
    Fraction, UUID, paths), exceptions as their class (if the caller has it
    loaded) rebuilt from data without running its code, else as
    `isolate.errors.RemoteError`; anything else raises SerializationError, so
    that an untrusted function cannot run code in the caller. trusted=True
    unpickles results as they are. WARNING: the function can then run any
    code in the caller: only for functions you trust.
    """

    def __init__(self, size: int = 4, *, timeout: float | None = None,
                 preload: Iterable[str] = (), trusted: bool = False,
                 **container_options: Any) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size={size!r}: a pool holds at least one container")
        fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fds != resource.RLIM_INFINITY and 2 * size >= fds:
            raise ValueError(f"size={size}: each ready container holds two of this process's "
                             f"file descriptors, and RLIMIT_NOFILE allows {fds}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be positive")
        preload = [str(m) for m in preload]
        self._preload = frozenset(preload)
        # (workers' containers map the caller's own ids: the zygote cannot run
        # newuidmap between its fork and the worker's setup)
        self._cfg = make_config(_subid_maps=False, **container_options)   # bad options fail here
        from ._config import USERMODE
        if self._cfg.network in USERMODE:
            from .errors import NetworkError
            raise NetworkError(f"a Pool cannot use network={self._cfg.network!r} yet (a caller "
                               "without root): its zygote forks containers that slirp4netns "
                               "cannot be attached to in time; use Container or isolate.run",
                               network=self._cfg.network)
        if self._cfg.ports:
            raise ValueError("a Pool's containers cannot publish ports: they would share each "
                             "host port; publish from a Container")
        if "time" in self._cfg.namespaces:
            raise ValueError("a Pool's workers cannot enter a time namespace (they do not exec); "
                             "use Container.call")
        if self._cfg.uid_map is not None:
            raise ValueError("a Pool cannot map id ranges yet (its zygote forks the containers); "
                             "use Container, or leave uid_map out")
        if "pid" not in self._cfg.namespaces:
            raise ValueError("a Pool's containers have an init of their own: "
                             "keep the 'pid' namespace")
        self._size = size
        self._timeout = timeout
        self._trusted = bool(trusted)
        self._result_limit = _wire.result_limit(self._cfg.limits)
        self._hidden = _hidden_paths(self._cfg)
        self._closing = False
        self._premade: Any = None       # containers for commands: from the first on
        self._procs: weakref.WeakSet[Any] = weakref.WeakSet()     # commands started
        self._cond = threading.Condition()
        self._ready: collections.deque[_Slot] = collections.deque()
        self._ready_cond = threading.Condition(threading.Lock())
        # token -> (wait status, OOM kills in its container), from the zygote
        self._ended: dict[int, tuple[int, int]] = {}
        # tokens whose "ended" no call will wait for (it returned, or timed out)
        self._unclaimed: set[int] = set()
        self._futures: set[concurrent.futures.Future] = set()

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # the caller's import path, in its order ('' is the directory it was in);
        # the zygote drops the directory that `python -c` puts first, where a
        # module named like one of the standard library's would shadow it
        path = [p or os.getcwd() for p in sys.path]
        # nothing of the caller's environment: the workers' /proc/PID/environ
        # shows the zygote's
        env = {"PYTHONPATH": os.pathsep.join(path)}
        if sysconfig.get_config_var("Py_ENABLE_SHARED") and sysconfig.get_config_var("LIBDIR"):
            env["LD_LIBRARY_PATH"] = sysconfig.get_config_var("LIBDIR")
        # stdio: nothing of the caller's (its terminal least of all); what
        # workers print is relayed to sys.stdout and sys.stderr. Sockets,
        # not pipes: every worker holds them, and a pipe's read end is one
        # open("/proc/self/fd/1") away, from which a call could read what
        # the others print; a socket cannot be opened through /proc.
        out = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        try:
            for ours_, theirs_ in out:
                ours_.shutdown(socket.SHUT_WR)
                theirs_.shutdown(socket.SHUT_RD)
            # the workers' /proc/self/exe: no host file that could be written
            # through it (runc CVE-2019-5736)
            exe = sealed_copy(os.path.realpath(sys.executable))
            try:
                self._zygote = subprocess.Popen(
                    [sys.executable, "-c", _ZYGOTE_MAIN, str(theirs.fileno()), str(exe)],
                    executable=f"/proc/self/fd/{exe}", pass_fds=[theirs.fileno(), exe], env=env,
                    stdin=subprocess.DEVNULL, stdout=out[0][1].fileno(),
                    stderr=out[1][1].fileno())
            finally:
                os.close(exe)
        except BaseException:
            for pair in out:
                for sock in pair:
                    sock.close()
            raise
        finally:
            theirs.close()
            for _, theirs_ in out:
                theirs_.close()
        self._relays = [_Relay(out[0][0], "stdout"), _Relay(out[1][0], "stderr")]
        self._ctl = ours
        try:
            ours.send(pickle.dumps((self._cfg, size, preload, self._trusted)))
            self._dispatch = concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="isolate-pool")
            self._reader = threading.Thread(target=self._read_zygote, daemon=True,
                                            name="isolate-pool-zygote")
            self._reader.start()
        except BaseException:
            ours.close()            # the zygote ends (and kills its workers) on end of file
            self._zygote.wait()
            raise

    def _read_zygote(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._ctl, 4096, 1, socket.MSG_CMSG_CLOEXEC)
            except OSError:
                data, fds = b"", []
            if not data:
                with self._cond:
                    self._closing = True
                    self._cond.notify_all()
                return
            kind, token, value = pickle.loads(data)
            if kind == "ready":
                try:
                    pidfd = os.pidfd_open(value)
                except OSError:         # already gone: its "ended" follows
                    os.close(fds[0])
                    continue
                self._ready.append(_Slot(fds[0], token, pidfd))
                with self._ready_cond:
                    self._ready_cond.notify()
            else:
                with self._cond:
                    if token in self._unclaimed:
                        self._unclaimed.discard(token)
                    else:
                        self._ended[token] = value
                        self._cond.notify_all()

    # -- calls ------------------------------------------------------------

    def _take(self) -> _Slot:
        while True:
            if self._closing:
                raise RuntimeError("cannot schedule new calls after shutdown")
            try:
                return self._ready.popleft()
            except IndexError:
                pass
            with self._ready_cond:
                if not self._ready:
                    self._ready_cond.wait(0.05)

    def _forget(self, token: int) -> None:
        """No call waits for this worker's end: drop its report, now or when it comes."""
        with self._cond:
            if self._ended.pop(token, None) is None:
                self._unclaimed.add(token)

    def _status(self, token: int, wait: float = 5.0) -> tuple[int, int] | None:
        deadline = time.monotonic() + wait
        with self._cond:
            while token not in self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._ended.pop(token)

    def _run(self, fn: Callable[..., T], args: tuple, kwargs: dict,
             started: Callable[[_Slot], None] | None = None, functions: Sequence[Any] = ()) -> T:
        slot = self._take()
        if started is not None:
            started(slot)
        fd = slot.fd
        try:
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                _wire.write_all(fd, _task(fn, args, kwargs, self._preload, functions,
                                          self._hidden))
                payload = _wire.receive(fd, deadline, self._result_limit)
            except TimeoutError:
                slot.kill()
                self._forget(slot.token)
                raise TimeoutError(f"{_what(fn)} did not return within {self._timeout} s; "
                                   "its container was removed") from None
            except (BrokenPipeError, ConnectionResetError):
                payload = None
            except BaseException:
                slot.kill()
                self._forget(slot.token)
                raise
            if payload is not None:
                slot.kill()     # its result is in: a worker that went on ends now
            else:
                ended = self._status(slot.token, 1.0)
                if ended is None:       # it closed its socket and went on: it ends now
                    slot.kill()
                    ended = self._status(slot.token)
        finally:
            slot.close()
        for relay in self._relays:      # what it printed, before its result
            relay.pump()
        if payload is None:
            if ended is None:
                self._forget(slot.token)
                from .errors import ContainerDied
                raise ContainerDied(f"{_what(fn)} ended without returning")
            status, ooms = ended
            if ooms:
                from .errors import ContainerOOMError
                raise ContainerOOMError(f"{_what(fn)} was killed by the OOM killer: the "
                                        "container's memory limit", signal=signal.SIGKILL)
            raise died(status, _what(fn))
        self._forget(slot.token)
        return _wire.decode(payload, self._trusted)

    def _usable(self) -> bool:
        """Whether it takes calls: open, and its zygote alive."""
        return not self._closing and self._zygote.poll() is None

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a fresh container of the pool; its result."""
        return self._run(fn, args, kwargs)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """`call` in the background; cancel() kills a call that has started."""
        return self._submit(fn, args, kwargs)

    def _submit(self, fn: Callable[..., T], args: tuple, kwargs: dict,
                functions: Sequence[Any] = ()) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._closing:
            raise RuntimeError("cannot schedule new calls after shutdown")
        taken: list[_Slot] = []
        lock = threading.Lock()

        def started(slot: _Slot) -> None:
            with lock:
                taken.append(slot)
            if fut.cancelled():
                slot.kill()

        def on_done(f: concurrent.futures.Future[T]) -> None:
            self._futures.discard(f)
            if f.cancelled():
                with lock:
                    for slot in taken:
                        slot.kill()

        self._futures.add(fut)
        fut.add_done_callback(on_done)
        self._dispatch.submit(settle, fut, self._run, fn, args, kwargs, started, functions)
        return fut

    def spawn(self, args: Any, *, stdin: Any = None, stdout: Any = None, stderr: Any = None,
              text: bool | None = None, encoding: str | None = None, errors: str | None = None,
              universal_newlines: bool | None = None, bufsize: int = -1,
              executable: Any = None, shell: bool = False, cwd: str | None = None,
              env: Mapping[str, str] | None = None, user: int | str | None = None,
              pass_fds: Sequence[int] = ()) -> Any:
        """Start a command in a fresh container of the pool, made ahead of it
        and removed once the command ends; a Popen-like `isolate.Process`
        (as `Container.spawn`: `pid` is the container's init, which passes
        signals on; `kill()` ends the container). Takes Container.spawn's
        arguments; the pool's containers run as the pool's user, with stdio
        (no pass_fds)."""
        from . import _premade
        from .container import _argv, _Launch
        if pass_fds:
            raise ValueError("pass_fds: a pool's command gets its stdio only")
        if user is not None and str(user) not in (str(self._cfg.user.uid),
                                                  f"{self._cfg.user.uid}:{self._cfg.user.gid}"):
            raise ValueError(f"user={user!r}: a pool's containers run as the pool's user; "
                             "give user= to Pool")
        commands = self._commands()
        launch = _Launch(self._cfg, cwd, env, None)

        def start(proc: Any, argv: list[bytes], exe: Any, stdio: tuple[int, int, int],
                  fds: Any) -> int:
            made = commands.take()
            try:
                _premade.start(made, launch, argv, exe, stdio)
            except BaseException:
                _premade._end(made)
                raise
            pid, proc._ctl, proc._cgroups = made
            proc._premade = commands
            return pid

        _argv(args, shell)      # an empty or NUL-holding args fails here, not in the thread
        proc = _premade.PoolProcess(start, args, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
                       encoding=encoding, errors=errors, universal_newlines=universal_newlines,
                       bufsize=bufsize, executable=executable, shell=shell)
        self._procs.add(proc)
        return proc

    def run(self, args: Any, *, input: str | bytes | None = None, capture_output: bool = False,
            timeout: float | None = None, check: bool = False, **kwargs: Any) -> Any:
        """A command in a fresh container of the pool, made ahead of it, as
        `subprocess.run` (and `Container.run`): a CompletedProcess, with
        `oom_killed`. On timeout the container is removed and
        `subprocess.TimeoutExpired` raised."""
        from .container import _complete, _popen_kwargs
        proc = self.spawn(args, **_popen_kwargs(input, capture_output, kwargs))
        return _complete(proc, input, timeout, check)

    def _commands(self) -> Any:
        """The containers waiting for commands: made from the first command on."""
        from . import _premade
        with self._cond:
            if self._closing:
                raise RuntimeError("cannot run a command after shutdown")
            if self._premade is None:
                self._premade = _premade.Premade(self._cfg, self._size)
            return self._premade

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[T]:
        """Executor.map: fn over the items, each call in a fresh container, up
        to `size` at once; the results in order, an exception where its item
        is. Runners of the pool's own pull the items: no Future per item,
        which costs the caller a third less per call."""
        if self._closing:
            raise RuntimeError("cannot schedule new calls after shutdown")
        run = _MapRun(self, fn, list(zip(*iterables)))
        run.start(min(self._size, len(run.items)))
        return run.results(None if timeout is None else time.monotonic() + timeout)

    # -- lifecycle --------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with wait, let the started ones finish; then
        remove every container and the zygote."""
        with self._cond:
            if self._zygote.returncode is not None:
                return
            self._closing = True
            self._cond.notify_all()
        if cancel_futures:
            for f in list(self._futures):
                f.cancel()
        self._dispatch.shutdown(wait=wait, cancel_futures=cancel_futures)
        # shutdown, not just close: it wakes the reader blocked in recv (whose
        # call keeps the socket open) and gives the zygote its end of file,
        # on which it kills its workers
        try:
            self._ctl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._ctl.close()
        for proc in list(self._procs):      # commands still running: their containers go
            proc._kill_all()
            proc.wait()
        if self._premade is not None:       # (after them: its reaper takes their inits)
            self._premade.close()
        self._zygote.wait()
        self._reader.join()
        for relay in self._relays:      # workers that left a child holding them: not waited for
            relay.thread.join(0.5)
        while self._ready:
            self._ready.popleft().close()

    close = shutdown

    def __del__(self) -> None:
        if getattr(self, "_zygote", None) is not None and self._zygote.returncode is None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return (f"<Pool {state} size={self._size} ready={len(self._ready)} "
                f"rootfs={self._cfg.rootfs or '<host, read-only>'}>")

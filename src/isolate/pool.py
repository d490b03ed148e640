"""Pool: containers made ahead of time, each serving exactly one function call.

    with Pool(size=4, rootfs="/srv/busybox", network="none") as pool:
        pool.call(parse, data)
        futures = [pool.submit(parse, d) for d in blobs]
        results = list(pool.map(parse, blobs))

A Pool is a `concurrent.futures.Executor`. Each container holds a worker
forked from a small zygote process (not from the caller), waiting for one
call; after it the container is removed and a fresh one takes its place.
Functions and arguments travel by value (pickle, then cloudpickle), so
lambdas and local functions work. With a rootfs, a function can import only
what the image holds or what the pool preloaded (`preload=["json"]`).
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from typing import Any, Callable, TypeVar

from . import _wire
from ._call import died
from ._config import make_config
from .container import Container

__all__ = ["Pool"]

T = TypeVar("T")


class _Slot:
    """A running container with a worker waiting for one call."""

    __slots__ = ("container", "sock", "token")

    def __init__(self, container: Container, sock: socket.socket, token: int):
        self.container = container
        self.sock = sock
        self.token = token


class Pool(concurrent.futures.Executor):
    """`size` containers kept ready, each for one call of a Python function.

    Options: `timeout` (seconds a call may run; then it is killed and
    TimeoutError raised), `preload` (modules the workers import before
    entering their containers), and every option of `Container`.
    """

    def __init__(self, size: int = 4, *, timeout: float | None = None,
                 preload: Iterable[str] = (), **container_options: Any) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size={size!r}: a pool holds at least one container")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be positive")
        preload = [str(m) for m in preload]
        self._cfg = make_config(**container_options)    # bad options fail here
        self._options = container_options
        self._size = size
        self._timeout = timeout
        self._closing = False
        self._cond = threading.Condition()
        self._ready: queue.Queue[_Slot] = queue.Queue()
        self._making = 0
        self._fill_error: BaseException | None = None
        self._ended: dict[int, int] = {}        # token -> wait status, from the zygote
        self._tokens = itertools.count(1)
        self._futures: set[concurrent.futures.Future] = set()
        self._retiring: queue.Queue[_Slot | None] = queue.Queue()
        self._closer_stopped = False

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", "from isolate._zygote import main; main()",
                 str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env)
        finally:
            theirs.close()
        self._ctl = ours
        self._ctl_lock = threading.Lock()
        ours.send(pickle.dumps((self._cfg, preload)))

        self._dispatch = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="isolate-pool")
        self._threads = [threading.Thread(target=self._read_zygote, daemon=True,
                                          name="isolate-pool-zygote"),
                         threading.Thread(target=self._retire_loop, daemon=True,
                                          name="isolate-pool-closer")]
        self._threads += [threading.Thread(target=self._fill, daemon=True,
                                           name=f"isolate-pool-fill-{i}")
                          for i in range(min(2, size))]
        for t in self._threads:
            t.start()

    # -- background: making, retiring, watching ---------------------------

    def _make_slot(self) -> _Slot:
        c = Container(**self._options).start()
        try:
            ours, theirs = socket.socketpair()
            token = next(self._tokens)
            with self._ctl_lock:
                socket.send_fds(self._ctl, [pickle.dumps((token, c._join))],
                                [c._pidfd, theirs.fileno()])
            theirs.close()
        except BaseException:
            c.close()
            raise
        return _Slot(c, ours, token)

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closing and self._ready.qsize() + self._making >= self._size:
                    self._cond.wait()
                if self._closing:
                    return
                self._making += 1
            try:
                slot = self._make_slot()
            except BaseException as e:
                with self._cond:
                    self._making -= 1
                    self._fill_error = e
                    self._cond.notify_all()
                time.sleep(0.1)
                continue
            with self._cond:
                self._making -= 1
                self._fill_error = None
                if not self._closing:
                    self._ready.put(slot)
                    self._cond.notify_all()
                    continue
            self._retire(slot)      # made while shutting down
            return

    def _retire(self, slot: _Slot) -> None:
        with self._cond:
            if not self._closer_stopped:
                self._retiring.put(slot)
                return
        slot.sock.close()           # after shutdown: in the caller's thread
        slot.container.close()

    def _retire_loop(self) -> None:
        while True:
            slot = self._retiring.get()
            if slot is None:
                return
            slot.sock.close()
            slot.container.close()

    def _read_zygote(self) -> None:
        while True:
            try:
                data = self._ctl.recv(4096)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._closing = True
                    self._cond.notify_all()
                return
            kind, token, value = pickle.loads(data)
            if kind == "ended":
                with self._cond:
                    self._ended[token] = value
                    self._cond.notify_all()

    # -- calls ------------------------------------------------------------

    def _take(self) -> _Slot:
        while True:
            if self._closing:
                raise RuntimeError("cannot schedule new calls after shutdown")
            try:
                slot = self._ready.get(timeout=0.05)
            except queue.Empty:
                with self._cond:
                    if self._fill_error is not None and self._ready.empty():
                        raise self._fill_error
                continue
            return slot

    def _status(self, token: int, wait: float = 5.0) -> int | None:
        deadline = time.monotonic() + wait
        with self._cond:
            while token not in self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._ended.pop(token)

    def _run(self, fn: Callable[..., T], args: tuple, kwargs: dict,
             started: Callable[[_Slot], None] | None = None) -> T:
        slot = self._take()
        if started is not None:
            started(slot)
        what = f"the worker running {getattr(fn, '__qualname__', repr(fn))}"
        fd = slot.sock.fileno()
        try:
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            try:
                _wire.send(fd, (fn, args, kwargs))
                payload = _wire.receive(fd, deadline)
            except TimeoutError:
                raise TimeoutError(f"{what} did not return within {self._timeout} s; "
                                   "its container was removed") from None
            except (BrokenPipeError, ConnectionResetError):
                payload = None
        finally:
            self._retire(slot)
            with self._cond:
                self._cond.notify_all()      # now a filler makes the next one
        if payload is None:
            status = self._status(slot.token)
            if status is None:
                from .errors import ContainerDied
                raise ContainerDied(f"{what} ended without returning")
            raise died(status, what)
        return _wire.decode(payload)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a fresh container of the pool; its result."""
        return self._run(fn, args, kwargs)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """`call` in the background; cancel() kills a call that has started."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._closing:
            raise RuntimeError("cannot schedule new calls after shutdown")
        taken: list[_Slot] = []
        lock = threading.Lock()

        def started(slot: _Slot) -> None:
            with lock:
                taken.append(slot)
            if fut.cancelled():
                slot.container.close()

        def on_done(f: concurrent.futures.Future[T]) -> None:
            self._futures.discard(f)
            if f.cancelled():
                with lock:
                    for slot in taken:
                        slot.container.close()

        def work() -> None:
            if fut.cancelled():
                return
            try:
                result = self._run(fn, args, kwargs, started)
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

        self._futures.add(fut)
        fut.add_done_callback(on_done)
        self._dispatch.submit(work)
        return fut

    # -- lifecycle --------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with wait, let the started ones finish, then
        remove every container and the zygote."""
        with self._cond:
            if self._closing and self._zygote.returncode is not None:
                return
            self._closing = True
            self._cond.notify_all()
        if cancel_futures:
            for f in list(self._futures):
                f.cancel()
        self._dispatch.shutdown(wait=wait, cancel_futures=cancel_futures)
        while True:
            try:
                self._retire(self._ready.get_nowait())
            except queue.Empty:
                break
        with self._cond:
            self._closer_stopped = True
            self._retiring.put(None)
        for t in self._threads:
            if t.name != "isolate-pool-zygote":
                t.join()
        while True:          # made while we were stopping
            try:
                slot = self._ready.get_nowait()
            except queue.Empty:
                break
            slot.sock.close()
            slot.container.close()
        # shutdown, not just close: it wakes the reader blocked in recv (whose
        # call keeps the socket open) and gives the zygote its end of file
        try:
            self._ctl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._ctl.close()
        self._zygote.wait()
        self._threads[0].join()

    close = shutdown

    def __del__(self) -> None:
        if getattr(self, "_zygote", None) is not None and self._zygote.returncode is None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return (f"<Pool {state} size={self._size} ready={self._ready.qsize()} "
                f"rootfs={self._cfg.rootfs or '<host, read-only>'}>")

"""Containers made ahead of their command, for Pool.run and Pool.spawn.

Each is what isolate.run makes (namespaces, root, mounts, cgroups, an init
already under the command's ids and security), but its init waits for the
command (isolate-init wait): a message on its control socket with the
command's directory, file, PATH, argv and environment, and its stdin, stdout
and stderr as SCM_RIGHTS. The init then starts it as in run mode, reports
its pid, and its wait status when it ends, and the container ends with it.
So a command in a pool costs what its own fork, exec and wait cost: the rest
was paid before. Threads (one per core, at most _MAKERS) keep `size` of them
ready.
"""
from __future__ import annotations

import collections
import os
import queue
import select
import signal
import subprocess
import threading
from typing import Any

from . import _isolate as _c
from ._config import Config
from .container import Process


#: the most threads that make a pool's containers for commands at once
_MAKERS = 4


class Premade:
    """(init pid, control socket, cgroups) of containers waiting for a command."""

    def __init__(self, cfg: Config, size: int) -> None:
        from .container import _devnull, _Launch
        self._cfg = cfg
        self._size = size
        null = _devnull()
        # the init's own stdio: nothing of the caller's; the command gets its own
        self._spec = _Launch(cfg, None, None, None).spec([b""], b"", (null, null, null), ())
        self._ready: collections.deque[tuple[int, int, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._failure: BaseException | None = None
        self._making = 0        # being made now, by the threads below
        # more than one maker: a container's making is mostly the kernel's
        # (and the C start's, without the GIL), so that several cores share it
        self._threads = [threading.Thread(target=self._fill, daemon=True,
                                          name="isolate-pool-commands")
                         for _ in range(min(size, os.cpu_count() or 1, _MAKERS))]
        for thread in self._threads:
            thread.start()
        # containers whose command has ended: their init reaped here, off the
        # caller's path (its exit takes the namespaces down)
        self._ended: queue.SimpleQueue[tuple[int, int, Any] | None] = queue.SimpleQueue()
        self._reaper = threading.Thread(target=self._reap, daemon=True,
                                        name="isolate-pool-reaper")
        self._reaper.start()

    def _reap(self) -> None:
        while (made := self._ended.get()) is not None:
            pid, ctl, cgroups = made
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            os.close(ctl)
            if cgroups is not None:
                try:
                    cgroups.remove()
                except OSError:
                    pass        # the next start's sweep takes it

    def ended(self, made: tuple[int, int, Any]) -> None:
        """A container whose command has ended, for the reaper."""
        self._ended.put(made)

    def _make(self) -> tuple[int, int, Any]:
        from .container import _start
        pid, pidfd, ctl, cgroups = _start(self._cfg, os.urandom(6).hex(), self._spec, True)
        os.close(pidfd)
        return pid, ctl, cgroups

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (len(self._ready) + self._making >= self._size
                                            or self._failure is not None):
                    self._cond.wait()
                if self._closed:
                    return
                self._making += 1
            try:
                made = self._make()
            except BaseException as e:      # given to the next take()
                with self._cond:
                    self._making -= 1
                    self._failure = e
                    self._cond.notify_all()
                continue
            with self._cond:
                self._making -= 1
                if self._closed:
                    _end(made)
                    return
                self._ready.append(made)
                self._cond.notify_all()

    def take(self) -> tuple[int, int, Any]:
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise RuntimeError("the pool is shut down")
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    self._cond.notify_all()
                    raise failure
                self._cond.wait()
            made = self._ready.popleft()
            self._cond.notify_all()
            return made

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        while self._ready:
            _end(self._ready.popleft())
        self._ended.put(None)
        self._reaper.join()


def _end(made: tuple[int, int, Any]) -> None:
    """A container that got no command: ended, reaped, its cgroups gone."""
    pid, ctl, cgroups = made
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(ctl)
    if cgroups is not None:
        cgroups.remove()


def start(made: tuple[int, int, Any], launch: Any, argv: list[bytes],
          executable: Any, stdio: tuple[int, int, int]) -> None:
    """Give the container its command (launch: a container._Launch, which
    says its file, environment, PATH and directory), and wait for its start:
    raises what the start raised (FileNotFoundError for a command not
    found, as subprocess does)."""
    _, ctl, _ = made
    file, envp, path, cwd = launch.command(argv, executable)
    from .container import _devnull
    fds = [fd if fd >= 0 else _open_or_null(n, _devnull()) for n, fd in enumerate(stdio)]
    from ._core import give
    give(ctl, cwd, file, path, argv, envp, fds)


def _open_or_null(fd: int, null: int) -> int:
    """The caller's own stdio fd n, which the command inherits, if open."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return null


class PoolProcess(Process):
    """A pool's command: its end is the init's report of it (MSG_EXIT on
    the control socket), not the init's own end, which takes the container
    down after it; the pool's reaper waits for that."""

    _premade: Premade

    def _wait(self, timeout):
        if self.returncode is None:
            with self._waitpid_lock:
                try:
                    status = self._ended_early(timeout)
                except TimeoutError:
                    raise subprocess.TimeoutExpired(self.args, timeout) from None
                if status is not None:
                    self.returncode = os.waitstatus_to_exitcode(status)
            if self.returncode is not None:
                return self.returncode
        return super()._wait(timeout)

    def _internal_poll(self, *args, **kwargs):
        if self.returncode is None:
            if not self._waitpid_lock.acquire(False):
                return None
            try:
                try:
                    status = self._ended_early(0.0)
                except TimeoutError:
                    return None         # the command runs
                if status is not None:
                    self.returncode = os.waitstatus_to_exitcode(status)
                    return self.returncode
            finally:
                self._waitpid_lock.release()
        return super()._internal_poll(*args, **kwargs)

    def _ended_early(self, timeout: float | None) -> int | None:
        """The command's wait status, once its init reported it; None where
        the init ended without (killed): its own status tells then."""
        if self._ctl < 0:
            return None
        if timeout is not None and not select.select([self._ctl], [], [], max(0.0, timeout))[0]:
            raise TimeoutError
        try:
            data = os.read(self._ctl, _c.MSG_SIZE)
        except OSError:
            data = b""
        if len(data) != _c.MSG_SIZE:
            return None
        kind, status, *_ = _c.parse_msg(data)
        if kind != _c.MSG_EXIT:
            return None
        cgroups, self._cgroups = self._cgroups, None
        if cgroups is not None:
            self._oom_killed = cgroups.oom_kills() > 0
        self._premade.ended((self.pid, self._ctl, cgroups))
        self._ctl = -1
        return status

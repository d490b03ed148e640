"""The zygote of a Pool: a small Python process that forks one worker into
each container the pool makes, so no worker is a fork of the (possibly huge)
caller. Started by Pool with `python -c`, never by hand.

Protocol on the control socket (SOCK_SEQPACKET, fd given as argv[1]):
  pool -> zygote  first: pickled (Config, preload module names)
                  then:  pickled (token, join flags) with fds [pidfd, worker socket]
  zygote -> pool  pickled (token, pid) once forked; (token, wait status) once reaped
The zygote ends when the pool's end closes. A worker reads one framed task
(fn, args, kwargs) from its socket, runs it, writes the framed outcome, exits.
"""
from __future__ import annotations

import gc
import importlib
import os
import pickle
import selectors
import signal
import socket
import sys


def _rehearse() -> None:
    """Go once through what a call does (unpickle a task, call, pickle the
    outcome), so that the pages it writes are copied now, before the call
    arrives, rather than on its way."""
    from . import _wire
    fn, args, kwargs = pickle.loads(pickle.dumps((len, ((1, 2.0, "x", b"y", None),), {})))
    _wire._outcome(fn, args, kwargs)


def _worker(cfg, sock: socket.socket, err: int) -> None:
    from . import _call, _wire
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fd = sock.detach()
    try:
        if err:
            from .errors import child_error
            raise child_error("setns", err, "container")
        _call.enter_in_child(cfg, fd)
        _rehearse()
        payload = _wire.receive(fd)
        if payload is None:
            os._exit(0)
        fn, args, kwargs = pickle.loads(payload)
    except BaseException as e:
        _wire.run_and_exit(fd, _call._reraise, (e,), {})
    _wire.run_and_exit(fd, fn, args, kwargs)


def main() -> None:
    from . import _isolate as _c
    from . import _wire

    ctl = socket.socket(fileno=int(sys.argv[1]))
    cfg, preload = pickle.loads(ctl.recv(1 << 20))
    _wire.load_pickler()
    for name in preload:
        importlib.import_module(name)
    _rehearse()
    gc.freeze()     # workers' collections then leave the zygote's objects (and pages) alone

    tokens: dict[int, object] = {}
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ)
    sel.register(r, selectors.EVENT_READ)

    while True:
        for key, _ in sel.select():
            if key.fileobj is ctl:
                try:
                    data, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 2)
                except OSError:
                    data, fds = b"", []
                if not data:
                    os._exit(0)         # the pool is gone: its containers go with it
                token, flags = pickle.loads(data)
                pidfd, wfd = fds
                pid, err = _c.fork_into(pidfd, flags)
                if pid == 0:
                    ctl.close()
                    os.close(pidfd)
                    _worker(cfg, socket.socket(fileno=wfd), err)
                os.close(pidfd)
                os.close(wfd)
                tokens[pid] = token
                ctl.send(pickle.dumps(("forked", token, pid)))
            else:
                try:
                    os.read(r, 4096)
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    token = tokens.pop(pid, None)
                    if token is not None:
                        ctl.send(pickle.dumps(("ended", token, status)))


if __name__ == "__main__":
    main()

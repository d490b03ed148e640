"""The zygote of a Pool: a small Python process, started once per pool (not
a fork of the caller), that keeps `size` workers alive, each in its own
fresh container. Started by Pool with `python -c`, never by hand.

The zygote forks with the container's namespace flags; the child walks the
container's plan (csrc/child.c), hands its memory over to a second process
(the worker, which takes the container's restrictions) and execs the
container's init (isolate-init adopt): it reaps what ends (orphans
included), and once the worker has ended, sends the worker's wait status on
a socket to the zygote and exits, which ends the container and everything
left in it. So a function in a pool is not PID 1, as in
isolate.call: the signals it sends itself, abort and orphans behave the
same. A worker reads one framed task (fn, args, kwargs) from its socket and
writes the framed outcome; the zygote then makes another container.

Protocol on the control socket (SOCK_SEQPACKET, fd given as argv[1]):
  pool -> zygote  first: pickled (Config, size, preload module names, trusted)
  zygote -> pool  ("ready", token, pid) with the fd of the worker's socket
                  (pid: the container's init)
                  ("ended", token, (wait status, OOM kills)) once a worker is reaped
                  (the worker's status, or the init's where it gave none)
With limits, each worker's container has its own cgroups, made by the zygote
(their owner) before the fork and removed once the worker is reaped.
The zygote kills its workers and ends when the pool's end closes.
"""
from __future__ import annotations

import errno
import gc
import importlib
import itertools
import os
import pickle
import selectors
import signal
import socket
import sys
import time
from typing import Any

from . import _call, _plan, _wire
from . import _isolate as _c


def _rehearse() -> None:
    """Go once through what a call does (receive a framed task, unpickle it,
    call, pickle and frame the outcome, send it), over a socket pair of its
    own, so that the pages it writes are copied before the call arrives
    rather than on its way."""
    task = _wire.frame(pickle.dumps((len, ((1, 2.0, "x", b"y", None),), {}),
                                    protocol=pickle.HIGHEST_PROTOCOL))
    a, b = socket.socketpair()
    try:
        _wire.write_all(a.fileno(), task)
        fn, args, kwargs = pickle.loads(_wire.receive(b.fileno()))  # type: ignore[arg-type]
        data = _wire._outcome(fn, args, kwargs)
        _wire.write_all(b.fileno(), _wire._HEADER.pack(len(data)) + data)
        _wire.receive(a.fileno())
    finally:
        a.close()
        b.close()


def _preload(names: list[str]) -> list:
    """Import the modules the pool preloads. What they register to run in
    the child of a fork (os.register_at_fork) is returned: the zygote forks
    without Python's fork handlers, and its workers run these themselves."""
    hooks = []
    register = os.register_at_fork

    def recording(**kwargs):
        if kwargs.get("after_in_child") is not None:
            hooks.append(kwargs["after_in_child"])
        register(**kwargs)

    os.register_at_fork = recording
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        os.register_at_fork = register
    return hooks


def _after_fork(hooks: list) -> None:
    """In a worker, what Python's fork handlers would do that matters in a
    fork of a single thread: a random generator of its own, and the handlers
    of preloaded modules (errors reported as Python reports them)."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()
    for hook in hooks:
        try:
            hook()
        except Exception:
            sys.excepthook(*sys.exc_info())


_UNBLOCKED: set[signal.Signals] = set()


def _worker(cfg, fd: int, setup_error: BaseException | None, spec, environ, stdio,
            trusted: bool = False) -> None:
    _c.set_process_name(b"isolate-worker")
    try:
        if setup_error is not None:
            raise setup_error
        _call.enter_in_child(cfg, fd, spec, environ=environ, stdio=stdio)
        signal.pthread_sigmask(signal.SIG_SETMASK, _UNBLOCKED)     # restricted now
        _rehearse()
    except BaseException as e:
        # not entered: what the zygote held (other containers' namespaces
        # and sockets) goes now, as enter() closes it
        _c.close_fds({fd, *stdio})
        # report with the first call, not now: a worker that failed at once
        # would only be replaced by another that fails
        if _wire.receive(fd) is not None:
            _wire.run_and_exit(fd, _call._reraise, (e,), {}, linger=True, trusted=trusted)
        os._exit(125)
    payload = _wire.receive(fd)
    if payload is None:
        os._exit(0)
    try:
        fn, args, kwargs = pickle.loads(payload)
    except BaseException as e:
        _wire.run_and_exit(fd, _call._reraise, (e,), {}, linger=True, trusted=trusted)
    _wire.run_and_exit(fd, fn, args, kwargs, linger=True, trusted=trusted)


def _status(sock: socket.socket) -> int | None:
    """The worker's wait status, as its container's init sent it."""
    status = None
    while True:
        try:
            data = sock.recv(_c.MSG_SIZE)
        except (BlockingIOError, OSError):
            return status
        if not data:
            return status
        kind, value = _c.parse_msg(data)[:2]
        if kind == _c.MSG_EXIT:
            status = value


def main() -> None:
    _c.set_process_name(b"isolate-zygote")
    ctl = socket.socket(fileno=int(sys.argv[1]))
    if len(sys.argv) > 2:
        os.close(int(sys.argv[2]))      # the sealed copy of python we run from
    cfg, size, preload, trusted = pickle.loads(ctl.recv(1 << 20))
    _wire.load_pickler()
    hooks = _preload(preload)
    # Python's fork handlers cost a worker 0.5 ms of CPU; with a single
    # thread (no lock held by another at the fork) they are not needed
    python_hooks = len(os.listdir("/proc/self/task")) > 1
    # built once: in a fresh fork every object made or let go touches pages
    # that must then be copied, in the fork and in the zygote
    plan = _c.Plan(_plan.container_steps(cfg))
    no_plan = _c.Plan(())
    flags = _plan.clone_flags(cfg)
    spec = _call.restrict_spec(cfg)
    stdio = _call._stdio_fds()
    environ = _call.environ_items(cfg)
    _rehearse()
    gc.freeze()     # workers' collections then leave the zygote's objects (and pages) alone

    if cfg.limits:
        from ._cgroups import Cgroups
        flags &= ~_c.NAMESPACE_FLAGS["cgroup"]      # unshared once in its cgroups
    # the init's pid -> (token, pidfd, the socket on which the init reports)
    workers: dict[int, tuple[int, int, socket.socket]] = {}
    cgroups: dict[int, Cgroups] = {}                # by token
    leases: dict[int, Any] = {}                     # by token: on a network
    network = None
    if cfg.network not in ("none", "host"):
        from .network import attached_network
        network = attached_network(cfg.network)
    tokens = itertools.count(1)
    sel = selectors.DefaultSelector()

    def reaped(token: int) -> int:
        """The OOM kills in the worker's container, whose cgroups then go
        (and its lease: the kernel removes its veth with its namespace)."""
        lease = leases.pop(token, None)
        if lease is not None:
            lease.release()
        cg = cgroups.pop(token, None)
        if cg is None:
            return 0
        ooms = cg.oom_kills()
        cg.remove()
        return ooms

    def stop() -> None:
        """The pool is gone: so are its containers."""
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for pid, (token, _, _) in workers.items():
            os.waitpid(pid, 0)
            reaped(token)
        os._exit(0)

    def tell(data: bytes, fds: tuple[int, ...] = ()) -> None:
        try:
            socket.send_fds(ctl, [data], fds) if fds else ctl.send(data)
        except OSError:
            stop()

    def spawn() -> None:
        token = next(tokens)
        ours, theirs = socket.socketpair()
        reports, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        first = None
        name = os.urandom(6).hex()
        failed: BaseException | None = None
        if cfg.limits:
            try:
                cg = cgroups[token] = Cgroups.make(dict(cfg.limits), name)
            except Exception as e:      # the worker reports it with the first call
                failed = e
            else:
                steps = tuple(_plan.op(_c.OP_WRITE, dst=p, data="0") for p in cg.procs())
                if "cgroup" in cfg.namespaces:
                    steps += (_plan.op(_c.OP_UNSHARE, flags=_c.NAMESPACE_FLAGS["cgroup"],
                                       data="cgroup"),)
                first = _c.Plan(steps)
        last = (_c.Plan((_plan.op(_c.OP_HOSTNAME, data=cfg.hostname or name),))
                if "uts" in cfg.namespaces else None)
        # no handler of ours runs in the worker before it is restricted
        if network is not None and failed is None:
            from .network import Lease
            try:
                leases[token] = Lease(network, cfg.hostname or name, (), thread=False)
            except Exception as e:
                failed = e
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        pid = -1
        try:
            if failed is None:
                try:
                    pid, err = _fork(plan, flags, first, last, python_hooks, init_end.fileno(),
                                     leases.get(token))
                except BaseException:
                    reaped(token)       # its cgroups and lease, made for nothing
                    raise
            else:       # no container: a bare child that only reports the error
                pid, err = _c.fork_container(no_plan, 0, signal.SIGKILL,
                                             python_hooks=python_hooks)
                err = failed
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid == 0:
            if not python_hooks:
                _after_fork(hooks)
            ctl.close()
            ours.close()
            reports.close()
            init_end.close()
            fd = theirs.detach()
            _c.exit_after(lambda: _worker(cfg, fd, err, spec, environ, stdio, trusted))
        theirs.close()
        init_end.close()
        reports.setblocking(False)
        pidfd = os.pidfd_open(pid)
        workers[pid] = (token, pidfd, reports)
        sel.register(pidfd, selectors.EVENT_READ, pid)
        tell(pickle.dumps(("ready", token, pid)), (ours.fileno(),))
        ours.close()

    for _ in range(size):
        spawn()
    sel.register(ctl, selectors.EVENT_READ)
    failures = 0
    while True:
        for key, _ in sel.select():
            if key.fileobj is ctl:
                try:
                    data = ctl.recv(1)
                except OSError:
                    data = b""
                if not data:
                    stop()
                continue
            pid = key.data          # a worker's pidfd: it has ended
            token, pidfd, reports = workers.pop(pid)
            sel.unregister(pidfd)
            os.close(pidfd)
            _, status = os.waitpid(pid, 0)
            worker_status = _status(reports)
            reports.close()
            if worker_status is not None:
                status = worker_status
            tell(pickle.dumps(("ended", token, (status, reaped(token)))))
            # a container that cannot be made: slow down, do not spin
            failures = failures + 1 if os.waitstatus_to_exitcode(status) == 125 else 0
            if failures:
                time.sleep(min(0.05 * failures, 1.0))
            spawn()


def _fork(plan: Any, flags: int, first: Any, last: Any, python_hooks: bool, adopt: int,
          lease: Any) -> tuple[int, Any]:
    """fork_container, on a network with the lease's interface: another
    process's container may take its address meanwhile (EEXIST): another."""
    for attempt in range(16):
        try:
            pid, err = _c.fork_container(plan, flags, signal.SIGKILL, first, last, python_hooks,
                                         adopt, lease.netif() if lease is not None else None)
        except OSError as e:
            if lease is None or getattr(e, "step", "") != "network interface" \
                    or e.errno != errno.EEXIST or attempt == 15:
                raise
            lease.pick()
            continue
        if pid and lease is not None:
            lease.started(_netns(pid))
        return pid, err
    raise AssertionError("unreachable")


def _netns(pid: int) -> int:
    """An fd of the network namespace of the container whose init is pid, or
    -1: held by its lease until its pins on the bridge are gone. (Its init
    is our child, not yet reaped: the pid is its, and the namespace, while
    it runs; it runs until its worker ends, which waits for a call.)"""
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


if __name__ == "__main__":
    main()

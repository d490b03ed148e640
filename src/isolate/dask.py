"""Dask: the tasks of a Dask worker, each in a fresh container of an isolate Pool.

    from dask.distributed import Client, LocalCluster
    import dask
    import isolate.dask

    cluster = LocalCluster(n_workers=2, threads_per_worker=2,
                           plugins=[isolate.dask.Isolated(memory="256M", network="none")])
    client = Client(cluster)
    with dask.annotate(executor="isolated"):           # only these tasks
        futures = client.map(untrusted_parse, blobs)
    with dask.annotate(executor="isolated", isolate={"memory": "1G"}):
        big = client.submit(untrusted_parse, huge)     # other options for these

    dask worker tcp://scheduler:8786 --preload isolate.dask --isolate-memory 256M  # every task

The `Isolated` worker plugin gives each worker an executor named "isolated"
(with `default=True`, or `--isolate-all` on the command line, the worker's
default executor too, so that every task is isolated). Each task it runs is
called in a fresh container of a `Pool`, made ahead of time, and removed after
the call: nothing a task does outlives it. The worker's data, retries, work
stealing, spilling and dashboard are Dask's own; a task's dependencies go into
its container, its result comes out as data (see `Pool`: `trusted=True` to
take any picklable result, from tasks you trust).

Cancelling a running task (`client.cancel`, or a worker told to release it)
kills its container; the worker hands the task back to the scheduler, which
runs it again wherever it is still wanted. A task killed by its memory limit
fails with `isolate.ContainerOOMError`; the worker goes on.

Isolation protects the worker from what its tasks do, not from the client
that submits them: a Dask client can run code on its workers directly
(`Client.run`, worker plugins), as Dask documents.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Any, Callable

import click
from distributed.diagnostics.plugin import WorkerPlugin

from . import _dask_task
from ._config import make_config

__all__ = ["EXECUTOR", "Isolated", "IsolatedExecutor", "dask_setup"]

#: the executor's name, for `dask.annotate(executor=...)`
EXECUTOR = "isolated"

#: the annotation that gives a task container options of its own
ANNOTATION = "isolate"

#: what a task's annotation may set: its limits, its time, its names; never
#: what weakens the boundary (privileges, seccomp, capabilities, namespaces,
#: the network, mounts, devices, the user) or how results are decoded
TASK_OPTIONS = frozenset({"memory", "memory_swap", "cpus", "cpu_weight", "pids", "timeout",
                          "hostname", "env", "cwd", "rootfs", "image", "readonly"})

#: pools kept for option sets that tasks asked for, beyond the plugin's own
_MAX_POOLS = 8

#: modules the pools' workers import before entering their containers: what
#: runs the task, and dask's Task, which each container would import again
_PRELOAD = ("isolate._dask_task", "dask._task_spec")


def _options_key(options: dict[str, Any]) -> Any:
    """The options, exactly, as a key: two sets that print alike but differ
    (a Mount's source, say) get pools of their own."""
    import pickle
    items = sorted(options.items(), key=lambda kv: kv[0])
    try:
        return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return repr(items) + f"#{id(options)}"


def _functions(task: Any, limit: int = 64) -> list[Any]:
    """The functions a task will call (its own and its nested tasks'): the
    caller's own modules among theirs travel by value."""
    import functools
    from dask._task_spec import GraphNode
    found: list[Any] = []
    todo, seen = [task], 0
    while todo and seen < limit:
        node = todo.pop()
        seen += 1
        func = getattr(node, "func", None)
        while isinstance(func, functools.partial):
            func = func.func
        if callable(func) and func not in found:
            found.append(func)
        for arg in (*getattr(node, "args", ()), *dict(getattr(node, "kwargs", None) or {}).values()):
            if isinstance(arg, GraphNode):
                todo.append(arg)
    return found


class IsolatedExecutor(concurrent.futures.Executor):
    """A Dask worker's executor whose tasks each run in a fresh container.

    The worker submits `distributed.worker._run_task_simple(task, data,
    delay)`: it runs here, in a thread, with the task itself replaced by a
    call into a container of the pool for its options. Anything else the
    worker submits (its own functions, such as its disk benchmark) runs in
    that thread as with Dask's default executor."""

    def __init__(self, worker: Any, size: int, options: dict[str, Any], *,
                 timeout: float | None, preload: tuple[str, ...], trusted: bool) -> None:
        self._worker = worker
        self._size = size
        self._options = dict(options)
        self._pool_args: dict[str, Any] = {
            "timeout": timeout, "preload": tuple(dict.fromkeys(_PRELOAD + preload)),
            "trusted": trusted}
        # (one thread a task: Dask sends at most nthreads at once, and a few of its own)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=size + 4, thread_name_prefix="isolate-dask")
        self._lock = threading.Lock()
        self._pools: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        self._in_use: collections.Counter[Any] = collections.Counter()
        self._calls: dict[Any, set[concurrent.futures.Future]] = {}
        self._cancelled: set[Any] = set()
        self._closed = False
        self._done(self._pool(self._options)[0])    # the plugin's own: made now, its containers ahead

    # -- pools ------------------------------------------------------------

    def _pool(self, options: dict[str, Any]) -> tuple[Any, Any]:
        """The pool for these options, made on first use, counted in use
        (the caller calls `_done`) so that it is not closed under a call."""
        from .pool import Pool
        key = _options_key(options)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            pool = self._pools.get(key)
            if pool is not None and not pool._usable():
                del self._pools[key]        # its zygote died (the host's OOM killer): a new one
                pool = None
            if pool is not None:
                self._pools.move_to_end(key)
                self._in_use[key] += 1
                return key, pool
        args = {**self._pool_args, **options}       # (a task's timeout for the plugin's)
        made = Pool(self._size, **args)             # bad options raise here
        with self._lock:
            pool = None if self._closed else self._pools.setdefault(key, made)
            if pool is made:
                self._in_use[key] += 1
                own = _options_key(self._options)
                idle = [k for k in self._pools if k not in (key, own) and not self._in_use[k]]
                gone = [self._pools.pop(k) for k in idle[:max(0, len(self._pools) - _MAX_POOLS)]]
            else:
                gone = [made]
                if pool is not None:
                    self._in_use[key] += 1
        for old in gone:
            old.shutdown(wait=False, cancel_futures=True)
        if pool is None:
            raise RuntimeError("cannot schedule new tasks after shutdown")
        return key, pool

    def _done(self, key: Any) -> None:
        with self._lock:
            self._in_use[key] -= 1
            if not self._in_use[key]:
                del self._in_use[key]

    def _task_options(self, key: Any) -> dict[str, Any]:
        ts = self._worker.state.tasks.get(key)
        asked = (ts.annotations or {}).get(ANNOTATION) if ts is not None else None
        if not asked:
            return self._options
        if not isinstance(asked, dict):
            raise TypeError(f"dask.annotate({ANNOTATION}=...) takes a dict of container "
                            f"options, not {type(asked).__name__}")
        refused = sorted(set(asked) - TASK_OPTIONS)
        if refused:
            raise ValueError(f"dask.annotate({ANNOTATION}=...): {', '.join(refused)} "
                             f"{'is' if len(refused) == 1 else 'are'} the worker's choice (the "
                             f"plugin's), not a task's; a task may set {', '.join(sorted(TASK_OPTIONS))}")
        return {**self._options, **asked}

    # -- tasks ------------------------------------------------------------

    def _call(self, task: Any, data: dict) -> Any:
        """Stands in for the task in the worker's thread: runs it in a container."""
        from distributed import Reschedule
        key = getattr(task, "key", None)
        pool_key, pool = self._pool(self._task_options(key))
        try:
            with self._lock:
                if key in self._cancelled:          # released before it began
                    raise Reschedule()
                try:
                    fut = pool._submit(_dask_task.run, (task, data), {}, _functions(task))
                except RuntimeError:
                    if pool._usable():
                        raise
                    raise Reschedule() from None    # its pool died: run it again, with a new one
                self._calls.setdefault(key, set()).add(fut)
            try:
                return fut.result()
            except RuntimeError:
                if pool._usable():
                    raise
                raise Reschedule() from None    # its pool died under it: run it again
            except concurrent.futures.CancelledError:
                if not fut.cancelled():
                    raise
                # its container was killed when the worker released the task:
                # the scheduler runs it again if it is still wanted
                raise Reschedule() from None
            except Exception:
                raise
            except BaseException as e:
                # (from a trusting pool) raised as itself, a SystemExit or a
                # KeyboardInterrupt would end the worker, which re-raises them
                from .errors import RemoteError
                name = f"{type(e).__module__}.{type(e).__qualname__}"
                raise RemoteError(name, str(e), "", "it is not an Exception: raised as itself, "
                                  "it would end the worker") from None
            finally:
                with self._lock:
                    calls = self._calls.get(key)
                    if calls is not None:
                        calls.discard(fut)
                        if not calls:
                            del self._calls[key]
        finally:
            self._done(pool_key)

    def cancel(self, key: Any) -> None:
        """Kill the containers running the task `key` (it was released)."""
        with self._lock:
            self._cancelled.add(key)
            calls = list(self._calls.get(key, ()))
        for fut in calls:
            fut.cancel()

    def resume(self, key: Any) -> None:
        """The task `key` is no longer released."""
        if key in self._cancelled:
            with self._lock:
                self._cancelled.discard(key)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        from distributed.worker import _run_task_simple
        if fn is _run_task_simple:          # a task: into a container, whatever it is
            task = args[0]
            return self._threads.submit(fn, _InContainer(self, task), *args[1:], **kwargs)
        # the worker's own functions (its disk and memory benchmarks), as Dask's default
        # executor runs them
        return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)


class _InContainer:
    """The task as the worker's `_run_task_simple` calls it: task(data)."""

    __slots__ = ("_executor", "_task", "key")

    def __init__(self, executor: IsolatedExecutor, task: Any) -> None:
        self._executor = executor
        self._task = task
        self.key = getattr(task, "key", None)

    def __call__(self, data: dict) -> Any:
        return self._executor._call(self._task, data)

    def __repr__(self) -> str:
        return repr(self._task)


class Isolated(WorkerPlugin):
    """A Dask worker plugin: the worker's tasks in fresh isolate containers.

    Pass it to `LocalCluster(plugins=[...])` or `Worker(plugins=[...])`, or
    register it with `client.register_plugin(Isolated(...))`. It gives each
    worker an executor named "isolated" that tasks select with
    `dask.annotate(executor="isolated")`; `default=True` makes it the
    worker's default executor too, so that every task runs in a container.

    Options: `size` (containers kept ready; the worker's thread count by
    default), `timeout` (seconds a task may run; then its container is
    killed and the task fails with TimeoutError), `preload` (modules the
    containers' processes import before entering them), `trusted` (take any
    picklable result: only for tasks you trust, see `Pool`), and every
    option of `Pool` (`memory`, `cpus`, `pids`, `network`, `rootfs`,
    `mounts`, ...). A task's `dask.annotate(isolate={...})` gives it other
    limits and names (TASK_OPTIONS), and runs it isolated.
    """

    name = "isolate"

    def __init__(self, *, default: bool = False, size: int | None = None,
                 timeout: float | None = None, preload: tuple[str, ...] | list[str] = (),
                 trusted: bool = False, **container_options: Any) -> None:
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"size={size!r}: a pool holds at least one container")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be positive")
        make_config(_subid_maps=False, **container_options)     # bad options fail here, in the client
        self.default = bool(default)
        self.size = size
        self.timeout = timeout
        self.preload = tuple(str(m) for m in preload)
        self.trusted = bool(trusted)
        self.options = dict(container_options)
        self._executors: dict[int, tuple[IsolatedExecutor, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_executors"] = {}
        return state

    def setup(self, worker: Any) -> None:
        executor = IsolatedExecutor(
            worker, self.size or max(1, worker.state.nthreads), self.options,
            timeout=self.timeout, preload=self.preload, trusted=self.trusted)
        previous = worker.executors.get("default")
        worker.executors[EXECUTOR] = executor
        if self.default:
            worker.executors["default"] = executor
        self._executors[id(worker)] = (executor, previous)

    def teardown(self, worker: Any) -> None:
        executor, previous = self._executors.pop(id(worker), (None, None))
        if executor is None:
            return
        if worker.executors.get(EXECUTOR) is executor:
            del worker.executors[EXECUTOR]
        if worker.executors.get("default") is executor and previous is not None:
            worker.executors["default"] = previous
        executor.shutdown(wait=False, cancel_futures=True)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        for executor, _ in self._executors.values():
            self._transition(executor, key, start, finish)

    def _transition(self, executor: IsolatedExecutor, key: Any, start: str, finish: str) -> None:
        worker = executor._worker
        ts = worker.state.tasks.get(key)
        # (`finish` is the state asked for: an executing task asked to be
        # released is "cancelled" until its call returns)
        state = ts.state if ts is not None else finish
        if state == "cancelled":
            if start in ("executing", "long-running", "resumed"):
                executor.cancel(key)
            return
        executor.resume(key)
        if state != "executing" or ts is None or ts.run_spec is None:
            return
        annotations = ts.annotations if ts.annotations is not None else {}
        named = annotations.get("executor")
        if ANNOTATION in annotations and named is None:
            # container options, and no executor named: the task runs isolated,
            # as its options say, not on the worker's threads without them
            annotations["executor"] = named = EXECUTOR
        chosen = worker.executors.get(named or "default")
        if chosen is not executor:
            if self.default or ANNOTATION in annotations:
                # every task isolated, or one with container options: one that names
                # another executor ("offload", "actor", a thread pool of the worker's)
                # fails instead of running here
                ts.run_spec = _Refused(ts.run_spec, named)
            return
        # a coroutine function's task would run on the worker's own event
        # loop, whatever its executor: it goes to the container instead,
        # which runs it on a loop of its own
        if getattr(ts.run_spec, "is_coro", False):
            try:
                ts.run_spec._is_coro = False
            except AttributeError:
                ts.run_spec = _NotCoroutine(ts.run_spec)


class _StandIn:
    """What the worker runs in a task's place: not a coroutine function's
    task (the worker hands it to an executor); the task's own attributes."""

    is_coro = False

    def __init__(self, task: Any) -> None:
        self._task = task

    def __call__(self, data: dict) -> Any:
        return self._task(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def __repr__(self) -> str:
        return repr(self._task)


class _NotCoroutine(_StandIn):
    """A coroutine function's task, as the worker must see it to hand it to
    an executor (where `_dask_task.run` awaits it)."""


class _Refused(_StandIn):
    """A task that asked for an executor other than the isolated one where
    it must run isolated: it fails, naming why."""

    def __init__(self, task: Any, executor: Any) -> None:
        super().__init__(task)
        self._executor = executor

    def __call__(self, data: dict) -> Any:
        raise RuntimeError(f"task {getattr(self._task, 'key', None)!r} asks for executor "
                           f"{self._executor!r}, but it runs isolated: every task on this "
                           "worker does (isolate.dask.Isolated(default=True)), or it has "
                           f"container options (dask.annotate({ANNOTATION}=...))")


@click.command()
@click.option("--isolate-all/--no-isolate-all", default=False,
              help="Run every task in a container (the default executor), not only "
                   "those annotated with executor='isolated'.")
@click.option("--isolate-memory", default=None, help="Memory limit of each task's container (e.g. 256M).")
@click.option("--isolate-cpus", default=None, type=float, help="CPUs each task's container may use.")
@click.option("--isolate-pids", default=None, type=int, help="Processes each task's container may hold.")
@click.option("--isolate-network", default=None,
              help="'none' (the default), 'host', 'bridge' or a network's name.")
@click.option("--isolate-rootfs", default=None, help="Root filesystem of the containers "
                                                      "(default: the host's, read-only).")
@click.option("--isolate-image", default=None,
              help="An image of the store as the containers' root (see isolate load/pull).")
@click.option("--isolate-timeout", default=None, type=float, help="Seconds a task may run.")
@click.option("--isolate-size", default=None, type=int,
              help="Containers kept ready (default: the worker's thread count).")
@click.option("--isolate-preload", multiple=True,
              help="A module the containers import before the task (repeatable).")
@click.option("--isolate-trusted/--no-isolate-trusted", default=False,
              help="Take any picklable result (only for trusted tasks).")
def dask_setup(worker: Any, isolate_all: bool, isolate_memory: str | None,
               isolate_cpus: float | None, isolate_pids: int | None,
               isolate_network: str | None, isolate_rootfs: str | None,
               isolate_image: str | None, isolate_timeout: float | None, isolate_size: int | None,
               isolate_preload: tuple[str, ...], isolate_trusted: bool) -> Any:
    """`dask worker --preload isolate.dask [--isolate-...]`: the plugin on this worker."""
    options = {name: value for name, value in (
        ("memory", isolate_memory), ("cpus", isolate_cpus), ("pids", isolate_pids),
        ("network", isolate_network), ("rootfs", isolate_rootfs), ("image", isolate_image))
        if value is not None}
    plugin = Isolated(default=isolate_all, size=isolate_size, timeout=isolate_timeout,
                      preload=isolate_preload, trusted=isolate_trusted, **options)
    return worker.plugin_add(plugin)

"""pytest plugin (on by install; `-p no:isolate` turns it off).

    def test_tool(container):                     # a fresh Container() per test
        container.run(["id", "-u"])

    @pytest.mark.container(rootfs="/srv/busybox", memory="64M")    # its options
    def test_small(container): ...

    @pytest.mark.isolated(network="none")         # the whole test in a fresh container
    def test_no_network(): ...

`pytest --isolate` runs every test as if marked isolated; `--isolate-timeout S`
fails an isolated test that runs longer. The project, `$HOME` and what the
session runs from under /tmp are copy-on-write inside (Mount.overlay): a test
writes there as it could plainly, and its writes vanish with its container;
`--isolate-share PATH` makes a directory writable for good;
`--isolate-scope module` (or `class`) runs a module's (class's) tests in one
container, sharing their fixtures. An isolated test runs, with its
fixtures, in a fork of the pytest process that joined a fresh container (see
`Container.call`): the host's root read-only, a private /tmp, its own PID
namespace, hostname and no network unless its options say otherwise. Its
reports (pass, fail with the rewritten assertion, skip, xfail, captured
output) come back to the session; a crash, a timeout or an OOM kill is a
failure that says so, and the session goes on. Lines it covers reach
coverage (pytest-cov) in the session.
"""
from __future__ import annotations

import collections
import gc
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate", "containers (isolate)")
    group.addoption("--isolate", action="store_true",
                    help="run every test in a fresh container, as if marked isolated")
    group.addoption("--isolate-timeout", type=float, default=None, metavar="SECONDS",
                    help="fail an isolated test that runs longer than this")
    group.addoption("--isolate-scope", choices=("function", "class", "module"), default="function",
                    help="what one container holds: each test (function, the default), or "
                         "the tests of a module, or of a class (a module's functions outside "
                         "classes together), which then share their class- and module-scoped "
                         "fixtures; with xdist, each group goes to one worker")
    group.addoption("--isolate-share", action="append", default=[], metavar="PATH",
                    help="a directory isolated tests write to for good (bound as it is, not "
                         "copy-on-write); may be given more than once")


def pytest_configure(config: pytest.Config) -> None:
    scope = config.getoption("isolate_scope", "function")
    if scope != "function" and getattr(config.option, "dist", None) == "load":
        # xdist: a module's (or class's) tests to one worker, so that they share a container
        config.option.dist = "loadfile" if scope == "module" else "loadscope"
    config.addinivalue_line("markers", "container(**options): the options of the `container` "
                                       "fixture's Container")
    config.addinivalue_line("markers", "isolated(**options): run the test and its fixtures in "
                                       "a fresh Container(**options) (timeout=S: fail after S)")


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Any:
    """A running `isolate.Container`, removed after the test; options from
    the `container` marker."""
    from .container import Container
    m = request.node.get_closest_marker("container")
    with Container(*(m.args if m else ()), **(m.kwargs if m else {})) as c:
        yield c


def _isolated_options(item: pytest.Item) -> dict[str, Any] | None:
    m = item.get_closest_marker("isolated")
    if m is not None:
        return dict(m.kwargs)
    return {} if item.config.getoption("isolate") else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    options = _isolated_options(item)
    if options is None:
        return None
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    scope = item.config.getoption("isolate_scope")
    if scope == "function":
        reports = _run_isolated(item, options)
    else:
        reports = _grouped(item, nextitem, options, scope)
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    # what the session set up for earlier tests and the next one does not need
    item.session._setupstate.teardown_exact(nextitem)
    return True


def _prepared(item: pytest.Item, options: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The container's options for an isolated test, and its timeout."""
    config = item.config
    options = dict(options)
    timeout = options.pop("timeout", config.getoption("isolate_timeout"))
    options.setdefault("env", dict(os.environ))
    options["mounts"] = [*_writable(config), *options.get("mounts", ())]
    return options, timeout


def _where(config: pytest.Config) -> tuple[str, Any]:
    """In the session, before a fork: its directory and its basetemp (made
    here, as pytest makes it: a fork cannot make it in the container)."""
    factory = getattr(config, "_tmp_path_factory", None)
    return os.getcwd(), (factory.getbasetemp() if factory is not None else None)


def _entered(where: tuple[str, Any]) -> None:
    """In the isolated process, first: the session's directory, and its
    basetemp under the container's own /tmp (where tmp_path goes)."""
    cwd, basetemp = where
    try:
        os.chdir(cwd)
    except OSError:
        pass
    if basetemp is not None:
        os.makedirs(basetemp, exist_ok=True)


def _fork_into(ready: _Ready, c: Any, inside: Any, timeout: float | None,
               extra_fds: Sequence[int] = (), started: Any = None) -> Any:
    """inside() in a fork of the session inside c, made while no container
    is being made (`forking`) and with the session's objects frozen."""
    from ._call import call_in
    lock = ready.forking
    lock.acquire()
    released = False
    # the session's objects frozen for the fork: the test's collections
    # then leave them (and their pages, copied at each write) alone
    gc.freeze()

    def on_start(pid: int) -> None:
        nonlocal released
        released = True
        gc.unfreeze()
        lock.release()
        if started is not None:
            started(pid)

    try:
        return call_in(c, inside, (), {}, timeout, started=on_start,
                       keep_fds=[*_output_fds(), *extra_fds])
    finally:
        if not released:
            gc.unfreeze()
            lock.release()


def _as_failure(item: pytest.Item, e: BaseException, timeout: float | None) -> pytest.TestReport:
    """The failure report for an isolated test whose process did not report."""
    from .errors import ContainerDied, ContainerOOMError, SerializationError
    if isinstance(e, TimeoutError):
        return _failure(item, f"isolated test did not finish within {timeout} s; its "
                              "container was removed")
    if isinstance(e, ContainerOOMError):
        return _failure(item, "isolated test was killed by the OOM killer (the container's "
                              "memory limit)")
    if isinstance(e, ContainerDied):
        how = (f"killed by {signal.Signals(e.signal).name}" if e.signal is not None
               else f"exited with status {e.exitcode}")
        return _failure(item, f"isolated test {item.nodeid} crashed: its process was {how}")
    if isinstance(e, SerializationError):
        return _failure(item, f"isolated test: its reports cannot be brought back: {e} (the "
                              "marker's trusted=True takes them as they are)")
    return _failure(item, f"isolated test: its container could not be made: {e}")


def _not_reported() -> tuple[type[BaseException], ...]:
    """What ends an isolated test's process without its reports."""
    from .errors import IsolateError
    return (TimeoutError, OSError, ValueError, TypeError, IsolateError)


def _received(item: pytest.Item, data: Any, extra: Any) -> list[pytest.TestReport]:
    """In the session: an isolated test's reports, warnings and failed
    subtests, from what its process sent back, checked: reports of this
    test only; anything else fails it."""
    config = item.config
    try:
        warned, failed_subtests = extra
        if type(data) is not list or type(warned) is not list or type(failed_subtests) is not int:
            raise TypeError("not the shape of reports")
        reports = [config.hook.pytest_report_from_serializable(config=config, data=d)
                   for d in data]
        if any(r is None or getattr(r, "nodeid", None) != item.nodeid for r in reports):
            raise ValueError("a report of another test than itself")
        _replay_warnings(item, [w for w in warned if type(w) is tuple and len(w) == 7])
        _failed_subtests(config, item.nodeid, max(0, failed_subtests))
    except Exception as e:
        return [_failure(item, f"isolated test: what its process sent back is not its "
                               f"reports ({type(e).__name__}: {e})")]
    return reports


def _sent(item: pytest.Item, reports: list[Any], warned: list[tuple]) -> tuple:
    """In the isolated process: what goes back of a test, as data."""
    config = item.config
    return ([config.hook.pytest_report_to_serializable(config=config, report=r) for r in reports],
            (warned, _failed_subtests(config, item.nodeid)))


def _run_isolated(item: pytest.Item, options: dict[str, Any]) -> list[pytest.TestReport]:
    config = item.config
    options, timeout = _prepared(item, options)

    # What comes back is data (pytest's serializable reports, made for xdist,
    # and the lines coverage measured), decoded as from any container: a test that runs
    # isolated cannot run code in the session through its reports.
    where = _where(config)

    def inside() -> tuple[list[dict[str, Any]], tuple, dict[str, Any] | None]:
        _entered(where)
        _child_setup(config)
        reports, warned = _run_collecting(item, None)
        return (*_sent(item, reports, warned), _coverage_data())

    ready = _ready(config)
    try:
        c = ready.take(options)
        try:
            data, extra, coverage = _fork_into(ready, c, inside, timeout)
        finally:
            ready.done(c)
    except _not_reported() as e:
        return [_as_failure(item, e, timeout)]
    _merge_coverage(coverage)
    return _received(item, data, extra)


def _group_key(item: pytest.Item | None, scope: str) -> str | None:
    """The node whose tests share a container: the test's class (scope
    class, when it has one) or module."""
    options = None if item is None else _isolated_options(item)
    if item is None or options is None:
        return None
    node = (item.getparent(pytest.Class) if scope == "class" else None) or \
        item.getparent(pytest.Module) or item.parent
    return f"{node.nodeid if node is not None else ''}\0{sorted(options.items())!r}"


class _Group:
    """The isolated tests of one class or module in one container: a fork of
    the session inside it runs them one by one as the session asks (the
    items' indices on a pipe), keeping the fixtures they share, and sends
    each test's reports back as data on another, as it finishes. The last
    test (no next one in the group) tears its fixtures down, and the
    process ends with its coverage data."""

    def __init__(self, item: pytest.Item, options: dict[str, Any], key: str) -> None:
        self.key = key
        self.config = item.config
        self.options, self.timeout = _prepared(item, options)
        self.pid: int | None = None
        self.outcome: list[Any] = []
        self._finished = False
        self._where = _where(self.config)
        self._ready = _ready(self.config)
        self._c = self._ready.take(self.options)
        try:
            self._cmd_r, self._cmd_w = os.pipe()
            self._out_r, self._out_w = os.pipe()
        except OSError:
            self._ready.done(self._c)
            raise
        started = threading.Event()

        def on_start(pid: int) -> None:
            self.pid = pid
            started.set()

        def run() -> None:
            try:
                self.outcome.append(("ok", _fork_into(
                    self._ready, self._c, self._inside, None, [self._cmd_r, self._out_w],
                    on_start)))
            except BaseException as e:
                self.outcome.append(("raise", e))
            finally:
                started.set()
                os.close(self._out_w)   # (the session's copy: the reader sees the end)
                self._out_w = -1

        self._thread = threading.Thread(target=run, daemon=True, name="isolate-pytest-group")
        self._thread.start()
        started.wait()
        os.close(self._cmd_r)

    def _inside(self) -> dict[str, Any] | None:
        """In the container: run the tests the session names, until the last."""
        import struct
        from . import _wire
        os.close(self._cmd_w)
        os.close(self._out_r)
        _entered(self._where)
        _child_setup(self.config)
        items = self.config._isolate_items     # type: ignore[attr-defined]
        while True:
            command = os.read(self._cmd_r, 8)
            if len(command) != 8:
                break
            i, j = struct.unpack("<ii", command)
            item, nextitem = items[i], (items[j] if j >= 0 else None)
            reports, warned = _run_collecting(item, nextitem)
            _wire.write_all(self._out_w, _wire.frame(_wire._outcome(
                lambda: (i, *_sent(item, reports, warned)), (), {}, self._c._trusted)))
            if nextitem is None:
                break
        return _coverage_data()

    def run(self, item: pytest.Item, nextitem: pytest.Item | None) -> list[pytest.TestReport]:
        """The test's reports, run by the group's process; nextitem None: its last."""
        import struct
        from . import _wire
        if self.outcome and self.outcome[0][0] == "raise":
            return [_as_failure(item, self.outcome[0][1], self.timeout)]
        index = self.config._isolate_index     # type: ignore[attr-defined]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        mine = index[item.nodeid]
        try:
            os.write(self._cmd_w, struct.pack("<ii", mine,
                                              -1 if nextitem is None else index[nextitem.nodeid]))
            payload = _wire.receive(self._out_r, deadline, _wire.result_limit(self._c._cfg.limits))
        except (TimeoutError, _wire.SerializationError) as e:
            self.kill()
            return [_as_failure(item, e, self.timeout)]
        except OSError:
            payload = None
        if payload is None:             # the process ended without reporting this test
            self.finish()
            error = self.outcome[0][1] if self.outcome and self.outcome[0][0] == "raise" else None
            if isinstance(error, pytest.exit.Exception):
                raise error             # pytest.exit() in a test: the session ends, as plainly
            from .errors import ContainerDied
            return [_as_failure(item, error or ContainerDied(
                f"isolated test {item.nodeid}: its process ended", exitcode=0), self.timeout)]
        try:
            sent = _wire.decode(payload, self._c._trusted)
        except _not_reported() as e:
            self.kill()
            return [_as_failure(item, e, self.timeout)]
        if type(sent) is not tuple or len(sent) != 3 or sent[0] != mine:
            # a frame it was not asked for (a test that wrote one of its own, or a
            # child it forked that went on): what follows cannot be trusted to match
            self.kill()
            return [_failure(item, "isolated test: its group's process sent what it was not "
                                   "asked for; the group was ended")]
        return _received(item, sent[1], sent[2])

    def kill(self) -> None:
        if self.pid is not None:
            from ._call import _kill_session
            _kill_session(self.pid)
        self.finish()

    def finish(self) -> None:
        """Wait for the group's process to end (killed, if it does not within
        a few seconds); its container goes back."""
        if self._finished:
            return
        self._finished = True
        if self._cmd_w >= 0:
            os.close(self._cmd_w)
            self._cmd_w = -1
        if self._out_r >= 0:
            os.close(self._out_r)       # (a process blocked writing to it goes on)
            self._out_r = -1
        self._thread.join(5)
        if self._thread.is_alive() and self.pid is not None:
            from ._call import _kill_session
            _kill_session(self.pid)
        self._thread.join()
        self._ready.done(self._c)
        if self.outcome and self.outcome[0][0] == "ok":
            _merge_coverage(self.outcome[0][1])


def _grouped(item: pytest.Item, nextitem: pytest.Item | None, options: dict[str, Any],
             scope: str) -> list[pytest.TestReport]:
    """An isolated test run by its class's or module's group (--isolate-scope)."""
    config = item.config
    index: dict[str, int] | None = getattr(config, "_isolate_index", None)
    if index is None:
        items = config._isolate_items = list(item.session.items)   # type: ignore[attr-defined]
        index = config._isolate_index = {                      # type: ignore[attr-defined]
            it.nodeid: n for n, it in enumerate(items)}
    key = _group_key(item, scope)
    group: _Group | None = getattr(config, "_isolate_group", None)
    if group is not None and group.key != key:
        group.kill()
        group = None
    if group is None:
        try:
            group = _Group(item, options, key or "")
        except _not_reported() as e:
            return [_as_failure(item, e, None)]
        config._isolate_group = group                  # type: ignore[attr-defined]
    last = nextitem is None or _group_key(nextitem, scope) != key or nextitem.nodeid not in index
    reports = group.run(item, None if last else nextitem)
    if last or group._finished:
        group.finish()
        config._isolate_group = None                   # type: ignore[attr-defined]
    return reports


class _Ready:
    """Containers made ahead for isolated tests, off their path: a thread
    keeps two ready for the options the last test asked for, and removes
    those used. A fork for a test waits until no container is being made
    (`forking`), so that it never copies a thread's half-done work."""

    def __init__(self) -> None:
        self.forking = threading.Lock()
        self._cond = threading.Condition()
        self._key: str | None = None
        self._options: dict[str, Any] = {}
        self._ready: collections.deque[Any] = collections.deque()
        self._used: list[Any] = []
        self._closed = False
        self._thread = threading.Thread(target=self._work, daemon=True,
                                        name="isolate-pytest-containers")
        self._thread.start()

    def take(self, options: dict[str, Any]) -> Any:
        from .container import Container
        key = repr(sorted(options.items()))
        with self._cond:
            if key != self._key:        # other options: what was made goes
                self._used += self._ready
                self._ready.clear()
                self._key, self._options = key, dict(options)
            c = self._ready.popleft() if self._ready else None
            self._cond.notify_all()
        if c is None:
            with self.forking:
                c = Container(**options)
                c.start()
        return c

    def done(self, c: Any) -> None:
        with self._cond:
            self._used.append(c)
            self._cond.notify_all()

    def _work(self) -> None:
        from .container import Container
        while True:
            with self._cond:
                while not self._closed and not self._used and (
                        self._key is None or len(self._ready) >= 2):
                    self._cond.wait()
                if self._closed:
                    return
                used, self._used = self._used, []
                key, options = self._key, self._options
            for c in used:
                c.close()
            if not used:
                try:
                    with self.forking:
                        c = Container(**options)
                        c.start()
                except Exception:       # the test's own start reports it
                    with self._cond:
                        self._key = None
                    continue
                with self._cond:
                    if key == self._key and not self._closed:
                        self._ready.append(c)
                        c = None
                if c is not None:
                    c.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        for c in (*self._ready, *self._used):
            c.close()
        self._ready.clear()
        self._used.clear()


def _ready(config: pytest.Config) -> _Ready:
    ready = getattr(config, "_isolate_ready", None)
    if ready is None:
        ready = config._isolate_ready = _Ready()     # type: ignore[attr-defined]
    return ready


def pytest_unconfigure(config: pytest.Config) -> None:
    group = getattr(config, "_isolate_group", None)
    if group is not None:           # the session stopped in the middle of a group (-x)
        config._isolate_group = None                   # type: ignore[attr-defined]
        group.kill()
    ready = getattr(config, "_isolate_ready", None)
    if ready is not None:
        ready.close()


def _writable(config: pytest.Config) -> list[Any]:
    """What an isolated test may write as it could plainly, its writes
    vanishing with its container: the project, $HOME, and what the session
    runs from under /tmp (which is the container's own), copy-on-write;
    --isolate-share paths bound as they are."""
    from .mounts import Mount
    cached = getattr(config, "_isolate_writable", None)
    if cached is not None:
        return cached
    wanted = [str(config.rootpath), os.getcwd(), os.path.expanduser("~")]
    wanted += [p for p in (sys.prefix, *sys.path) if p and _under(os.path.realpath(p), "/tmp")]
    shared = [os.path.realpath(p) for p in config.getoption("isolate_share")]
    paths: list[str] = []
    for p in sorted({os.path.realpath(p) for p in wanted if os.path.isdir(p)}):
        if p == "/" or any(_under(p, q) for q in paths) or any(_under(p, q) for q in shared):
            continue
        if any(c in p for c in ",:\\"):
            continue            # overlayfs cannot take it: read-only, as before
        paths.append(p)
    mounts = [Mount.overlay(p) for p in paths] + [Mount.bind(p) for p in shared]
    config._isolate_writable = mounts   # type: ignore[attr-defined]
    return mounts


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


class _Ihook:
    """A node's hooks in an isolated test's process, but for its reports,
    which are kept to go back to the session (subtests log theirs in the
    middle of the call) as well as shown to the process's plugins but the
    terminal."""

    def __init__(self, real: Any, logreport: Any) -> None:
        self._real = real
        self.pytest_runtest_logreport = logreport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _child_setup(config: pytest.Config) -> None:
    """In an isolated process, once: what reports outside it (xdist's
    channel to its controller, whose worker runs from source sent over it:
    no module to tell it by; reportlog's file) goes; the terminal keeps
    what else it does here (assertion messages ask it for its width), but
    shows no report. Every node's hooks log reports into the list that
    `_run_collecting` gives them, and warnings are recorded as data."""
    from _pytest import nodes
    pm = config.pluginmanager
    for plugin in [p for p in pm.get_plugins()
                   if type(p).__name__ == "WorkerInteractor"
                   or type(p).__module__.split(".")[0] in ("xdist", "pytest_reportlog")]:
        pm.unregister(plugin)
    terminal = pm.get_plugin("terminalreporter")
    forward = pm.subset_hook_caller("pytest_runtest_logreport",
                                    [terminal] if terminal is not None else [])
    collected: dict[str, Any] = {"reports": []}

    def logreport(report: Any) -> None:
        collected["reports"].append(report)
        forward(report=report)

    real = nodes.Node.ihook
    nodes.Node.ihook = property(lambda self: _Ihook(real.fget(self), logreport))  # type: ignore
    recorder = _Recorded([])
    pm.register(recorder, "isolate-warnings")
    recorder.on = True
    config._isolate_child = (collected, recorder)      # type: ignore[attr-defined]


def _run_collecting(item: pytest.Item, nextitem: pytest.Item | None) -> tuple[list[Any], list[tuple]]:
    """In the isolated test's process: run the test as pytest's protocol
    does, logging its reports (and its subtests') and recording its
    warnings, all kept to travel back as data."""
    from _pytest.runner import runtestprotocol
    from _pytest.warnings import catch_warnings_for_item
    collected, recorder = item.config._isolate_child   # type: ignore[attr-defined]
    reports: list[Any] = []
    warned: list[tuple] = []
    collected["reports"], recorder.into = reports, warned
    with catch_warnings_for_item(item.config, ihook=item.ihook, when="runtest", item=item):
        runtestprotocol(item, log=True, nextitem=nextitem)
    return reports, warned


class _Recorded:
    """The warnings a test raised, as data (the session shows them)."""

    def __init__(self, into: list[tuple]) -> None:
        self.into = into
        self.on = False     # registering replays the session's earlier warnings: not ours

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str) -> None:
        if not self.on:
            return
        m = warning_message
        self.into.append((str(m.message), m.category.__module__, m.category.__qualname__,
                          str(m.filename), int(m.lineno), when, nodeid))


def _replay_warnings(item: pytest.Item, warned: list[tuple]) -> None:
    """In the session: the isolated test's warnings, as if raised here. A
    category is one the session has loaded already, else UserWarning."""
    import warnings
    for text, module, qualname, filename, lineno, when, nodeid in warned:
        category: Any = UserWarning
        found: Any = sys.modules.get(module)
        for part in qualname.split(".") if found is not None else ():
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, Warning):
            category = found
        try:
            message = category(text)
        except Exception:
            message, category = UserWarning(text), UserWarning
        m = warnings.WarningMessage(message, category, filename, lineno)
        item.ihook.pytest_warning_recorded.call_historic(
            kwargs=dict(warning_message=m, when=when, nodeid=nodeid, location=None))


def _failed_subtests(config: pytest.Config, nodeid: str, add: int = 0) -> int:
    """How many of a test's subtests failed, as pytest counts them where
    they run; with add, counted in the session too, where the test's own
    report is judged ("contains N failed subtests")."""
    try:
        from _pytest.subtests import failed_subtests_key
    except ImportError:
        return 0
    counts = config.stash.get(failed_subtests_key, None)
    if counts is None:
        return 0
    if add:
        counts[nodeid] += add
    return int(counts.get(nodeid, 0))


def _output_fds() -> list[int]:
    """The fds pytest's capturing and reporting hold: files, pipes and
    terminals (never a directory or a socket, which could reach outside)."""
    keep = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            keep.append(fd)
    return keep


def _failure(item: pytest.Item, message: str) -> pytest.TestReport:
    return pytest.TestReport(item.nodeid, item.location, {}, "failed", message, "call",
                             user_properties=list(item.user_properties))


def _coverage_data() -> dict[str, Any] | None:
    """What coverage measured in this process, to travel back (a fork ends
    with os._exit, which would lose it), as plain data: the lines (or arcs)
    of each file. Only where the session measures: an import of coverage
    would cost every test tens of milliseconds."""
    coverage = sys.modules.get("coverage")
    if coverage is None:
        return None
    cov = coverage.Coverage.current()
    if cov is None:
        return None
    data = cov.get_data()
    arcs = data.has_arcs()
    files = {}
    for path in data.measured_files():
        got = data.arcs(path) if arcs else data.lines(path)
        files[path] = [tuple(a) for a in got] if arcs else list(got or ())
    return {"arcs": arcs, "files": files}


def _merge_coverage(data: Any) -> None:
    """In the session: an isolated process's lines (or arcs) into the
    session's coverage data, taken as data only (coverage's own serialized
    form is an SQL script, which would run in the session)."""
    if data is None:
        return
    import coverage
    cov = coverage.Coverage.current()
    if cov is None or type(data) is not dict or type(data.get("files")) is not dict:
        return
    arcs = data.get("arcs") is True
    ours = cov.get_data()
    if ours.has_arcs() != arcs and ours.measured_files():
        return
    files: dict[str, Any] = {}
    for path, got in data["files"].items():
        if type(path) is not str or type(got) is not list:
            continue
        if arcs:
            files[path] = [a for a in got if type(a) is tuple and len(a) == 2
                           and all(type(n) is int for n in a)]
        else:
            files[path] = [n for n in got if type(n) is int]
    if arcs:
        ours.add_arcs(files)
    else:
        ours.add_lines(files)

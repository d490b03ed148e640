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
`--isolate-share PATH` makes a directory writable for good. An isolated test runs, with its
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
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate", "containers (isolate)")
    group.addoption("--isolate", action="store_true",
                    help="run every test in a fresh container, as if marked isolated")
    group.addoption("--isolate-timeout", type=float, default=None, metavar="SECONDS",
                    help="fail an isolated test that runs longer than this")
    group.addoption("--isolate-share", action="append", default=[], metavar="PATH",
                    help="a directory isolated tests write to for good (bound as it is, not "
                         "copy-on-write); may be given more than once")


def pytest_configure(config: pytest.Config) -> None:
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
    for report in _run_isolated(item, options):
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    # what the session set up for earlier tests and the next one does not need
    item.session._setupstate.teardown_exact(nextitem)
    return True


def _run_isolated(item: pytest.Item, options: dict[str, Any]) -> list[pytest.TestReport]:
    from ._call import call_in
    from .errors import ContainerDied, ContainerOOMError, IsolateError, SerializationError

    config = item.config
    timeout = options.pop("timeout", config.getoption("isolate_timeout"))
    options.setdefault("env", dict(os.environ))
    options["mounts"] = [*_writable(config), *options.get("mounts", ())]
    cwd = os.getcwd()
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = factory.getbasetemp() if factory is not None else None

    # What comes back is data (pytest's serializable reports, made for xdist,
    # and coverage's bytes), decoded as from any container: a test that runs
    # isolated cannot run code in the session through its reports.
    def inside() -> tuple[list[dict[str, Any]], tuple, bytes | None]:
        try:
            os.chdir(cwd)
        except OSError:
            pass
        if basetemp is not None:        # /tmp is the container's own: tmp_path goes there
            os.makedirs(basetemp, exist_ok=True)
        reports, warned = _run_collecting(item)
        return ([config.hook.pytest_report_to_serializable(config=config, report=r)
                 for r in reports], (warned, _failed_subtests(config, item.nodeid)),
                _coverage_data())

    ready = _ready(config)
    try:
        c = ready.take(options)
        try:
            ready.forking.acquire()     # no container is being made at the fork
            released = False
            # the session's objects frozen for the fork: the test's collections
            # then leave them (and their pages, copied at each write) alone
            gc.freeze()

            def started(pid: int) -> None:
                nonlocal released
                released = True
                gc.unfreeze()
                ready.forking.release()

            try:
                data, extra, coverage = call_in(c, inside, (), {}, timeout, started=started,
                                                keep_fds=_output_fds())
            finally:
                if not released:
                    gc.unfreeze()
                    ready.forking.release()
        finally:
            ready.done(c)
    except TimeoutError:
        return [_failure(item, f"isolated test did not finish within {timeout} s; its "
                               "container was removed")]
    except ContainerOOMError:
        return [_failure(item, "isolated test was killed by the OOM killer (the container's "
                               "memory limit)")]
    except ContainerDied as e:
        how = (f"killed by {signal.Signals(e.signal).name}" if e.signal is not None
               else f"exited with status {e.exitcode}")
        return [_failure(item, f"isolated test {item.nodeid} crashed: its process was {how}")]
    except SerializationError as e:
        return [_failure(item, f"isolated test: its reports cannot be brought back: {e} (the "
                               "marker's trusted=True takes them as they are)")]
    except (IsolateError, ValueError, TypeError, OSError) as e:
        return [_failure(item, f"isolated test: its container could not be made: {e}")]
    _merge_coverage(coverage)
    warned, failed_subtests = extra
    _replay_warnings(item, warned)
    _failed_subtests(config, item.nodeid, failed_subtests)
    return [config.hook.pytest_report_from_serializable(config=config, data=d) for d in data]


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


def _run_collecting(item: pytest.Item) -> tuple[list[Any], list[tuple]]:
    """In the isolated test's process: run the test as pytest's protocol
    does, logging its reports (and its subtests') and recording its
    warnings, all kept to travel back as data."""
    from _pytest import nodes
    from _pytest.runner import runtestprotocol
    config = item.config
    pm = config.pluginmanager
    # what reports outside this process: xdist's channel to its controller
    # (its worker runs from source sent over it: no module to tell it by),
    # reportlog's file: gone; the terminal keeps what else it does here
    # (assertion messages ask it for its width), but shows no report
    for plugin in [p for p in pm.get_plugins()
                   if type(p).__name__ == "WorkerInteractor"
                   or type(p).__module__.split(".")[0] in ("xdist", "pytest_reportlog")]:
        pm.unregister(plugin)
    terminal = pm.get_plugin("terminalreporter")
    forward = pm.subset_hook_caller("pytest_runtest_logreport",
                                    [terminal] if terminal is not None else [])
    reports: list[Any] = []

    def logreport(report: Any) -> None:
        reports.append(report)
        forward(report=report)

    real = nodes.Node.ihook
    nodes.Node.ihook = property(lambda self: _Ihook(real.fget(self), logreport))  # type: ignore
    warned: list[tuple] = []
    recorder = _Recorded(warned)
    pm.register(recorder, "isolate-warnings")
    recorder.on = True
    from _pytest.warnings import catch_warnings_for_item
    with catch_warnings_for_item(config, ihook=item.ihook, when="runtest", item=item):
        runtestprotocol(item, log=True, nextitem=None)
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


def _coverage_data() -> bytes | None:
    """What coverage measured in this process, to travel back (a fork ends
    with os._exit, which would lose it). Only where the session measures:
    an import of coverage would cost every test tens of milliseconds."""
    coverage = sys.modules.get("coverage")
    if coverage is None:
        return None
    cov = coverage.Coverage.current()
    return None if cov is None else cov.get_data().dumps()


def _merge_coverage(data: bytes | None) -> None:
    if data is None:
        return
    import coverage
    cov = coverage.Coverage.current()
    if cov is None:
        return
    theirs = coverage.CoverageData(no_disk=True)
    theirs.loads(data)
    cov.get_data().update(theirs)

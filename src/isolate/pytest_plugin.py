"""pytest plugin (on by install; `-p no:isolate` turns it off).

    def test_tool(container):                     # a fresh Container() per test
        container.run(["id", "-u"])

    @pytest.mark.container(rootfs="/srv/busybox", memory="64M")    # its options
    def test_small(container): ...

    @pytest.mark.isolated(network="none")         # the whole test in a fresh container
    def test_no_network(): ...

`pytest --isolate` runs every test as if marked isolated; `--isolate-timeout S`
fails an isolated test that runs longer. An isolated test runs, with its
fixtures, in a fork of the pytest process that joined a fresh container (see
`Container.call`): the host's root read-only, a private /tmp, its own PID
namespace, hostname and no network unless its options say otherwise. Its
reports (pass, fail with the rewritten assertion, skip, xfail, captured
output) come back to the session; a crash, a timeout or an OOM kill is a
failure that says so, and the session goes on. Lines it covers reach
coverage (pytest-cov) in the session.
"""
from __future__ import annotations

import os
import signal
import stat
import sys
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate", "containers (isolate)")
    group.addoption("--isolate", action="store_true",
                    help="run every test in a fresh container, as if marked isolated")
    group.addoption("--isolate-timeout", type=float, default=None, metavar="SECONDS",
                    help="fail an isolated test that runs longer than this")


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
    from _pytest.runner import runtestprotocol

    from ._call import call_in
    from .container import Container
    from .errors import ContainerDied, ContainerOOMError, IsolateError, SerializationError

    config = item.config
    timeout = options.pop("timeout", config.getoption("isolate_timeout"))
    options.setdefault("env", dict(os.environ))
    cwd = os.getcwd()
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = factory.getbasetemp() if factory is not None else None

    # What comes back is data (pytest's serializable reports, made for xdist,
    # and coverage's bytes), decoded as from any container: a test that runs
    # isolated cannot run code in the session through its reports.
    def inside() -> tuple[list[dict[str, Any]], bytes | None]:
        try:
            os.chdir(cwd)
        except OSError:
            pass
        if basetemp is not None:        # /tmp is the container's own: tmp_path goes there
            os.makedirs(basetemp, exist_ok=True)
        reports = runtestprotocol(item, log=False, nextitem=None)
        return ([config.hook.pytest_report_to_serializable(config=config, report=r)
                 for r in reports], _coverage_data())

    try:
        with Container(**options) as c:
            data, coverage = call_in(c, inside, (), {}, timeout, keep_fds=_output_fds())
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
    return [config.hook.pytest_report_from_serializable(config=config, data=d) for d in data]


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

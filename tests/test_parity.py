"""A function behaves the same in `Pool.call`, in a fresh container
(`isolate.call`, `@isolated`) and in a running one (`Container.call`): the
same PID semantics (it is not the container's init), signals, errors, exit
codes, reaping, output and timeouts. One table, run through the three."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import isolate
from isolate import Container, Pool
from isolate._call import call_in

TIMEOUT = 2.0


def returns():
    return {"answer": 42}


def raises():
    raise ValueError("bad input")


def is_init():
    import os
    return os.getpid() == 1


def kills_itself():
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def terminates_itself():
    import os
    import signal
    os.kill(os.getpid(), signal.SIGTERM)


def aborts():
    import os
    os.abort()


def exits_3():
    import os
    os._exit(3)


def system_exit_3():
    raise SystemExit(3)


def exits_4_by_the_builtin():
    """exit() and quit() are site's: there in a pool's workers too."""
    quit if callable(quit) else None  # noqa: B018
    exit(4)


def segfaults():
    import ctypes
    ctypes.string_at(0)


def orphans_are_reaped():
    """A grandchild orphaned by its parent, then ended: a zombie unless the
    container's init reaps it."""
    import os
    import time
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(-1, 0)
    time.sleep(0.8)
    zombies = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    zombies += f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                pass
    return zombies


def prints():
    print("parity-stdout-marker")
    print("parity-stderr-marker", file=sys.stderr)
    return None


def sleeps():
    import time
    time.sleep(30)


def leaves_a_child(marker):
    import subprocess
    subprocess.Popen(["sh", "-c", f"sleep 1000; : {marker}"])
    return "left"


def signal_handler_runs():
    import os
    import signal
    got = []
    signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
    os.kill(os.getpid(), signal.SIGUSR1)
    return got


BEHAVIOURS = [returns, raises, is_init, kills_itself, terminates_itself, aborts, exits_3,
              system_exit_3, exits_4_by_the_builtin, segfaults, orphans_are_reaped, prints, sleeps, signal_handler_runs]


@pytest.fixture()
def pool():
    with Pool(size=2, timeout=TIMEOUT) as p:
        yield p


@pytest.fixture()
def container():
    with Container() as c:
        yield c


def _outcome(run, fn, *args):
    try:
        return ("value", run(fn, *args))
    except BaseException as e:      # noqa: B902 - SystemExit is an outcome too
        what = str(e) if isinstance(e, ValueError) else ""
        return ("raised", type(e).__name__, getattr(e, "signal", None),
                getattr(e, "exitcode", None), what)


def _runners(pool, container):
    return {
        "Pool.call": lambda fn, *a: pool.call(fn, *a),
        "isolated": lambda fn, *a: isolate.isolated(timeout=TIMEOUT)(fn)(*a),
        "Container.call": lambda fn, *a: call_in(container, fn, a, {}, TIMEOUT),
    }


@pytest.mark.parametrize("fn", BEHAVIOURS, ids=[f.__name__ for f in BEHAVIOURS])
def test_the_same_outcome_in_a_pool_a_fresh_container_and_a_running_one(fn, pool, container,
                                                                       capfd):
    outcomes = {}
    output = {}
    for how, run in _runners(pool, container).items():
        outcomes[how] = _outcome(run, fn)
        out, err = capfd.readouterr()
        output[how] = ("parity-stdout-marker" in out, "parity-stderr-marker" in err)
    first = outcomes["Pool.call"]
    assert all(o == first for o in outcomes.values()), outcomes
    assert len(set(output.values())) == 1, output
    outcome = outcomes["Pool.call"]
    expected = {
        returns: ("value", {"answer": 42}),
        raises: ("raised", "ValueError", None, None, "bad input"),
        is_init: ("value", False),
        kills_itself: ("raised", "ContainerDied", signal.SIGKILL, None, ""),
        terminates_itself: ("raised", "ContainerDied", signal.SIGTERM, None, ""),
        aborts: ("raised", "ContainerDied", signal.SIGABRT, None, ""),
        exits_3: ("raised", "ContainerDied", None, 3, ""),
        segfaults: ("raised", "ContainerDied", signal.SIGSEGV, None, ""),
        orphans_are_reaped: ("value", 0),
        prints: ("value", None),
        sleeps: ("raised", "TimeoutError", None, None, ""),
        signal_handler_runs: ("value", [1]),
    }
    if fn in expected:
        assert outcome == expected[fn]
    if fn is prints:
        assert output["Pool.call"] == (True, True)


def _running(marker: str) -> list[str]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(name)
            except OSError:
                pass
    return found


def test_what_a_function_left_running_is_gone_when_it_returns(pool, container):
    for how, run in _runners(pool, container).items():
        marker = f"parity-left-{os.urandom(4).hex()}"
        assert run(leaves_a_child, marker) == "left", how
        deadline = time.monotonic() + 5
        while _running(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(marker) == [], how

"""The pytest plugin, driven through pytester in a separate pytest process."""
from __future__ import annotations

import os
import shutil
import socket

import pytest

SUITE = '''
import errno, os, signal, socket, time
import pytest

HOST = {host!r}

@pytest.fixture
def answer():
    yield 42

@pytest.fixture(scope="session")
def shared():
    return {{"k": [1, 2]}}

@pytest.mark.isolated
def test_passes_inside(answer, shared, tmp_path):
    assert socket.gethostname() != HOST
    assert answer == 42 and shared == {{"k": [1, 2]}}
    (tmp_path / "f").write_text("x")            # tmp works
    with open("/tmp/private", "w") as f:        # the container's own /tmp
        f.write("y")

@pytest.mark.isolated
def test_fails_inside():
    x = 2
    print("said inside")
    assert x == 3

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

@pytest.mark.isolated
def test_errors_inside(broken):
    pass

@pytest.mark.isolated
def test_skips_inside():
    pytest.skip("not here")

@pytest.mark.isolated
@pytest.mark.xfail(reason="known")
def test_xfails_inside():
    assert False

@pytest.mark.isolated
def test_crashes_inside():
    os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.isolated(timeout=1)
def test_hangs_inside():
    time.sleep(60)

@pytest.mark.isolated(memory="64M")
def test_oom_inside():
    bytearray(400 << 20)

@pytest.mark.isolated
def test_cannot_write_outside():
    with pytest.raises(OSError) as e:
        open("/etc/isolate-plugin-was-here", "w")
    assert e.value.errno == errno.EROFS

@pytest.mark.isolated
def test_no_network():
    with open("/proc/net/dev") as f:
        assert [l.split(":")[0].strip() for l in f.readlines()[2:]] == ["lo"]
    with pytest.raises(OSError):
        socket.create_connection(("10.0.0.1", 80), timeout=1)

def test_after_all_that_the_session_goes_on():
    assert not os.path.exists("/tmp/private") or open("/tmp/private").read() != "y"
'''


def test_isolated_tests_report_like_normal_ones(pytester):
    pytester.makepyfile(test_suite=SUITE.format(host=socket.gethostname()))
    r = pytester.runpytest_subprocess("-v", "-rA")
    out = r.stdout.str()
    r.assert_outcomes(passed=4, failed=4, errors=1, skipped=1, xfailed=1)
    assert "assert 2 == 3" in out                      # pytest's rewritten assertion
    assert "said inside" in out                        # captured output
    assert "fixture broke" in out
    assert "crashed" in out and "SIGKILL" in out
    assert "_run_isolated" not in out                  # the test is named, not the plugin
    assert "did not finish within 1" in out
    assert "OOM killer" in out
    assert not os.path.exists("/etc/isolate-plugin-was-here")


def test_container_fixture_and_marker(pytester, rootfs):
    pytester.makepyfile(f'''
import pytest

def test_plain(container):
    r = container.run(["id", "-u"], capture_output=True, text=True)
    assert r.stdout == "0\\n"

@pytest.mark.container(rootfs={rootfs!r}, hostname="box", pids=20)
def test_options(container):
    r = container.run(["hostname"], capture_output=True, text=True)
    assert r.stdout == "box\\n"
    assert container.stats().pids_limit == 20
''')
    r = pytester.runpytest_subprocess()
    r.assert_outcomes(passed=2)


UNMARKED = '''
import os, socket
def test_a():
    assert socket.gethostname() != {host!r}
def test_b():
    assert os.getpid() != {pid}
'''


def test_isolate_option_runs_every_test_in_a_container(pytester):
    pytester.makepyfile(UNMARKED.format(host=socket.gethostname(), pid=os.getpid()))
    pytester.runpytest_subprocess("--isolate").assert_outcomes(passed=2)
    pytester.runpytest_subprocess().assert_outcomes(passed=1, failed=1)    # without: the host
    pytester.makepyfile(test_slow="import time\ndef test_slow():\n    time.sleep(60)\n")
    r = pytester.runpytest_subprocess("--isolate", "--isolate-timeout", "1", "test_slow.py")
    r.assert_outcomes(failed=1)
    assert "did not finish within 1.0 s" in r.stdout.str()


def test_no_isolate_turns_the_plugin_off(pytester):
    pytester.makepyfile("def test_x(container): pass")
    r = pytester.runpytest_subprocess("-p", "no:isolate")
    r.assert_outcomes(errors=1)
    assert "fixture 'container' not found" in r.stdout.str()


def test_with_xdist(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(UNMARKED.format(host=socket.gethostname(), pid=0))
    pytester.runpytest_subprocess("--isolate", "-n", "2").assert_outcomes(passed=2)


def test_coverage_of_lines_run_only_inside(pytester):
    pytest.importorskip("pytest_cov")
    pytester.makepyfile(mod='''
def f(x):
    if x > 1:
        return "big"
    return "small"
''', test_cov='''
import pytest
import mod

@pytest.mark.isolated
def test_inside():
    assert mod.f(5) == "big"
    assert mod.f(0) == "small"
''')
    r = pytester.runpytest_subprocess("--cov=mod", "--cov-report=term-missing")
    r.assert_outcomes(passed=1)
    line = [ln for ln in r.stdout.lines if ln.startswith("mod.py")][0]
    assert line.split()[-1] == "100%", r.stdout.str()


SAME_OUTCOMES = '''
import unittest
import warnings

class Case(unittest.TestCase):
    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)

def test_subtests_fixture(subtests):
    for i in range(3):
        with subtests.test(i=i):
            assert i != 2

def test_warns():
    warnings.warn("isolated-deprecation-marker", DeprecationWarning)

def test_plain_pass():
    pass
'''


def _outcome_lines(result):
    return sorted(line for line in result.stdout.lines
                  if line.startswith(("PASSED", "FAILED", "SUBPASSED", "SUBFAILED")))


def test_isolated_outcomes_match_plain_ones(pytester):
    """Subtests (unittest's and the fixture's), their failures, and warnings:
    the same reports and exit code with --isolate as without."""
    pytester.makepyfile(test_same=SAME_OUTCOMES)
    plain = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider")
    isolated = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", "--isolate")
    assert plain.ret == isolated.ret == 1
    assert _outcome_lines(isolated) == _outcome_lines(plain)
    assert any("SUBFAILED" in line for line in _outcome_lines(plain))
    out = isolated.stdout.str()
    assert "isolated-deprecation-marker" in out and "DeprecationWarning" in out
    assert plain.parseoutcomes().get("failed") == isolated.parseoutcomes().get("failed")
    assert plain.parseoutcomes().get("warnings") == isolated.parseoutcomes().get("warnings")


WRITES = '''
import os

def test_writes_the_project_and_home():
    with open("written-by-a-test", "w") as f:
        f.write("x")
    os.utime("test_writes.py")
    with open(os.path.expanduser("~/.isolate-plugin-home-marker"), "w") as f:
        f.write("x")
    with open("/tmp/isolate-plugin-tmp-marker", "w") as f:
        f.write("x")
    with open(os.path.join(os.environ["SHARED"], "kept"), "a") as f:
        f.write("x")

def test_the_next_test_sees_none_of_it():
    assert not os.path.exists("written-by-a-test")
    assert not os.path.exists(os.path.expanduser("~/.isolate-plugin-home-marker"))
    assert not os.path.exists("/tmp/isolate-plugin-tmp-marker")
    assert os.path.exists(os.path.join(os.environ["SHARED"], "kept"))
'''


def test_isolated_writes_work_and_vanish(pytester, tmp_path, monkeypatch):
    """The project (pytester's, under /tmp), $HOME and /tmp are writable and
    copy-on-write; an --isolate-share directory keeps what is written."""
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("SHARED", str(shared))
    pytester.makepyfile(test_writes=WRITES)
    mtime = os.stat(pytester.path / "test_writes.py").st_mtime_ns
    r = pytester.runpytest_subprocess("--isolate", "-p", "no:cacheprovider",
                                      "--isolate-share", str(shared))
    r.assert_outcomes(passed=2)
    assert not (pytester.path / "written-by-a-test").exists()
    assert os.stat(pytester.path / "test_writes.py").st_mtime_ns == mtime
    assert not os.path.exists(os.path.expanduser("~/.isolate-plugin-home-marker"))
    assert not os.path.exists("/tmp/isolate-plugin-tmp-marker")
    assert (shared / "kept").read_text() == "x"


SCOPED = '''
import os
import pytest

SETUPS = []


@pytest.fixture(scope="module")
def per_module():
    SETUPS.append(os.getpid())
    yield len(SETUPS)


def test_first(per_module):
    with open("/tmp/left-by-first", "w") as f:
        f.write(str(os.getpid()))
    assert per_module == 1


def test_second_shares_the_container_and_fixture(per_module):
    with open("/tmp/left-by-first") as f:
        assert f.read() == str(os.getpid())      # the same process, in the same container
    assert per_module == 1 and len(SETUPS) == 1
    assert os.getpid() != int(os.environ["SESSION_PID"])


class TestK:
    def test_k1(self):
        with open("/tmp/left-by-k1", "w") as f:
            f.write("x")

    def test_k2(self):
        assert os.path.exists("/tmp/left-by-k1")
        assert os.path.exists("/tmp/left-by-first") == (os.environ["SCOPE"] == "module")
'''

OTHER_MODULE = '''
import os

def test_another_module_gets_a_fresh_container():
    assert not os.path.exists("/tmp/left-by-first")
    assert not os.path.exists("/tmp/left-by-k1")
'''


@pytest.mark.parametrize("scope", ["module", "class"])
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_isolate_scope_shares_a_container_per_module_or_class(pytester, monkeypatch, scope, xdist):
    monkeypatch.setenv("SCOPE", scope)
    monkeypatch.setenv("SESSION_PID", "0")
    pytester.makepyfile(test_scoped=SCOPED, test_other=OTHER_MODULE)
    r = pytester.runpytest_subprocess("--isolate", "--isolate-scope", scope, "-p",
                                      "no:cacheprovider", "-rA", *xdist)
    # (class: a class's tests share one container, the module's functions outside
    # classes another, as xdist's --dist loadscope groups them)
    r.assert_outcomes(passed=5)
    assert not os.path.exists("/tmp/left-by-first")


GROUP_FAULTS = '''
import os
import signal
import time

def test_before():
    with open("/tmp/group-marker", "w") as f:
        f.write("x")

def test_crashes():
    os.kill(os.getpid(), signal.SIGSEGV)

def test_after_a_crash_gets_a_new_container():
    assert not os.path.exists("/tmp/group-marker")

def test_hangs():
    time.sleep(60)

def test_after_a_timeout():
    pass

def test_fails():
    assert 1 == 2

def test_not_reached_with_x():
    pass
'''


def test_isolate_scope_module_crash_timeout_and_stop(pytester):
    pytester.makepyfile(test_faults=GROUP_FAULTS)
    r = pytester.runpytest_subprocess("--isolate", "--isolate-scope", "module",
                                      "--isolate-timeout", "2", "-p", "no:cacheprovider", "-rA")
    r.assert_outcomes(passed=4, failed=3)
    out = r.stdout.str()
    assert "test_crashes crashed: its process was killed by SIGSEGV" in out
    assert "did not finish within 2.0 s" in out
    # stopped in the middle of a group: its process and container go with the session
    r = pytester.runpytest_subprocess("--isolate", "--isolate-scope", "module", "-x",
                                      "-p", "no:cacheprovider", "-k", "before or fails or reached")
    r.assert_outcomes(passed=1, failed=1)


REPORTED = '''
import time
import pytest

def test_passes():
    time.sleep(0.02)

def test_fails():
    assert 1 == 2

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert 0

def test_prints_and_fails():
    print("some captured output")
    assert "a" == "b"
'''


def _junit_cases(path):
    import xml.etree.ElementTree as ET
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = sorted(child.tag for child in case)
        cases[(case.get("classname"), case.get("name"))] = kinds
    return cases


@pytest.mark.parametrize("scope", ["function", "module"])
def test_junitxml_last_failed_and_durations_as_plain(pytester, scope):
    """What pytest's own plugins make of the reports: junitxml's test cases,
    the cache's last failures (--lf runs them again), --durations."""
    pytester.makepyfile(test_reported=REPORTED)
    isolate = ["--isolate", "--isolate-scope", scope]
    plain = pytester.runpytest_subprocess("--junitxml=plain.xml", "--durations=0", "-vv")
    plain_lf = pytester.runpytest_subprocess("--lf", "-q")
    shutil.rmtree(pytester.path / ".pytest_cache")      # what --lf sees next: the isolated run's
    isolated = pytester.runpytest_subprocess(*isolate, "--junitxml=isolated.xml",
                                             "--durations=0", "-vv")
    isolated_lf = pytester.runpytest_subprocess(*isolate, "--lf", "-q")
    assert plain.ret == isolated.ret == 1
    assert _junit_cases(pytester.path / "isolated.xml") == _junit_cases(pytester.path / "plain.xml")
    assert "some captured output" in (pytester.path / "isolated.xml").read_text()
    assert plain_lf.parseoutcomes() == isolated_lf.parseoutcomes()
    assert isolated_lf.parseoutcomes()["failed"] == 2 and "passed" not in isolated_lf.parseoutcomes()
    assert any("call" in line and "test_reported.py::test_passes" in line
               for line in isolated.stdout.lines)      # --durations lists it, as plainly


FORGED_COVERAGE = '''
import zlib

def test_forges_its_coverage_data():
    import isolate.pytest_plugin as p
    evil = ("ATTACH DATABASE '{target}' AS pwn; CREATE TABLE pwn.t(x); "
            "INSERT INTO pwn.t VALUES('written by a container'); DETACH DATABASE pwn;")
    p._coverage_data = lambda: b"z" + zlib.compress(evil.encode())

def test_other():
    pass
'''


@pytest.mark.parametrize("scope", ["function", "module"])
def test_coverage_data_from_an_isolated_test_runs_nothing_in_the_session(pytester, tmp_path, scope):
    """Coverage's own serialized data is an SQL script that the session would
    run (CoverageData.loads): lines come back as data instead."""
    pytest.importorskip("pytest_cov")
    target = tmp_path / "pwned.db"
    pytester.makepyfile(test_forged=FORGED_COVERAGE.replace("{target}", str(target)))
    r = pytester.runpytest_subprocess("--isolate", "--isolate-scope", scope, "--cov=.",
                                      "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)
    assert not target.exists()


EXTRA_FRAME = '''
import os, pickle, struct, sys

def _group():
    f = sys._getframe()
    while f is not None and type(f.f_locals.get("self")).__name__ != "_Group":
        f = f.f_back
    return f.f_locals["self"]

def test_1_writes_a_frame_of_its_own(request):
    data = pickle.dumps(("ok", (1, [], ([], 0))), protocol=5)     # "test 2 passed, nothing else"
    os.write(_group()._out_w, struct.pack("<Q", len(data)) + data)

def test_2_fails():
    assert False, "REAL FAILURE"

def test_3_huge_report():
    data = pickle.dumps(("ok", "x" * (1 << 20)), protocol=5)
    os.write(_group()._out_w, struct.pack("<Q", len(data)) + data[:1000])
'''


def test_a_group_process_that_sends_what_it_was_not_asked_for_is_ended(pytester):
    """In a module's group, a test that writes a report frame of its own
    (or a child it forked that went on) cannot shift the session's reads
    onto the next tests: the group ends, the tests that follow get a fresh
    one, and a real failure stays a failure."""
    pytester.makepyfile(test_extra=EXTRA_FRAME)
    r = pytester.runpytest_subprocess("--isolate", "--isolate-scope", "module", "-rA",
                                      "-p", "no:cacheprovider", "--isolate-timeout", "20")
    assert r.ret == 1
    out = r.stdout.str()
    assert "FAILED test_extra.py::test_2_fails" in out
    assert "sent what it was not asked for" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="networks need root")
def test_the_marker_and_the_container_fixture_take_a_network(pytester):
    import isolate
    with isolate.Network("ptnet", subnet="10.89.20.0/24"):
        pytester.makepyfile('''
import os, pytest, subprocess

@pytest.mark.container(network="ptnet", hostname="svc")
def test_fixture(container):
    r = container.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True)
    assert "inet 10.89.20." in r.stdout

@pytest.mark.isolated(network="ptnet")
def test_marked():
    assert sorted(os.listdir("/sys/class/net")) == ["eth0", "lo"]
    with open("/etc/hosts") as f:
        assert "# isolate network ptnet" in f.read()
''')
        r = pytester.runpytest_subprocess()
        r.assert_outcomes(passed=2)

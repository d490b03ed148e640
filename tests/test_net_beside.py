"""The network namespace made beside the child (start_container's net_beside):
its helper reports its own failures, the child must join it, and the helper
never outlives the start, however the start ends.

These drive the C layer directly; the isolation it gives is checked from
inside containers in test_isolation.py. The autouse no_leaks fixture checks
that no helper, process or namespace is left.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from isolate import ContainerError, NamespaceError
from isolate import _isolate as _c
from isolate import _plan
from isolate._config import make_config
from isolate.container import _inherited_spec

pytestmark = pytest.mark.skipif(not _c.NET_BESIDE, reason="no net_beside on this architecture")

NEWNS = _c.NAMESPACE_FLAGS["mount"]
NEWNET = _c.NAMESPACE_FLAGS["net"]


def _start(steps, flags):
    spec = _inherited_spec(make_config(), (b"/bin/true",), None)
    pid, pidfd, ctl, _, _ = _c.start_container(_c.Plan(steps), flags, spec, True, net_beside=True)
    status = os.waitpid(pid, 0)[1]      # (the init ends at once when ctl closes)
    os.close(pidfd)
    os.close(ctl)
    return status


def test_the_joined_namespace_is_a_new_one(capfd):
    # no mount namespace here: what the command writes to the caller's stdout tells
    spec = _inherited_spec(make_config(), (b"/bin/sh", b"-c", b"readlink /proc/self/ns/net; "
                                           b"grep -c : /proc/self/net/dev"), None)
    pid, pidfd, ctl, _, _ = _c.start_container(_c.Plan([_plan.op(_c.OP_JOIN_NET)]), 0, spec, True,
                                            net_beside=True)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    os.close(pidfd)
    os.close(ctl)
    netns, interfaces = capfd.readouterr().out.split()
    assert netns != os.readlink("/proc/self/ns/net")
    assert interfaces == "1"        # lo alone


def test_net_beside_refuses_a_clone_that_makes_one_too():
    with pytest.raises(NamespaceError) as e:
        _start([_plan.op(_c.OP_JOIN_NET)], NEWNS | NEWNET)
    assert (e.value.step, e.value.errno) == ("clone", errno.EINVAL)


def test_a_plan_that_never_joins_fails():
    """Accepted but not applied would leave the container in the host's network."""
    with pytest.raises(NamespaceError) as e:
        _start([], NEWNS)
    assert e.value.step == "setns"
    assert "never joins" in e.value.filename


def test_join_without_a_helper_fails():
    spec = _inherited_spec(make_config(), (b"/bin/true",), None)
    with pytest.raises(NamespaceError) as e:
        _c.start_container(_c.Plan([_plan.op(_c.OP_JOIN_NET)]), NEWNS, spec, True)
    assert e.value.step == "setns"


def test_a_step_failing_before_the_join_still_ends_the_helper():
    steps = [_plan.op(_c.OP_MOUNT, src="x", dst="/nonexistent-isolate-test", fstype="isolatefs"),
             _plan.op(_c.OP_JOIN_NET)]
    with pytest.raises(ContainerError) as e:
        _start(steps, NEWNS)
    assert e.value.step == "mount"
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG | 0x40000000)     # __WALL: no helper is left, not even a zombie


def test_the_helpers_failure_is_reported_with_its_step():
    """Without CAP_SYS_ADMIN the helper cannot unshare: the child reports that."""
    code = textwrap.dedent("""
        import errno, os
        from isolate import NamespaceError, _isolate as _c, _plan
        from isolate._config import make_config
        from isolate.container import _inherited_spec
        spec = _inherited_spec(make_config(), (b"/bin/true",), None)
        try:
            _c.start_container(_c.Plan([_plan.op(_c.OP_JOIN_NET)]), 0, spec, True, net_beside=True)
        except NamespaceError as e:
            assert (e.step, e.errno, e.filename) == ("unshare", errno.EPERM, "net"), e
        else:
            raise SystemExit("started")
        try:
            os.waitpid(-1, os.WNOHANG | 0x40000000)
        except ChildProcessError:
            print("ok")
    """)
    r = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin",
                        sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == "ok\n", r.stderr

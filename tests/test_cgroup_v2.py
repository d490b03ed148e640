"""The resource-limit tests again, under pure cgroup v2: in a QEMU guest
(tests/vm/cgroup2.py) when this host has v1 controllers, as this VM does."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from isolate import _cgroups

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(_cgroups.layout() == "v2", reason="this host has cgroup v2: test_limits "
                                                      "runs on it directly")
def test_limits_pass_under_cgroup_v2_in_a_guest():
    r = subprocess.run([sys.executable, "tests/vm/cgroup2.py", "-q", "-rs", "-k", "not v1_only",
                        "tests/test_limits.py", "tests/test_cli.py::test_limits"],
                       cwd=PROJECT, capture_output=True, text=True, timeout=1500)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-8000:]
    assert "cgroup controllers: cpuset cpu io memory" in out      # the guest had v2's
    summary = [line for line in out.splitlines() if " passed" in line][-1]
    assert "skipped" not in summary and "failed" not in summary, out[-8000:]

"""The benchmark suite's smoke run (bench/ --quick): every row goes through,
in about half a minute, and leaves nothing behind. Rows whose tools are not
installed are skipped (--no-install: the test suite does not install them)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmarks_run(tmp_path):
    pytest.importorskip("pytest_benchmark")
    r = subprocess.run([sys.executable, "-m", "pytest", "bench/", "--quick", "--no-install", "-q",
                        "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "bench")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = r.stdout.split("isolate: medians and ratios", 1)[-1]
    for table in ("### startup", "### call", "### paired", "### density", "### targets",
                  "### scaling: latency against the caller's memory"):
        assert table in summary, summary[:3000]

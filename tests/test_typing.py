"""The public API is typed: mypy accepts the installed package as it ships."""
import subprocess
import sys

import pytest


def test_mypy_accepts_the_package():
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "-p", "isolate"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

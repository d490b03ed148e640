"""The public API is typed: mypy accepts the installed package as it ships."""
import subprocess
import sys

import pytest


def test_mypy_accepts_the_package():
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "-p", "isolate"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_api_loads_what_it_uses():
    """import isolate is cheap (a Pool's zygote imports it too): the modules
    behind Container, run, call and Pool load when first used."""
    code = ("import sys, isolate\n"
            "heavy = ('isolate.container', 'isolate.pool', 'isolate._cgroups', 'isolate._seccomp')\n"
            "assert not [m for m in heavy if m in sys.modules], sorted(sys.modules)\n"
            "from isolate import *\n"
            "assert Container.__module__ == 'isolate.container' and Pool.__module__ == 'isolate.pool'\n"
            "assert isolate.run is run and callable(isolate.call) and 'Pool' in dir(isolate)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

"""The 15-instance boot experiment (bench/boot15.py) as part of the suite:
isolate, crun, runc and QEMU guests (TCG), on their loopback and on one
network; 2 instances with --quick."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boot15  # noqa: E402


@pytest.mark.benchmark(group="boot15")
def test_boot15(benchmark, quick, rootfs):
    n = 2 if quick else 15
    out: list = []
    benchmark.pedantic(lambda: out.append(boot15.run(["isolate", "crun", "runc", "vm"], n,
                                                     rootfs)), rounds=1, iterations=1)
    benchmark.extra_info["table"] = boot15.table(out[0], n)
    benchmark.extra_info["boot15"] = out[0]


@pytest.mark.benchmark(group="boot15")
def test_boot15_network(benchmark, quick, rootfs):
    """The same on one network: HTTP on each instance's own address, isolate
    reached through published ports, crun, runc and QEMU guests on the same
    bridge."""
    n = 2 if quick else 15
    out: list = []
    benchmark.pedantic(lambda: out.append(boot15.run(["isolate-net", "crun-net", "runc-net",
                                                      "vm-net"], n, rootfs)),
                       rounds=1, iterations=1)
    benchmark.extra_info["table"] = boot15.table(out[0], n, network=True)
    benchmark.extra_info["boot15"] = out[0]

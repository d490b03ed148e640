"""Density: n containers (busybox root) started one after another and left
sleeping, for n in 1, 10, 100, 1000, by isolate, crun and runc: time per
container and the host memory each adds (MemAvailable before and after, with
all n up)."""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

import pytest

from isolate import Container

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boot15  # noqa: E402




@pytest.mark.benchmark(group="density")
@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("tool", ["crun", "runc"])
def test_density_oci(benchmark, rootfs, n, tool):
    with tempfile.TemporaryDirectory(prefix="density-") as work:
        try:
            oci = boot15.OCI(tool, rootfs, work, args=["sleep", "100000"])
        except LookupError as e:
            pytest.skip(str(e))
        count = iter(range(10**9))
        before = boot15.available_kib()
        try:
            benchmark.pedantic(lambda: [oci.launch(next(count)) for _ in range(n)], rounds=1,
                               iterations=1)
            time.sleep(0.2)
            added = before - boot15.available_kib()
        finally:
            oci.stop()
    benchmark.extra_info["containers"] = n
    benchmark.extra_info["kind"] = tool
    benchmark.extra_info["kib_per_container"] = added / n


@pytest.mark.benchmark(group="density")
@pytest.mark.parametrize("n", [1, 10, 100, 1000])
def test_density(benchmark, rootfs, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 3 * n + 100:
        pytest.skip(f"{n} containers need {3 * n} fds; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * n + 100)), hard))
    Container(rootfs=rootfs).start().close()        # warm
    held: list[Container] = []

    def start_all() -> None:
        for _ in range(n):
            held.append(Container(rootfs=rootfs).start())

    before = boot15.available_kib()
    try:
        benchmark.pedantic(start_all, rounds=1, iterations=1)
        time.sleep(0.2)     # let the kernel settle its per-namespace work
        added = before - boot15.available_kib()
    finally:
        for c in held:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    benchmark.extra_info["containers"] = n
    benchmark.extra_info["kind"] = "isolate"
    benchmark.extra_info["kib_per_container"] = added / n

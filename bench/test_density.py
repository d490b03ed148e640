"""Density: n containers (busybox root) started one after another and left
sleeping, for n in 1, 10, 100, 1000, by isolate, crun and runc: time per
container, the host memory each adds (MemAvailable before and after, with
all n up) and what each container's memory cgroup accounts for (crun and runc
always make one; isolate with a memory limit: the row "isolate+memcg")."""
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
def test_density_oci(benchmark, rootfs, n, tool, quick):
    if quick and n > 10:
        pytest.skip("--quick: up to 10 containers")
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
            accounted = sum(boot15.cgroup_memory_kib(pid) for pid in oci.pids)
        finally:
            oci.stop()
    benchmark.extra_info["containers"] = n
    benchmark.extra_info["kind"] = tool
    benchmark.extra_info["kib_per_container"] = added / n
    benchmark.extra_info["cgroup_kib_per_container"] = accounted / n


@pytest.mark.benchmark(group="density")
@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("memcg", [False, True], ids=["plain", "memcg"])
def test_density(benchmark, rootfs, n, memcg, quick):
    if quick and n > 10:
        pytest.skip("--quick: up to 10 containers")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 3 * n + 100:
        pytest.skip(f"{n} containers need {3 * n} fds; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * n + 100)), hard))
    options = {"memory": "1G"} if memcg else {}     # a limit never reached: the accounting
    Container(rootfs=rootfs, **options).start().close()        # warm
    held: list[Container] = []

    def start_all() -> None:
        for _ in range(n):
            held.append(Container(rootfs=rootfs, **options).start())

    before = boot15.available_kib()
    try:
        benchmark.pedantic(start_all, rounds=1, iterations=1)
        time.sleep(0.2)     # let the kernel settle its per-namespace work
        added = before - boot15.available_kib()
        if memcg:
            accounted = sum(boot15.cgroup_memory_kib(c.pid) for c in held)
    finally:
        for c in held:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    benchmark.extra_info["containers"] = n
    benchmark.extra_info["kind"] = "isolate+memcg" if memcg else "isolate"
    benchmark.extra_info["kib_per_container"] = added / n
    if memcg:
        benchmark.extra_info["cgroup_kib_per_container"] = accounted / n

"""The ratio targets measured paired: each round runs both sides back to back,
so drift on a shared machine falls on both alike. The ratio reported is of the
medians of the two sides' times over the same rounds."""
from __future__ import annotations

import statistics
import time

import pytest

import isolate
from isolate import Container


def _paired(benchmark, rounds, a, b, label_a, label_b, pause: float = 0.0):
    """pause: seconds after each side, untimed (what a side leaves to threads
    and the kernel then falls on neither)."""
    times: dict[str, list[float]] = {label_a: [], label_b: []}

    def one_round():
        for label, fn in ((label_a, a), (label_b, b)):
            t = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t)
            if pause:
                time.sleep(pause)

    for _ in range(min(20, rounds)):
        one_round()
    for v in times.values():
        v.clear()
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    ma, mb = statistics.median(times[label_a]), statistics.median(times[label_b])
    benchmark.extra_info["paired"] = {label_a: ma * 1e3, label_b: mb * 1e3, "ratio": ma / mb}


@pytest.mark.benchmark(group="paired")
def test_paired_isolate_run_vs_floor(benchmark, rounds, rootfs, floor):
    root = rootfs.encode()
    _paired(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs),
            lambda: floor(root, 1) == 0 or pytest.fail("floor failed"), "isolate_run", "floor_c")


@pytest.mark.benchmark(group="paired")
def test_paired_call_vs_fork(benchmark, rounds, rootfs, bare_fork):
    with Container(rootfs=rootfs) as c:
        _paired(benchmark, rounds, lambda: c.call(int), bare_fork, "container_call", "os_fork")


@pytest.mark.benchmark(group="paired")
def test_paired_isolate_run_vs_bwrap(benchmark, rounds, rootfs):
    import shutil
    import subprocess
    bwrap = shutil.which("bwrap") or pytest.skip("bwrap is not installed (apt-get install bubblewrap)")
    cmd = [bwrap, "--unshare-all", "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev",
           "/bin/true"]
    _paired(benchmark, max(rounds // 2, 10), lambda: isolate.run(["/bin/true"], rootfs=rootfs),
            lambda: subprocess.run(cmd, check=True), "isolate_run", "bwrap")

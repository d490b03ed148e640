"""Scaling: isolate.run's latency against the caller's memory, and its
throughput against the number of threads starting containers at once."""
from __future__ import annotations

import concurrent.futures
import itertools
import os
import shutil
import subprocess

import pytest

import isolate


def _hold(mib: int) -> bytearray:
    """Touched memory that brings this process's RSS to about mib MiB."""
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) // 1024
    block = bytearray(max(0, mib - rss) << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return block


def _fork_and_wait() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.benchmark(group="scaling-memory")
@pytest.mark.parametrize("mib", [50, 1024, 4096], ids=["50MB", "1GB", "4GB"])
@pytest.mark.parametrize("kind", ["isolate.run", "os.fork"])
def test_caller_holding(benchmark, rounds, rootfs, mib, kind, quick):
    """One start from a caller whose RSS is about this many MiB: isolate.run,
    and what a fork-based runtime pays (os.fork + _exit + waitpid)."""
    if quick and mib > 1024:
        pytest.skip("--quick: up to 1 GiB")
    block = _hold(mib)
    if kind == "os.fork":
        fn, rounds, warmup = _fork_and_wait, min(rounds, 20), 2
    else:
        fn, warmup = (lambda: isolate.run(["/bin/true"], rootfs=rootfs)), min(20, rounds)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
    benchmark.extra_info["caller_mib"] = mib
    benchmark.extra_info["kind"] = kind
    del block


@pytest.mark.benchmark(group="scaling-threads")
@pytest.mark.parametrize("threads", [1, 2, 4, 8])
def test_concurrent_starters(benchmark, rootfs, threads, quick):
    """400 containers, started by this many threads at once; per second."""
    n = 40 if quick else 400

    def one(_: int) -> None:
        isolate.run(["/bin/true"], rootfs=rootfs)

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, range(threads * 4)))          # warm
        benchmark.pedantic(lambda: list(ex.map(one, range(n))), rounds=1 if quick else 3,
                           iterations=1)
    benchmark.extra_info["throughput_calls"] = n
    benchmark.extra_info["kind"] = "isolate"


@pytest.mark.benchmark(group="scaling-threads")
@pytest.mark.parametrize("threads", [1, 2, 4, 8])
@pytest.mark.parametrize("tool", ["crun", "runc"])
def test_concurrent_starters_oci(benchmark, bundle, tool, threads, quick):
    """The same for crun and runc (OCI bundles of the same root, /bin/true): 100."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    wrap: list[str] = []
    if tool == "crun" and os.path.ismount("/sys/fs/cgroup/unified"):
        wrap = ["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified; exec "$0" "$@"']
    names = itertools.count()
    n = 10 if quick else 100

    def one(_: int) -> None:
        subprocess.run([*wrap, path, "run", "-b", bundle, f"scale-{os.getpid()}-{next(names)}"],
                       check=True)

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, range(threads)))
        benchmark.pedantic(lambda: list(ex.map(one, range(n))), rounds=1, iterations=1)
    benchmark.extra_info["throughput_calls"] = n
    benchmark.extra_info["kind"] = tool

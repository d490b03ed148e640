"""Python functions in containers: Container.call against a bare fork, and Pool."""
from __future__ import annotations

import time

import pytest

import isolate
from isolate import Container, Pool
from pooled import noop


def _bench(benchmark, rounds, fn, **kw):
    fn()
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=min(20, rounds), **kw)


@pytest.mark.benchmark(group="call")
def test_os_fork(benchmark, rounds, bare_fork):
    _bench(benchmark, rounds, bare_fork)


@pytest.mark.benchmark(group="call")
def test_container_call(benchmark, rounds, rootfs):
    with Container(rootfs=rootfs) as c:
        _bench(benchmark, rounds, lambda: c.call(noop))


@pytest.mark.benchmark(group="call")
def test_isolate_run_ref(benchmark, rounds, rootfs):
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs))


@pytest.mark.benchmark(group="call")
def test_pool_call(benchmark, rounds, rootfs):
    """A fresh container per call, paced (10 ms apart) so one is always ready."""
    with Pool(size=4, rootfs=rootfs, preload=["pooled"]) as pool:
        time.sleep(0.5)
        _bench(benchmark, rounds, lambda: pool.call(noop), setup=lambda: time.sleep(0.01))


@pytest.mark.benchmark(group="call")
def test_pool_call_big_parent_1gib(benchmark, rounds, rootfs, big_parent):
    with Pool(size=4, rootfs=rootfs, preload=["pooled"]) as pool:
        time.sleep(0.5)
        _bench(benchmark, rounds, lambda: pool.call(noop), setup=lambda: time.sleep(0.01))


@pytest.mark.benchmark(group="pool-throughput")
def test_pool_map_2000(benchmark, rounds, rootfs):
    """2,000 calls through Pool.map: each a fresh container."""
    with Pool(size=4, rootfs=rootfs, preload=["pooled"]) as pool:
        time.sleep(0.5)
        n = 200 if rounds < 100 else 2000
        benchmark.extra_info["calls"] = n
        benchmark.pedantic(lambda: list(pool.map(noop, range(n))), rounds=3, iterations=1)


@pytest.mark.benchmark(group="commands")
def test_subprocess_run(benchmark, rounds):
    import subprocess
    _bench(benchmark, rounds, lambda: subprocess.run(["/bin/true"]),
           setup=lambda: time.sleep(0.01))


@pytest.mark.benchmark(group="commands")
def test_pool_run(benchmark, rounds, rootfs):
    """A command in a fresh container made ahead of it, paced (10 ms apart,
    as the subprocess row) so one is always ready."""
    with Pool(size=4, rootfs=rootfs) as pool:
        pool.run(["/bin/true"])
        time.sleep(0.5)
        _bench(benchmark, rounds, lambda: pool.run(["/bin/true"]),
               setup=lambda: time.sleep(0.01))


@pytest.mark.benchmark(group="pool-throughput")
def test_pool_run_2000_from_4_threads(benchmark, rounds, rootfs):
    """2,000 commands through Pool.run from 4 threads: each a fresh container."""
    import concurrent.futures
    with Pool(size=4, rootfs=rootfs) as pool, \
            concurrent.futures.ThreadPoolExecutor(4) as threads:
        pool.run(["/bin/true"])
        time.sleep(0.5)
        n = 200 if rounds < 100 else 2000
        benchmark.extra_info["commands"] = n
        benchmark.pedantic(lambda: list(threads.map(lambda _: pool.run(["/bin/true"]), range(n))),
                           rounds=3, iterations=1)

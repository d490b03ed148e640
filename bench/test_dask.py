"""Dask: tasks per second of a no-op client.map on a LocalCluster of 2 worker
processes, plainly, with every task in a fresh container of isolate's Dask
executor (a warm Pool), and with tasks that each start a container of their
own, as a `docker run` per task would (isolate.call, isolate.run, crun)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from itertools import count

import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import isolate  # noqa: E402
import isolate.dask  # noqa: E402

_CRUN_SCRIPT = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" run -b "$1" "$2"'
_names = count()


def noop(x):
    return x


def call_per_task(x):
    return isolate.call(noop, x)


def run_per_task(x):
    return isolate.run(["/bin/true"]).returncode


def crun_per_task(x, bundle):
    crun = shutil.which("crun")
    name = f"bench-dask-crun-{os.getpid()}-{next(_names)}"
    args = ([crun, "run", "-b", bundle, name] if not os.path.ismount("/sys/fs/cgroup/unified")
            else ["unshare", "-m", "sh", "-c", _CRUN_SCRIPT, crun, bundle, name])
    return subprocess.run(args, check=True).returncode


def _rate(client, fn, n, *args, executor="default"):
    with dask.annotate(executor=executor):      # warm
        client.gather(client.map(fn, range(20), *[[a] * 20 for a in args], pure=False))
    start = time.perf_counter()
    with dask.annotate(executor=executor):
        futures = client.map(fn, range(n), *[[a] * n for a in args], pure=False)
    client.gather(futures)
    return n / (time.perf_counter() - start)


@pytest.mark.benchmark(group="dask")
def test_dask_tasks_per_second(benchmark, quick, bundle):
    n = 200 if quick else 2000
    few = 40 if quick else 200
    rates: dict[str, tuple[int, float]] = {}

    def once() -> None:
        plugin = isolate.dask.Isolated()
        with distributed.LocalCluster(n_workers=2, threads_per_worker=2, host="127.0.0.1",
                                      dashboard_address=None, plugins=[plugin]) as cluster, \
                distributed.Client(cluster) as client:
            rates["plain (threads)"] = (n, _rate(client, noop, n))
            rates["isolated: a fresh container per task (Pool)"] = (
                n, _rate(client, noop, n, executor="isolated"))
            rates["isolate.call per task"] = (few, _rate(client, call_per_task, few))
            rates["isolate.run(/bin/true) per task"] = (few, _rate(client, run_per_task, few))
            if shutil.which("crun"):
                rates["crun run /bin/true per task"] = (few, _rate(client, crun_per_task, few, bundle))

    benchmark.pedantic(once, rounds=1, iterations=1)
    plain = rates["plain (threads)"][1]
    rows = [f"| {kind} | {tasks} | {rate:.0f} | {rate / plain:.2f} |"
            for kind, (tasks, rate) in rates.items()]
    benchmark.extra_info["isolated_over_plain"] = rates[
        "isolated: a fresh container per task (Pool)"][1] / plain
    benchmark.extra_info["table"] = "\n".join([
        "### Dask: no-op tasks per second, LocalCluster of 2 workers x 2 threads", "",
        "| tasks run | tasks | tasks per second | / plain |", "|---|---:|---:|---:|", *rows, ""])

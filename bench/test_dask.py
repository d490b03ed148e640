"""Dask: tasks per second of a no-op client.map on a LocalCluster of 2 worker
processes, plainly, with every task in a fresh container of isolate's Dask
executor (a warm Pool), and with tasks that each start a container of their
own, as a `docker run` per task would (isolate.call, isolate.run, crun).
The cluster runs in a script of its own (bench/dask_rates.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.benchmark(group="dask")
def test_dask_tasks_per_second(benchmark, quick, bundle):
    pytest.importorskip("distributed")
    n = 200 if quick else 2000
    few = 40 if quick else 200
    rates: dict[str, list] = {}

    def once() -> None:
        r = subprocess.run([sys.executable, os.path.join(HERE, "dask_rates.py"), str(n), str(few),
                            bundle], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        rates.update(json.loads(r.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(once, rounds=1, iterations=1)
    plain = rates["plain (threads)"][1]
    rows = [f"| {kind} | {tasks} | {rate:.0f} | {rate / plain:.2f} |"
            for kind, (tasks, rate) in rates.items()]
    benchmark.extra_info["isolated_over_plain"] = rates[
        "isolated: a fresh container per task (Pool)"][1] / plain
    benchmark.extra_info["table"] = "\n".join([
        "### Dask: no-op tasks per second, LocalCluster of 2 workers x 2 threads", "",
        "| tasks run | tasks | tasks per second | / plain |", "|---|---:|---:|---:|", *rows, ""])

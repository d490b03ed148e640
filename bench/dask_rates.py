"""Tasks per second of no-op Dask tasks, run as a script of its own (so that
the benchmark session does not hold Dask, which would make its forks dearer):

    python3 bench/dask_rates.py N FEW [BUNDLE]

prints {row: [tasks, tasks per second]} as JSON."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

_CRUN_SCRIPT = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" run -b "$1" "$2"'


def noop(x):
    return x


def call_per_task(x):
    import isolate
    return isolate.call(noop, x)


def run_per_task(x):
    import isolate
    return isolate.run(["/bin/true"]).returncode


def crun_per_task(x, bundle):
    crun = shutil.which("crun")
    import uuid
    name = f"bench-dask-crun-{uuid.uuid4().hex[:12]}"
    args = ([crun, "run", "-b", bundle, name] if not os.path.ismount("/sys/fs/cgroup/unified")
            else ["unshare", "-m", "sh", "-c", _CRUN_SCRIPT, crun, bundle, name])
    return subprocess.run(args, check=True).returncode


def _rate(client, fn, n, *args, executor="default"):
    import dask
    with dask.annotate(executor=executor):      # warm
        client.gather(client.map(fn, range(20), *[[a] * 20 for a in args], pure=False))
    start = time.perf_counter()
    with dask.annotate(executor=executor):
        futures = client.map(fn, range(n), *[[a] * n for a in args], pure=False)
    client.gather(futures)
    return n / (time.perf_counter() - start)


def main() -> None:
    import distributed

    import isolate.dask
    n, few = int(sys.argv[1]), int(sys.argv[2])
    bundle = sys.argv[3] if len(sys.argv) > 3 else None
    rates = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, host="127.0.0.1",
                                  dashboard_address=None,
                                  plugins=[isolate.dask.Isolated()]) as cluster, \
            distributed.Client(cluster) as client:
        rates["plain (threads)"] = (n, _rate(client, noop, n))
        rates["isolated: a fresh container per task (Pool)"] = (
            n, _rate(client, noop, n, executor="isolated"))
        rates["isolate.call per task"] = (few, _rate(client, call_per_task, few))
        rates["isolate.run(/bin/true) per task"] = (few, _rate(client, run_per_task, few))
        if bundle and shutil.which("crun"):
            rates["crun run /bin/true per task"] = (few, _rate(client, crun_per_task, few, bundle))
    print(json.dumps(rates))


if __name__ == "__main__":
    main()

"""Start-up latency of one container running /bin/true, side by side.

Every row starts the same work from this Python process: a fresh set of
namespaces (and, where the tool has one, a root) running /bin/true.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import isolate

NS = ["--mount", "--pid", "--uts", "--ipc", "--net", "--cgroup", "--fork"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = {"bwrap": "bubblewrap", "unshare": "util-linux"}.get(name, name)
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def _bench(benchmark, rounds, fn):
    fn()    # warm: the first call pays for imports and caches
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=min(20, rounds))


@pytest.mark.benchmark(group="startup")
def test_subprocess(benchmark, rounds):
    _bench(benchmark, rounds, lambda: subprocess.run(["/bin/true"], check=True))


@pytest.mark.benchmark(group="startup")
def test_unshare(benchmark, rounds):
    cmd = [_tool("unshare"), *NS, "/bin/true"]
    _bench(benchmark, rounds, lambda: subprocess.run(cmd, check=True))


@pytest.mark.benchmark(group="startup")
def test_bwrap(benchmark, rounds, rootfs):
    cmd = [_tool("bwrap"), "--unshare-all", "--bind", rootfs, "/", "--proc", "/proc",
           "--dev", "/dev", "/bin/true"]
    _bench(benchmark, rounds, lambda: subprocess.run(cmd, check=True))


@pytest.mark.benchmark(group="startup")
def test_crun(benchmark, rounds, bundle):
    crun = _tool("crun")
    n = iter(range(10**9))
    # crun refuses this VM's hybrid cgroup layout unless the v2 mount is hidden
    script = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" run -b "$1" "$2"'
    unshare = ["unshare", "-m", "sh", "-c", script] if os.path.ismount("/sys/fs/cgroup/unified") else None

    def run():
        name = f"bench-crun-{os.getpid()}-{next(n)}"
        args = [*unshare, crun, bundle, name] if unshare else [crun, "run", "-b", bundle, name]
        subprocess.run(args, check=True)

    _bench(benchmark, max(rounds // 3, 10), run)


@pytest.mark.benchmark(group="startup")
def test_runc(benchmark, rounds, bundle):
    runc = _tool("runc")
    n = iter(range(10**9))
    _bench(benchmark, max(rounds // 3, 10),
           lambda: subprocess.run([runc, "run", "-b", bundle, f"bench-runc-{os.getpid()}-{next(n)}"],
                                  check=True))


@pytest.mark.benchmark(group="startup")
def test_floor_c(benchmark, rounds, floor, rootfs):
    root = rootfs.encode()
    _bench(benchmark, rounds, lambda: floor(root, 1) == 0 or pytest.fail("floor failed"))


@pytest.mark.benchmark(group="startup")
def test_floor_c_no_net(benchmark, rounds, floor, rootfs):
    root = rootfs.encode()
    _bench(benchmark, rounds, lambda: floor(root, 0) == 0 or pytest.fail("floor failed"))


@pytest.mark.benchmark(group="startup")
def test_isolate_run(benchmark, rounds, rootfs):
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs, check=True))


@pytest.mark.benchmark(group="startup")
def test_isolate_run_privileged(benchmark, rounds, rootfs):
    """Without the hardening (capabilities, masked paths): bwrap's share of work."""
    _bench(benchmark, rounds,
           lambda: isolate.run(["/bin/true"], rootfs=rootfs, privileged=True, check=True))


@pytest.mark.benchmark(group="startup")
def test_isolate_run_host_network(benchmark, rounds, rootfs):
    _bench(benchmark, rounds,
           lambda: isolate.run(["/bin/true"], rootfs=rootfs, network="host", check=True))


@pytest.mark.benchmark(group="startup")
def test_isolate_run_host_root(benchmark, rounds):
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], check=True))


@pytest.mark.benchmark(group="startup")
def test_container_run(benchmark, rounds, rootfs):
    """A command in an already running container (setns, as docker exec)."""
    with isolate.Container(rootfs=rootfs) as c:
        _bench(benchmark, rounds, lambda: c.run(["/bin/true"], check=True))


@pytest.mark.benchmark(group="parent-memory")
def test_small_parent(benchmark, rounds, rootfs):
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs, check=True))


@pytest.mark.benchmark(group="parent-memory")
def test_big_parent_1gib(benchmark, rounds, rootfs, big_parent):
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs, check=True))


@pytest.mark.benchmark(group="parent-memory")
def test_big_parent_1gib_container_run(benchmark, rounds, rootfs, big_parent):
    with isolate.Container(rootfs=rootfs) as c:
        _bench(benchmark, rounds, lambda: c.run(["/bin/true"], check=True))


@pytest.mark.benchmark(group="parent-memory")
def test_big_parent_1gib_os_fork(benchmark, rounds, big_parent, bare_fork):
    """What a fork-based runtime would pay: os.fork + _exit + waitpid."""
    _bench(benchmark, max(rounds // 3, 10), bare_fork)

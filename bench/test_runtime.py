"""isolate-runc against runc and crun, as OCI runtimes, side by side.

- oci-run: `RUNTIME run -b BUNDLE ID` of /bin/true from one bundle (the
  runtime alone: create, start, wait and delete in one command, as crun's
  and youki's published tables measure it).
- oci-cli: the command line's own start-up (`state` of an unknown id): the
  engines call the runtime three or four times per container.
- containerd: `ctr run --rm` of /bin/true through containerd and its runc
  v2 shim, the path Docker and Kubernetes take, with each runtime binary.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.images import make_image
from tests.test_engines import IMAGE, Containerd, _runtime_binary


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _bench(benchmark, rounds, fn):
    fn()
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=min(10, rounds))


def _crun_prefix() -> list[str]:
    # crun refuses this VM's hybrid cgroup layout unless the v2 mount is hidden
    if os.path.ismount("/sys/fs/cgroup/unified"):
        return ["unshare", "-m", "sh", "-c",
                'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@"']
    return []


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    """name -> the command that runs the runtime (state under a root of our own)."""
    root = str(tmp_path_factory.mktemp("runtime-state"))
    out = {"runc": [_tool("runc"), "--root", f"{root}/runc"],
           "isolate-runc": [_runtime_binary(), "--root", f"{root}/isolate"]}
    if shutil.which("crun"):
        out["crun"] = [*_crun_prefix(), shutil.which("crun"), "--root", f"{root}/crun"]
    return out


def _run_row(benchmark, rounds, runtimes, bundle, name):
    if name not in runtimes:
        pytest.skip(f"{name} is not installed")
    cmd = runtimes[name]
    n = iter(range(10**9))
    _bench(benchmark, max(rounds // 3, 10), lambda: subprocess.run(
        [*cmd, "run", "-b", bundle, f"b{os.getpid()}-{next(n)}"], check=True,
        stdin=subprocess.DEVNULL))


@pytest.mark.benchmark(group="oci-run")
def test_oci_run_runc(benchmark, rounds, runtimes, bundle):
    _run_row(benchmark, rounds, runtimes, bundle, "runc")


@pytest.mark.benchmark(group="oci-run")
def test_oci_run_crun(benchmark, rounds, runtimes, bundle):
    _run_row(benchmark, rounds, runtimes, bundle, "crun")


@pytest.mark.benchmark(group="oci-run")
def test_oci_run_isolate_runc(benchmark, rounds, runtimes, bundle):
    _run_row(benchmark, rounds, runtimes, bundle, "isolate-runc")


def _cli_row(benchmark, rounds, runtimes, name):
    if name not in runtimes:
        pytest.skip(f"{name} is not installed")
    cmd = [*runtimes[name], "state", "no-such-container"]
    _bench(benchmark, rounds, lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))


@pytest.mark.benchmark(group="oci-cli")
def test_cli_state_runc(benchmark, rounds, runtimes):
    _cli_row(benchmark, rounds, runtimes, "runc")


@pytest.mark.benchmark(group="oci-cli")
def test_cli_state_crun(benchmark, rounds, runtimes):
    _cli_row(benchmark, rounds, dict(runtimes, crun=[shutil.which("crun") or "crun"]), "crun")


@pytest.mark.benchmark(group="oci-cli")
def test_cli_state_isolate_runc(benchmark, rounds, runtimes):
    _cli_row(benchmark, rounds, runtimes, "isolate-runc")


@pytest.fixture(scope="module")
def containerd(rootfs):
    if not shutil.which("containerd"):
        pytest.skip("containerd is not installed")
    base = tempfile.mkdtemp(prefix="ctd-", dir="/tmp")
    d = Containerd(base)
    try:
        d.ctr("image", "import", make_image(rootfs, os.path.join(base, "busybox.tar")))
        yield d
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)


def _ctr_row(benchmark, rounds, containerd, binary):
    n = iter(range(10**9))
    _bench(benchmark, max(rounds // 10, 10), lambda: containerd.ctr(
        "run", "--rm", "--runc-binary", binary, IMAGE, f"b{next(n)}", "/bin/true"))


@pytest.mark.benchmark(group="containerd")
def test_ctr_run_runc(benchmark, rounds, containerd):
    _ctr_row(benchmark, rounds, containerd, _tool("runc"))


@pytest.mark.benchmark(group="containerd")
def test_ctr_run_isolate_runc(benchmark, rounds, containerd):
    _ctr_row(benchmark, rounds, containerd, containerd.runtime)


@pytest.mark.benchmark(group="containerd-density")
@pytest.mark.parametrize("runtime", ["runc", "isolate-runc"])
def test_ctr_density(benchmark, containerd, runtime, quick):
    """100 sleeping containers through containerd (each with its shim), one
    runtime then the other: the host memory each adds (MemAvailable)."""
    import boot15
    n = 5 if quick else 100
    binary = _tool("runc") if runtime == "runc" else containerd.runtime
    names = [f"d{runtime[0]}{i}" for i in range(n)]
    before = boot15.available_kib()
    try:
        benchmark.pedantic(lambda: [containerd.ctr("run", "-d", "--runc-binary", binary, IMAGE,
                                                   name, "sleep", "100000") for name in names],
                           rounds=1, iterations=1)
        import time
        time.sleep(0.5)
        added = before - boot15.available_kib()
    finally:
        for name in names:
            containerd.ctr("task", "kill", "-s", "SIGKILL", name, check=False)
        for name in names:
            containerd.ctr("task", "rm", "-f", name, check=False)
            containerd.ctr("container", "rm", name, check=False)
    benchmark.extra_info["containers"] = n
    benchmark.extra_info["kind"] = f"containerd + {runtime}"
    benchmark.extra_info["kib_per_container"] = added / n

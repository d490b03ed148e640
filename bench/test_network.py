"""Containers on a network (issue: networks), side by side.

- network-startup: isolate.run(["/bin/true"]) on a Network and with
  network="none", paired (each round starts both): the target is the
  difference of the medians, at most 1 ms, paced 10 ms apart; back to back
  and unpaired (a loop of each) beside it, where what a start leaves behind
  (the next spare, the veth's removal, the kernel's) falls on the next.
  Beside them, where dockerd runs here, `docker run --rm` of the same busybox
  root with --network bridge and --network none (a dockerd of the
  benchmark's own, iptables on).
- network-stream: one TCP stream of 1 GiB between two containers on one
  network, against the same stream between two plain network namespaces
  joined by a veth pair (no bridge): throughput, the target at least 90%.

The benchmark session runs in a network namespace of its own (conftest), so
its bridges, veths, firewall tables and dockerd stay there.
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

import isolate

#: a receiver: counts what one connection sends, prints MB/s when done
RECEIVER = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
n, t = 0, time.perf_counter()
buf = bytearray(1 << 20)
while True:
    k = c.recv_into(buf)
    if not k:
        break
    n += k
print(n / (time.perf_counter() - t) / 1e6, flush=True)
"""

#: a sender: SIZE bytes to HOST:5001 in 1 MiB writes
SENDER = r"""
import socket, sys, time
host, size = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 5
while True:
    try:
        c = socket.create_connection((host, 5001), timeout=5)
        break
    except OSError:
        if time.monotonic() > end:
            raise
        time.sleep(0.01)
chunk = b"\0" * (1 << 20)
for _ in range(size >> 20):
    c.sendall(chunk)
c.close()
"""
STREAM = 1 << 30


@pytest.fixture(scope="module")
def net():
    with isolate.Network("bench", subnet="10.89.200.0/24") as n:
        yield n


@pytest.mark.benchmark(group="paired")
def test_paired_network_vs_none(benchmark, rounds, rootfs, net):
    """Paired back to back: the same container on a network and without one.
    What a start on a network leaves to threads (its successor's spare, its
    veth's removal) and to the kernel falls on whatever runs next, here the
    container without a network."""
    from test_paired import _paired     # bench/ is on sys.path (no __init__.py)
    _paired(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs, network=net),
            lambda: isolate.run(["/bin/true"], rootfs=rootfs, network="none"),
            "network_bridge", "network_none")


@pytest.mark.benchmark(group="paired")
def test_paired_network_vs_none_paced(benchmark, rounds, rootfs, net):
    """The target: the same pair, 10 ms apart, so that what each start leaves
    behind is done before the next: the latency a caller sees that does not
    keep both cores busy (as Pool's figures are paced)."""
    from test_paired import _paired
    _paired(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs, network=net),
            lambda: isolate.run(["/bin/true"], rootfs=rootfs, network="none"),
            "network_bridge_paced", "network_none_paced", pause=0.01)


@pytest.mark.benchmark(group="network-startup")
def test_run_network_bridge(benchmark, rounds, rootfs, net):
    benchmark.pedantic(lambda: isolate.run(["/bin/true"], rootfs=rootfs, network=net),
                       rounds=rounds, iterations=1, warmup_rounds=10)


@pytest.mark.benchmark(group="network-startup")
def test_run_network_none(benchmark, rounds, rootfs):
    benchmark.pedantic(lambda: isolate.run(["/bin/true"], rootfs=rootfs, network="none"),
                       rounds=rounds, iterations=1, warmup_rounds=10)


@pytest.fixture(scope="module")
def dockerd(rootfs):
    """A dockerd of the benchmark's own with its default bridge and iptables
    (in the session's network namespace), with the busybox root as an image."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd is not installed (apt-get install docker.io)")
    from tests.test_engines import _cgroup_dirs, _umount_below
    base = tempfile.mkdtemp(prefix="bd-", dir="/tmp")      # a short socket path
    sock = f"unix://{base}/d.sock"
    with open(f"{base}/daemon.json", "w") as f:
        f.write("{}")
    log = open(f"{base}/log", "wb")
    parents = [d for d in _cgroup_dirs("docker") if not os.path.isdir(d)]
    d = subprocess.Popen(["dockerd", "--config-file", f"{base}/daemon.json", "--data-root",
                          f"{base}/data", "--exec-root", f"{base}/x", "--pidfile", f"{base}/pid",
                          "-H", sock, "--iptables=true", "--ip6tables=false",
                          "--default-ulimit", "nofile=1024:1024"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    docker = ["docker", "-H", sock]
    try:
        end = time.monotonic() + 60
        while subprocess.run([*docker, "version"], capture_output=True).returncode != 0:
            if time.monotonic() > end or d.poll() is not None:
                pytest.skip("dockerd did not start here: "
                            + open(f"{base}/log", "rb").read()[-300:].decode(errors="replace"))
            time.sleep(0.2)
        tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True)
        subprocess.run([*docker, "import", "-", "bench/busybox"], input=tar.stdout, check=True,
                       capture_output=True)
        yield docker
    finally:
        d.terminate()
        try:
            d.wait(30)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
        log.close()
        _umount_below(base)
        shutil.rmtree(base, ignore_errors=True)
        for p in parents:
            try:
                os.rmdir(p)
            except OSError:
                pass
        # what dockerd leaves in the session's namespace: its bridge
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)


@pytest.mark.benchmark(group="network-startup")
@pytest.mark.parametrize("network", ["bridge", "none"])
def test_docker_run(benchmark, rounds, dockerd, network):
    cmd = [*dockerd, "run", "--rm", "--network", network, "bench/busybox", "/bin/true"]
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True, capture_output=True),
                       rounds=max(rounds // 30, 5), iterations=1, warmup_rounds=1)


def _stream(start_receiver, run_sender) -> float:
    """MB/s of one stream: the receiver's own count over its own clock."""
    receiver = start_receiver()
    try:
        assert receiver.stdout.readline().strip() == "ready"
        run_sender()
        return float(receiver.stdout.readline())
    finally:
        receiver.kill()
        receiver.wait()
        receiver.stdout.close()


@pytest.fixture(scope="module")
def stream_bytes(quick) -> int:
    return 64 << 20 if quick else STREAM


@pytest.mark.benchmark(group="network-stream")
def test_stream_isolate_network(benchmark, rounds, net, stream_bytes):
    py = [sys.executable, "-I", "-c"]
    rates = []
    with isolate.Container(network=net, hostname="rx") as rx, \
            isolate.Container(network=net, hostname="tx") as tx:
        def once():
            rates.append(_stream(
                lambda: rx.spawn([*py, RECEIVER], stdout=subprocess.PIPE, text=True),
                lambda: tx.run([*py, SENDER, "rx", str(stream_bytes)], check=True)))
        benchmark.pedantic(once, rounds=max(rounds // 20, 3), iterations=1, warmup_rounds=1)
    benchmark.extra_info["mb_per_s"] = statistics.median(rates)


@pytest.mark.benchmark(group="network-stream")
def test_stream_plain_veth(benchmark, rounds, stream_bytes):
    """Two network namespaces (each held by a sleeping process), one veth
    pair between them."""
    py = [sys.executable, "-I", "-c"]
    holders = [subprocess.Popen(["unshare", "--net", "sleep", "infinity"]) for _ in range(2)]
    a, b = (str(h.pid) for h in holders)
    mine = os.readlink("/proc/self/ns/net")
    while any(os.readlink(f"/proc/{h.pid}/ns/net") == mine for h in holders):
        time.sleep(0.001)
    sh = (f"ip link add va netns {a} type veth peer vb netns {b} && "
          f"nsenter -t {a} -n ip addr add 10.201.0.1/24 dev va && "
          f"nsenter -t {b} -n ip addr add 10.201.0.2/24 dev vb && "
          f"nsenter -t {a} -n ip link set va up && nsenter -t {b} -n ip link set vb up && "
          f"nsenter -t {a} -n ip link set lo up && nsenter -t {b} -n ip link set lo up")
    rates = []
    try:
        subprocess.run(["sh", "-c", sh], check=True)

        def once():
            rates.append(_stream(
                lambda: subprocess.Popen(["nsenter", "-t", b, "-n", *py, RECEIVER],
                                         stdout=subprocess.PIPE, text=True),
                lambda: subprocess.run(["nsenter", "-t", a, "-n", *py, SENDER, "10.201.0.2",
                                        str(stream_bytes)], check=True)))
        benchmark.pedantic(once, rounds=max(rounds // 20, 3), iterations=1, warmup_rounds=1)
    finally:
        for h in holders:
            h.kill()
            h.wait()
    benchmark.extra_info["mb_per_s"] = statistics.median(rates)

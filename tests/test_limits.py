"""Resource limits seen from inside, enforced by cgroups: v1 on a v1 or hybrid
host, v2 in tests/vm (a guest with every v2 controller) or on a v2 host."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import isolate
from isolate import Container, ContainerOOMError, isolated
from isolate import _cgroups

LAYOUT = _cgroups.layout()
pytestmark = pytest.mark.skipif(LAYOUT is None, reason="no cgroups mounted here")


def cgfile(c, controller, name):
    """A file of the container's cgroup for controller (v1 names), read."""
    d = c._cgroups.dirs[controller if LAYOUT == "v1" else ""]
    with open(f"{d}/{name}") as f:
        return f.read().strip()


def _rmdir_soon(*dirs):
    """Remove test cgroups once the processes that were in them are gone."""
    for d in dirs:
        for _ in range(100):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


@pytest.fixture
def block_device(tmp_path):
    """A loop device over a 16 MiB file."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    try:
        dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no loop device here: {e}")
    yield dev
    subprocess.run(["losetup", "-d", dev], check=True)

ALLOC = "head -c {n} /dev/zero | tail | wc -c"     # tail holds one endless line: n bytes


def test_memory_over_the_limit_is_oom_killed_and_reported(rootfs):
    r = isolate.run(["sh", "-c", "set -o pipefail 2>/dev/null; " + ALLOC.format(n=100_000_000)],
                    rootfs=rootfs, memory="50M", capture_output=True, text=True)
    assert r.oom_killed is True
    assert r.stdout.strip() != "100000000"


def test_memory_under_the_limit_is_left_alone(rootfs):
    r = isolate.run(["sh", "-c", ALLOC.format(n=30_000_000)], rootfs=rootfs, memory="50M",
                    capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "30000000"
    assert r.oom_killed is False


def test_oom_in_a_running_container_and_from_call(rootfs):
    with Container(rootfs=rootfs, memory="50M") as c:
        assert c.run(["sh", "-c", ALLOC.format(n=100_000_000)], capture_output=True).oom_killed
        assert not c.run(["true"]).oom_killed
        with pytest.raises(ContainerOOMError) as e:
            c.call(lambda: bytearray(200 << 20))
        assert e.value.signal == signal.SIGKILL
        assert c.call(lambda: len(bytearray(10 << 20))) == 10 << 20


def test_isolated_reports_oom(rootfs):
    @isolated(rootfs=rootfs, memory="64M")
    def hog():
        return len(bytearray(300 << 20))

    with pytest.raises(ContainerOOMError):
        hog()


def test_fork_bomb_under_pids_limit(rootfs):
    with Container(rootfs=rootfs, pids=32) as c:
        r = c.run(["sh", "-c", "for i in $(seq 100); do sleep 5 & done 2>&1; wait"],
                  capture_output=True, text=True, timeout=30)
        assert "Resource temporarily unavailable" in r.stdout + r.stderr
        n = int(c.run(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"], capture_output=True,
                      text=True).stdout or 0)
        assert n <= 33
    # and the container still stopped cleanly (no_leaks checks what is left)


def test_cpus_half_a_cpu(rootfs):
    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        t = os.times()
        return t.user + t.system

    with Container(rootfs=rootfs, cpus=0.5) as c:
        used = c.call(spin, 2.0)
    assert 0.85 <= used <= 1.15, used


def test_container_sees_its_own_cgroup_as_root(rootfs):
    r = isolate.run(["cat", "/proc/self/cgroup"], rootfs=rootfs, memory="64M", pids=64,
                    capture_output=True, text=True)
    for line in r.stdout.splitlines():
        assert line.endswith(":/"), line


def test_cgroups_are_in_place_while_running_and_gone_after(rootfs):
    with Container(rootfs=rootfs, memory="64M", pids=50, cpus=1) as c:
        dirs = dict(c._cgroups.dirs)
        if LAYOUT == "v1":
            assert set(dirs) == {"memory", "pids", "cpu", "cpuacct", "freezer"}
            assert int(cgfile(c, "memory", "memory.limit_in_bytes")) == 64 << 20
            assert cgfile(c, "cpu", "cpu.cfs_quota_us") == "100000"
        else:
            assert int(cgfile(c, "memory", "memory.max")) == 64 << 20
            assert cgfile(c, "cpu", "cpu.max") == "100000 100000"
        assert cgfile(c, "pids", "pids.max") == "50"
        assert str(c.pid) in cgfile(c, "pids", "cgroup.procs").split()    # the init is in it
    assert not any(os.path.exists(d) for d in dirs.values())


def test_the_container_sees_its_cgroup_read_only_at_sys_fs_cgroup(rootfs):
    with Container(rootfs=rootfs, memory="64M", pids=50) as c:
        sub = "memory/" if LAYOUT == "v1" else ""
        r = c.run(["sh", "-c", f"cat /sys/fs/cgroup/{sub}memory.{'limit_in_bytes' if sub else 'max'}"
                               f" /sys/fs/cgroup/{'pids/' if sub else ''}pids.max; "
                               f"echo 1 > /sys/fs/cgroup/{'pids/' if sub else ''}pids.max"],
                  capture_output=True, text=True)
        assert r.stdout.split() == [str(64 << 20), "50"]
        assert "Read-only file system" in r.stderr
        assert cgfile(c, "pids", "pids.max") == "50"


def _python_in(cgroup: str, code: str) -> subprocess.CompletedProcess:
    """code, run by a new Python process that first moves itself into cgroup."""
    script = f"open({cgroup + '/cgroup.procs'!r}, 'w').write('0')\n" + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)


def test_stale_cgroups_of_a_dead_owner_are_swept(rootfs, monkeypatch):
    """What an owner that crashed left goes at the next program's first
    start, and within SWEEP_EVERY seconds at a start of a running one."""
    base = _cgroups.V1.base("pids") if LAYOUT == "v1" else _cgroups.V2.base()
    dead = 2 ** 22 + 1      # above pid_max's default range: not a live process
    stale = f"{base}/{_cgroups.PREFIX}{dead}-feedfacecafe"
    os.mkdir(stale)
    code = f"import isolate; isolate.run(['true'], rootfs={rootfs!r}, pids=10, check=True)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not os.path.exists(stale)

    monkeypatch.setattr(_cgroups, "SWEEP_EVERY", 0.1)
    isolate.run(["true"], rootfs=rootfs, pids=10)
    os.mkdir(stale)
    time.sleep(0.15)
    isolate.run(["true"], rootfs=rootfs, pids=10)
    assert not os.path.exists(stale)


def test_cpuset_pins_the_container(rootfs):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU here")
    last = cpus[-1]
    with Container(rootfs=rootfs, cpuset=str(last), cpuset_mems="0") as c:
        assert c.call(os.sched_getaffinity, 0) == {last}
        r = c.run(["grep", "Cpus_allowed_list", "/proc/self/status"], capture_output=True,
                  text=True)
        assert r.stdout.split()[-1] == str(last)
        c.update(cpuset=f"{cpus[0]}-{last}")
        assert c.call(os.sched_getaffinity, 0) == set(range(cpus[0], last + 1))


def test_io_max_throttles_direct_reads(rootfs, block_device):
    dev = block_device
    dd = ["dd", "if=/dev/disk", "of=/dev/null", "bs=1M", "count=6", "iflag=direct"]
    devices = [f"{dev}:/dev/disk"]
    with Container(rootfs=rootfs, devices=devices) as c:     # unlimited: quick
        t = time.monotonic()
        assert c.run(dd, capture_output=True).returncode == 0
        fast = time.monotonic() - t
    with Container(rootfs=rootfs, devices=devices, io_max={dev: {"rbps": "2M"}}) as c:
        key = "blkio.throttle.read_bps_device" if LAYOUT == "v1" else "io.max"
        assert f"{os.major(os.stat(dev).st_rdev)}:" in cgfile(c, "blkio", key)
        t = time.monotonic()
        r = c.run(dd, capture_output=True, text=True)
        took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert took >= 2.0 > fast, (took, fast, r.stderr)    # 6 MB at 2 MB/s, less a first burst


def test_io_weight_reaches_the_cgroup_or_is_refused(rootfs):
    try:
        with Container(rootfs=rootfs, io_weight=500) as c:
            if LAYOUT == "v2":
                assert "default 500" in cgfile(c, "blkio", "io.weight")
            else:           # v2's 500 as v1's 10..1000
                assert "59" in cgfile(c, "blkio", "blkio.bfq.weight").split()
            c.update(io_weight=50)
    except isolate.ContainerError as e:
        assert LAYOUT == "v1" and "io_weight needs" in str(e)


@pytest.mark.parametrize("opts, exc", [
    ({"memory": "12Q"}, ValueError),
    ({"memory": "100k"}, ValueError),
    ({"pids": 0}, ValueError),
    ({"pids": "many"}, TypeError),
    ({"cpus": 0}, ValueError),
    ({"cpus": 10_000}, ValueError),
    ({"cpus": "half"}, TypeError),
])
def test_bad_limits_fail_before_anything(opts, exc):
    with pytest.raises(exc):
        Container(**opts)


def test_pool_calls_are_limited_each_in_its_own_container(rootfs):
    def pids_max():
        name = "pids/pids.max" if os.path.isdir("/sys/fs/cgroup/pids") else "pids.max"
        with open(f"/sys/fs/cgroup/{name}") as f:
            return f.read().strip()

    with isolate.Pool(size=2, memory="64M", pids=20) as pool:
        assert pool.call(pids_max) == "20"
        with pytest.raises(ContainerOOMError):
            pool.call(lambda: len(bytearray(300 << 20)))
        assert pool.call(lambda: len(bytearray(10 << 20))) == 10 << 20    # a fresh one
        assert pool.call(os.getpid) == 2      # beside its init


def test_stats_follow_the_workload(rootfs):
    with Container(rootfs=rootfs, memory="256M", pids=100) as c:
        before = c.stats()
        p = c.spawn(["sh", "-c", "head -c 60000000 /dev/zero | tail & sleep 0.5; "
                                 "for i in 1 2 3 4 5; do sleep 120 & done; wait"])
        deadline = time.monotonic() + 60       # slow machines (emulated ones) take a while
        while True:
            time.sleep(0.2)
            during = c.stats()
            if during.memory_current > before.memory_current + (40 << 20) and \
                    during.pids_current >= before.pids_current + 5 or time.monotonic() > deadline:
                break
        p.kill()
        p.wait()
    assert before.memory_limit == 256 << 20 and before.pids_limit == 100
    assert during.memory_current > before.memory_current + (40 << 20)
    assert during.memory_peak >= during.memory_current
    assert during.pids_current >= before.pids_current + 5
    assert during.cpu_usage_ns > before.cpu_usage_ns
    assert during.oom_kills == 0


@pytest.mark.parametrize("limit", [{"cpus": 0.5}, {"memory": "64M"}, {"pids": 50}])
def test_stats_report_memory_cpu_and_pids_whatever_the_limit(rootfs, limit):
    """Any limit gives a container cgroups, and its stats then cover memory,
    CPU and PIDs, on v1 as on v2."""
    with Container(rootfs=rootfs, **limit) as c:
        c.spawn(["sleep", "30"])
        c.run(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done"])
        s = c.stats()
    assert s.pids_current >= 2          # the init and the sleep
    assert s.memory_current > 0
    assert s.cpu_usage_ns > 0
    assert s.oom_kills == 0
    assert (s.memory_limit is None) == ("memory" not in limit)
    assert (s.pids_limit is None) == ("pids" not in limit)


def test_update_takes_effect_and_refuses_bad_values(rootfs):
    with Container(rootfs=rootfs, memory="32M", pids=20) as c:
        alloc = ["sh", "-c", ALLOC.format(n=60_000_000)]
        assert c.run(alloc, capture_output=True).oom_killed
        c.update(memory="128M")
        r = c.run(alloc, capture_output=True, text=True)
        assert not r.oom_killed and r.stdout.strip() == "60000000"
        with pytest.raises(ValueError):
            c.update(memory="garbage")
        with pytest.raises(ValueError):
            c.update(cpus=0.5)                  # made without a CPU limit
        assert c.stats().memory_limit == 128 << 20    # the old value stays
        c.update(pids=5)
        r = c.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done 2>&1; wait"],
                  capture_output=True, text=True)
        assert "Resource temporarily unavailable" in r.stdout + r.stderr


def test_pause_stops_progress_and_resume_restores_it(rootfs):
    with Container(rootfs=rootfs, pids=50) as c:
        c.spawn(["sh", "-c", "while true; do echo x >> /tmp/log; done"])
        time.sleep(0.3)
        c.pause()
        a = _counter(c)
        time.sleep(0.3)
        b = _counter(c)
        assert a == b                           # frozen: no progress
        c.resume()
        time.sleep(0.3)
        assert _counter(c) > b


def _counter(c):
    # the log's size, read from the host through the init's root (in a frozen
    # container a process started to look would freeze too); it only grows
    try:
        return os.stat(f"/proc/{c.pid}/root/tmp/log").st_size
    except FileNotFoundError:
        return 0


def test_no_cgroups_without_limits():
    with Container() as c:
        with pytest.raises(RuntimeError, match="no cgroups"):
            c.stats()
        with pytest.raises(RuntimeError, match="no cgroups"):
            c.pause()


def test_cpu_weight_and_memory_swap_reach_the_cgroup(rootfs):
    try:
        c = Container(rootfs=rootfs, memory="64M", memory_swap="96M", cpu_weight=50).start()
    except isolate.ContainerError as e:
        assert "swap accounting" in str(e)
        pytest.skip("no swap accounting on this kernel")
    with c:
        if LAYOUT == "v1":
            assert int(cgfile(c, "cpu", "cpu.shares")) == 512
            assert int(cgfile(c, "memory", "memory.memsw.limit_in_bytes")) == 96 << 20
            c.update(cpu_weight=200)
            assert int(cgfile(c, "cpu", "cpu.shares")) == 2048
        else:
            assert cgfile(c, "cpu", "cpu.weight") == "50"
            assert int(cgfile(c, "memory", "memory.swap.max")) == 32 << 20
            c.update(cpu_weight=200, memory="80M")
            assert cgfile(c, "cpu", "cpu.weight") == "200"
            assert int(cgfile(c, "memory", "memory.swap.max")) == 16 << 20


@pytest.mark.parametrize("opts", [
    {"memory_swap": "64M"},                          # without memory
    {"memory": "64M", "memory_swap": "32M"},         # below memory
    {"cpu_weight": 0},
    {"cpu_weight": 20000},
    {"cpuset": "0-"},
    {"cpuset": "4096"},
    {"cpuset_mems": "9"},
    {"io_weight": 0},
    {"io_max": {"/dev/null": {"rbps": "1M"}}},       # not a block device
    {"io_max": {"/nonexistent": {"rbps": "1M"}}},
    {"io_max": {"/dev/loop0": {"speed": 1}}},
    {"io_max": {"/dev/loop0": {"riops": "many"}}},
])
def test_bad_swap_and_weight(opts):
    with pytest.raises(ValueError):
        Container(**opts)


@pytest.mark.skipif(LAYOUT != "v2", reason="cgroup v2 delegation")
def test_v2_names_the_controller_a_subtree_was_not_given():
    """A caller in a subtree offered pids but not memory: memory= is refused
    with the controller named, and nothing is left behind."""
    top = f"{_cgroups.ROOT}/isolate-test-deleg"
    with open(f"{_cgroups.ROOT}/cgroup.subtree_control", "w") as f:
        f.write("+pids")
    os.mkdir(top)
    try:
        with open(f"{top}/cgroup.subtree_control", "w") as f:
            f.write("+pids")
        os.mkdir(f"{top}/mid")
        os.mkdir(f"{top}/mid/leaf")
        r = _python_in(f"{top}/mid/leaf",
                       "import isolate\n"
                       "isolate.run(['true'], pids=10)\n"
                       "try:\n"
                       "    isolate.run(['true'], memory='64M')\n"
                       "except isolate.ContainerError as e:\n"
                       "    print(e)\n")
        assert "memory controller is not delegated" in r.stdout, r.stdout + r.stderr
        assert f"{top}/mid" in r.stdout
        assert not [n for n in os.listdir(f"{top}/mid") if n.startswith(_cgroups.PREFIX)]
    finally:
        _rmdir_soon(f"{top}/mid/leaf", f"{top}/mid", top)


def test_pool_reports_cgroups_it_cannot_make_v1_only():
    """A caller confined to CPU 0 asks for CPU 1: each call's worker reports
    the cgroup error, and the pool goes on."""
    if LAYOUT != "v1" or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("v1 cpuset with two CPUs")
    narrow = f"{_cgroups.V1.base('cpuset')}/isolate-test-narrow"
    os.mkdir(narrow)
    try:
        for f, v in (("cpuset.cpus", "0"), ("cpuset.mems", "0")):
            with open(f"{narrow}/{f}", "w") as fh:
                fh.write(v)
        r = _python_in(narrow,
                       "import os, isolate\n"
                       "with isolate.Pool(size=1, cpuset='1') as pool:\n"
                       "    for _ in range(2):\n"
                       "        try:\n"
                       "            pool.call(os.getpid)\n"
                       "        except isolate.ContainerError as e:\n"
                       "            print('refused:', e)\n")
        assert r.stdout.count("cgroup: writing '1' to") == 2, r.stdout + r.stderr
    finally:
        _rmdir_soon(narrow)


def test_an_oci_configs_unified_files_reach_the_containers_cgroup(tmp_path, rootfs):
    """isolate-runc: linux.resources.unified (cgroup v2 files by name, as
    Kubernetes sets memory.oom.group) is written into the container's cgroup,
    as the container sees it; on cgroup v1 it is refused, as runc refuses it,
    and nothing is left behind."""
    from tests.test_runc import RUNC, _bundle, _cgroup_bases, _gone, _run
    root, parent = str(tmp_path / "state"), f"isolate-test-unified-{os.getpid()}"
    runc = [*RUNC, "--root", root]
    bundle = _bundle(tmp_path, rootfs, ["cat", "/sys/fs/cgroup/memory.high",
                                        "/sys/fs/cgroup/memory.oom.group"], parent, **{
        "linux.resources.unified": {"memory.high": "33554432", "memory.oom.group": "1"}})
    try:
        r = _run(runc, "run", "--bundle", bundle, "c1", check=False)
        if _cgroups.layout() == "v2":
            assert r.returncode == 0 and r.stdout.split() == ["33554432", "1"], r.stderr
        else:
            assert r.returncode == 1 and "linux.resources.unified" in r.stderr, r.stderr
        _gone(root, parent, "c1")
    finally:
        for base in _cgroup_bases(parent):
            if os.path.isdir(base):
                os.rmdir(base)

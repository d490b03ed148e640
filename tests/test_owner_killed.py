"""An owner SIGKILLed leaves no cgroups behind: its reaper removes them.

The owner here is a Python child process that makes containers with limits
(a Container, and a Pool whose zygote makes its workers' cgroups). This test
process starts no container with limits meanwhile, so that no sweep of
_cgroups can be what removes them.
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from isolate import _cgroups

LAYOUT = _cgroups.layout()
pytestmark = pytest.mark.skipif(LAYOUT is None, reason="no cgroups mounted here")


def _stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields after the name (state first), or None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int | str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _cgroups_of(owner: int) -> set[str]:
    """The cgroups named for owner, wherever a container's can be (v1 or v2)."""
    name = f"{_cgroups.PREFIX}{owner}-*"
    found = set(glob.glob(f"{_cgroups.ROOT}/{name}")) | set(glob.glob(f"{_cgroups.ROOT}/*/{name}"))
    for base in _cgroups.bases():
        found |= set(glob.glob(f"{base}/{name}"))
    return found


def _reapers(owner: int) -> list[int]:
    """Live reaper processes watching owner."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "isolate-reaper":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        # python -I -S -c PROGRAM OWNERPID ... (a zombie's is empty)
        if b"-c" in args and args[args.index(b"-c") + 2:][:1] == [str(owner).encode()] \
                and _alive(pid):
            found.append(int(pid))
    return found


def _wait_for(what, timeout: float = 10.0):
    """what() once true, or its last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _owner(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ready(owner: subprocess.Popen) -> list[str]:
    line = owner.stdout.readline().split()
    assert line[:1] == ["ready"], line
    return line[1:]


def _end(owner: subprocess.Popen) -> None:
    owner.kill()
    owner.wait()
    owner.stdin.close()
    owner.stdout.close()


MAKER = """
    import sys, time, isolate
    rootfs = sys.argv[1]
    c = isolate.Container(rootfs=rootfs, memory="64M", pids=32).start()
    c.spawn(["sleep", "100"])
    pool = isolate.Pool(size=2, rootfs=rootfs, memory="64M")
    assert pool.call(abs, -1) == 1
    print("ready", c.pid, pool._zygote.pid, flush=True)
    time.sleep(100)
"""


def _check_reaper(reaper: int, owner: int) -> None:
    """Detached from the owner: its own session and group, nothing of the
    owner's open but what it watches the owner by (a pidfd), at /."""
    stat, mine = _stat(reaper), _stat(owner)
    assert stat is not None and mine is not None
    assert stat[2] != mine[2] and stat[3] != mine[3]        # process group, session:
    assert stat[2] == stat[3]                               # those of sh, which has exited
    assert stat[4] == "0"                                   # no controlling terminal
    fds = {fd: os.readlink(f"/proc/{reaper}/fd/{fd}") for fd in os.listdir(f"/proc/{reaper}/fd")}
    stdio = ("0", "1", "2")
    assert sorted(v for fd, v in fds.items() if fd in stdio) == ["/dev/null"] * 3, fds
    assert [v for fd, v in fds.items() if fd not in stdio] == ["anon_inode:[pidfd]"], fds
    assert os.readlink(f"/proc/{reaper}/cwd") == "/"


def test_sigkilled_owner_leaves_no_cgroups(rootfs):
    owner = _owner(MAKER, rootfs)
    try:
        init, zygote = map(int, _ready(owner))
        made = _cgroups_of(owner.pid)
        workers = _cgroups_of(zygote)
        assert made and len(workers) >= (2 if LAYOUT == "v2" else 4), (made, workers)
    finally:
        _end(owner)
    # containers, zygote and workers end; their cgroups and the reapers go
    gone = _wait_for(lambda: not (_cgroups_of(owner.pid) | _cgroups_of(zygote) or
                                  _reapers(owner.pid) or _reapers(zygote) or
                                  _alive(init) or _alive(zygote)))
    assert gone, {"cgroups": _cgroups_of(owner.pid) | _cgroups_of(zygote),
                  "reapers": _reapers(owner.pid) + _reapers(zygote),
                  "init": _alive(init), "zygote": _alive(zygote)}
    # no_leaks then checks that no process of another PID namespace remains


def test_one_reaper_per_owner_detached_from_it(rootfs):
    owner = _owner(MAKER, rootfs)
    try:
        init, zygote = map(int, _ready(owner))
        reaper = _wait_for(lambda: _reapers(owner.pid), 5)
        assert len(reaper) == 1
        assert len(_wait_for(lambda: _reapers(zygote), 5)) == 1
        _check_reaper(reaper[0], owner.pid)
    finally:
        _end(owner)
    assert _wait_for(lambda: not (_cgroups_of(owner.pid) | _cgroups_of(zygote)
                                  or _reapers(owner.pid) or _reapers(zygote)))


def test_sigkilled_zygote_leaves_no_cgroups_of_its_workers(rootfs):
    """The zygote owns its workers' cgroups: killed with the pool's owner, it
    cannot remove them itself."""
    owner = _owner(MAKER, rootfs)
    try:
        init, zygote = map(int, _ready(owner))
        assert _cgroups_of(zygote)
        os.kill(zygote, signal.SIGKILL)
    finally:
        _end(owner)
    assert _wait_for(lambda: not (_cgroups_of(owner.pid) | _cgroups_of(zygote)
                                  or _reapers(owner.pid) or _reapers(zygote))), \
        (_cgroups_of(owner.pid) | _cgroups_of(zygote), _reapers(owner.pid) + _reapers(zygote))


def test_the_reaper_ends_with_an_owner_that_ends_normally(rootfs):
    owner = _owner("""
        import sys, isolate
        rootfs = sys.argv[1]
        with isolate.Container(rootfs=rootfs, memory="64M", pids=32) as c:
            c.run(["true"], check=True)
        isolate.run(["true"], rootfs=rootfs, pids=16, check=True)
        print("ready", flush=True)
        sys.stdin.readline()
    """, rootfs)
    try:
        _ready(owner)
        assert len(_wait_for(lambda: _reapers(owner.pid), 5)) == 1    # one for both
        owner.stdin.close()
        assert owner.wait(10) == 0
        assert _wait_for(lambda: not _reapers(owner.pid), 5)
        assert not _cgroups_of(owner.pid)
    finally:
        _end(owner)


def test_no_reaper_for_an_owner_without_cgroups(rootfs):
    owner = _owner("""
        import sys, isolate
        rootfs = sys.argv[1]
        with isolate.Container(rootfs=rootfs) as c:
            c.run(["true"], check=True)
        isolate.run(["true"], rootfs=rootfs, check=True)
        print("ready", flush=True)
        sys.stdin.readline()
    """, rootfs)
    try:
        _ready(owner)
        time.sleep(0.3)
        assert not _reapers(owner.pid)
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _stat(p) is not None
                    and _stat(p)[1] == str(owner.pid)]         # no child of it at all
    finally:
        _end(owner)


def _unified() -> list[str]:
    """Beside v1, a cgroup v2 mount (hybrid) where the v2 way of killing can be tried."""
    hybrid = f"{_cgroups.ROOT}/unified"
    return [hybrid] if LAYOUT == "v1" and os.path.exists(f"{hybrid}/cgroup.controllers") else []


@pytest.mark.parametrize("where", ["layout", *(["unified"] if _unified() else [])])
def test_the_reaper_kills_what_is_left_and_removes_nested_cgroups(where):
    """A process still in the owner's cgroups (a container without a PID
    namespace; or one that a cgroup made inside) is killed, and the cgroups
    go, children first."""
    bases = _cgroups.bases() if where == "layout" else _unified()
    owner = subprocess.Popen(["sleep", "100"])
    left = subprocess.Popen(["sleep", "100"])
    dirs = [f"{base}/{_cgroups.PREFIX}{owner.pid}-feedfacecafe" for base in bases]
    try:
        for d in dirs:
            os.mkdir(d)
            if d.startswith(f"{_cgroups.ROOT}/cpuset/"):
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(f"{os.path.dirname(d)}/{name}") as f, open(f"{d}/{name}", "w") as t:
                        t.write(f.read())
            os.mkdir(f"{d}/nested")
            if d.startswith(f"{_cgroups.ROOT}/cpuset/"):
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(f"{d}/{name}") as f, open(f"{d}/nested/{name}", "w") as t:
                        t.write(f.read())
            with open(f"{d}/nested/cgroup.procs", "w") as f:
                f.write(str(left.pid))
        _cgroups._spawn_reaper(owner.pid, bases)
        assert _wait_for(lambda: _reapers(owner.pid), 5)
        time.sleep(0.2)
        assert left.poll() is None and all(os.path.isdir(d) for d in dirs)  # owner alive
        owner.kill()
        owner.wait()
        assert left.wait(10) == -signal.SIGKILL
        assert _wait_for(lambda: not any(os.path.exists(d) for d in dirs)), dirs
        assert _wait_for(lambda: not _reapers(owner.pid), 5)
    finally:
        for p in (owner, left):
            p.kill()
            p.wait()
        for d in dirs:
            for sub in (f"{d}/nested", d):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass

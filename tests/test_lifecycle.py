"""Containers end cleanly however they end: closed, crashed, abandoned, or their owner killed."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import isolate
from isolate import Container

from .conftest import assert_no_leaks, snapshot


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_close_is_idempotent_and_repr_tells_state(rootfs):
    c = Container(rootfs=rootfs, hostname="h")
    assert repr(c) == f"<Container {c.id} new rootfs={rootfs}>"
    c.start()
    assert repr(c) == f"<Container {c.id} running pid={c.pid} rootfs={rootfs}>"
    assert c.running and _alive(c.pid)
    pid = c.pid
    c.close()
    c.close()
    assert repr(c) == f"<Container {c.id} closed rootfs={rootfs}>"
    assert not c.running and not _alive(pid)


def test_close_kills_everything_inside(rootfs):
    with Container(rootfs=rootfs) as c:
        p = c.spawn(["sh", "-c", "sleep 100 & sleep 100 & exec sleep 100"])
        inside = c.run(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"], capture_output=True,
                       text=True).stdout
        assert int(inside) >= 5
    assert p.returncode == -signal.SIGKILL


def test_caller_exception_removes_container(rootfs):
    with pytest.raises(ZeroDivisionError):
        with Container(rootfs=rootfs) as c:
            c.spawn(["sleep", "100"])
            pid = c.pid
            1 / 0
    assert not _alive(pid)


def test_init_killed_from_outside(rootfs):
    with Container(rootfs=rootfs) as c:
        p = c.spawn(["sleep", "100"])
        os.kill(c.pid, signal.SIGKILL)
        assert p.wait(10) == -signal.SIGKILL
        with pytest.raises(OSError):
            c.run(["true"])
    assert not c.running


def test_unclosed_container_warns_and_is_removed(rootfs):
    c = Container(rootfs=rootfs).start()
    pid = c.pid
    with pytest.warns(ResourceWarning, match="unclosed container"):
        del c
        gc.collect()
    assert not _alive(pid)


def test_container_outlives_the_thread_that_made_it(rootfs):
    box = {}
    t = threading.Thread(target=lambda: box.update(c=Container(rootfs=rootfs).start()))
    t.start()
    t.join()
    time.sleep(0.2)
    with box["c"] as c:
        assert _alive(c.pid)
        assert c.run(["true"]).returncode == 0


def test_threads_share_a_container(rootfs):
    errors = []
    with Container(rootfs=rootfs) as c:
        def work(i):
            try:
                for _ in range(10):
                    r = c.run(["echo", str(i)], capture_output=True, text=True)
                    assert r.stdout == f"{i}\n"
            except Exception as e:      # pragma: no cover - reported below
                errors.append(e)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


OWNER = textwrap.dedent("""
    import sys, time, isolate
    rootfs = sys.argv[1]
    c = isolate.Container(rootfs=rootfs).start()
    c.spawn(["sleep", "100"])
    import threading
    threading.Thread(target=lambda: isolate.run(["sleep", "100"], rootfs=rootfs), daemon=True).start()
    time.sleep(0.5)
    print(c.pid, flush=True)
    time.sleep(100)
""")


def test_owner_sigkilled_takes_its_containers_along(rootfs):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, rootfs], stdout=subprocess.PIPE,
                             text=True)
    try:
        init = int(owner.stdout.readline())
        assert _alive(init)
        inits = [p for p in os.listdir("/proc") if p.isdigit() and _is_init_of(p, owner.pid)]
        assert len(inits) == 2      # the Container's and isolate.run's
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(int(p)) for p in inits) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(int(p)) for p in inits)
    # no_leaks then checks that no process of any other PID namespace remains


def _is_init_of(pid: str, owner: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return "(isolate-init)" in stat and stat.rsplit(")", 1)[1].split()[1] == str(owner)


def test_crash_inside_leaves_nothing(rootfs):
    with Container(rootfs=rootfs) as c:
        assert c.run(["sh", "-c", "kill -SEGV $$"]).returncode == -signal.SIGSEGV
        assert c.run(["true"]).returncode == 0


@pytest.mark.slow
def test_no_leak_after_200_containers(rootfs):
    before = snapshot()
    for i in range(100):
        assert isolate.run(["true"], rootfs=rootfs).returncode == 0
    for i in range(60):
        with Container(rootfs=rootfs) as c:
            c.run(["true"])
    for i in range(40):
        with pytest.raises(subprocess.TimeoutExpired):
            isolate.run(["sleep", "10"], rootfs=rootfs, timeout=0.01)
    assert_no_leaks(before)


def test_a_caller_that_closed_every_fd_still_starts_containers(tmp_path):
    """A daemon closes every fd it did not open, the init's sealed copy
    included (and reuses the number): the next start makes a new copy."""
    code = textwrap.dedent(f"""
        import os, isolate
        isolate.run(["true"])
        os.closerange(3, 1024)
        fd = os.open({str(tmp_path / "taken")!r}, os.O_CREAT | os.O_RDWR)
        os.dup2(fd, 10)
        print(isolate.run(["true"]).returncode)
        with isolate.Container() as c:
            print(c.run(["true"]).returncode)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"]

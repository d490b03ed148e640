"""Pool: a fresh, pre-made container for every call; an Executor in every respect."""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from isolate import ContainerDied, Pool


def double(x):
    """A function of this module, which the busybox image cannot import."""
    return 2 * x


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.fixture()
def pool(rootfs):
    with Pool(size=3, rootfs=rootfs, network="none", hostname="pooled") as p:
        yield p


def test_call_and_isolation_seen_from_inside(pool):
    def look(x):
        with open("/scratch-marker", "a+") as f:       # the overlay root is writable...
            f.seek(0)
            before = f.read()
            f.write("x")
        with open("/proc/self/comm") as f:
            name = f.read().strip()
        return (x * 2, os.getpid(), socket.gethostname(), sorted(os.listdir("/sys/class/net")),
                before, sorted(p for p in os.listdir("/proc") if p.isdigit()), name)

    for i in range(4):
        doubled, pid, host, net, before, pids, name = pool.call(look, i)
        assert name == "isolate-worker"       # as ps shows it, on the host too
        assert doubled == 2 * i
        assert pid == 2                       # the worker is not its container's init,
        assert pids == ["1", "2"]             # which is the only other process there
        assert host == "pooled"
        assert net == ["lo"]
        assert before == ""                   # ...and every call gets a fresh root


def test_module_function_travels_by_value(pool):
    assert pool.call(double, 21) == 42
    assert list(pool.map(double, range(3))) == [0, 2, 4]


def test_what_the_worker_cannot_import_travels_by_value(pool, monkeypatch):
    """Functions of installed modules go by reference; objects of this module
    and of __main__ (the worker's __main__ is another) by value."""
    assert pool.call(double, 1) == 2          # this module is now sent by value
    assert pool.call(repr, Point(1, 2)) == "Point(x=1, y=2)"
    assert pool.call(repr, [Point]) == f"[<class '{Point.__module__}.Point'>]"

    def in_main():
        return "from __main__"
    in_main.__module__, in_main.__qualname__ = "__main__", "isolate_test_in_main"
    monkeypatch.setattr(sys.modules["__main__"], "isolate_test_in_main", in_main, raising=False)
    assert pool.call(in_main) == "from __main__"
    assert pool.call(len, "abc") == 3         # a builtin, by reference


def test_lambdas_closures_and_exceptions(pool):
    k = 5
    assert pool.call(lambda a, b=1: a + b + k, 1, b=2) == 8
    with pytest.raises(ValueError, match="from a worker"):
        pool.call(lambda: int("x") if False else (_ for _ in ()).throw(ValueError("from a worker")))


def test_submit_map_and_executor_protocol(pool):
    assert isinstance(pool, concurrent.futures.Executor)
    futs = [pool.submit(pow, 2, i) for i in range(10)]
    assert [f.result(30) for f in futs] == [2 ** i for i in range(10)]
    assert list(pool.map(lambda x: x * x, range(20))) == [x * x for x in range(20)]


def test_map_in_order_with_errors_in_place_and_timeout(pool):
    def check(x):
        if x == 3:
            raise ValueError(f"bad {x}")
        return x

    results = pool.map(check, range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad 3"):
        next(results)
    results.close()
    assert list(pool.map(pow, [2, 3], [5, 2])) == [32, 9]
    assert list(pool.map(int, [])) == []
    with pytest.raises(TimeoutError):
        list(pool.map(time.sleep, [1.5], timeout=0.3))


def test_map_ends_when_the_pool_shuts_down_cancelling(rootfs):
    p = Pool(size=1, rootfs=rootfs)
    results = p.map(time.sleep, [0.2] * 6)
    p.shutdown(wait=True, cancel_futures=True)
    with pytest.raises((concurrent.futures.CancelledError, RuntimeError)):
        list(results)


def test_asyncio_run_in_executor(pool):
    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(pool, abs, -i) for i in range(6)))
    assert asyncio.run(main()) == list(range(6))


def test_worker_death_is_reported_and_pool_recovers(rootfs):
    import ctypes
    with Pool(size=2, rootfs=rootfs, preload=["ctypes"]) as pool:
        _worker_deaths(pool, ctypes)


def _worker_deaths(pool, ctypes):
    with pytest.raises(ContainerDied) as e:
        pool.call(lambda: ctypes.string_at(0))           # a crash: SIGSEGV
    assert e.value.signal == signal.SIGSEGV
    with pytest.raises(ContainerDied):
        pool.call(lambda: os._exit(4))
    assert [pool.call(lambda i=i: i) for i in range(5)] == list(range(5))


def test_timeout(rootfs):
    with Pool(size=1, rootfs=rootfs, timeout=0.5) as p:
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            p.call(time.sleep, 100)
        assert time.monotonic() - t < 10
        assert p.call(lambda: "after") == "after"


def test_a_pool_keeps_nothing_of_finished_calls(rootfs):
    """A pool may serve millions of calls: what it notes of each must go."""
    with Pool(size=2, rootfs=rootfs, timeout=0.5) as p:
        for _ in range(20):
            p.call(int)
        with pytest.raises(TimeoutError):
            p.call(time.sleep, 100)
        with pytest.raises(ContainerDied):
            p.call(os._exit, 3)
        deadline = time.monotonic() + 5
        while (p._ended or p._unclaimed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not p._ended and not p._unclaimed


def test_calls_from_eight_threads(pool):
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        out = list(ex.map(lambda i: pool.call(lambda: (i, os.getpid())), range(40)))
    assert [i for i, _ in out] == list(range(40))


def test_cancel_kills_a_running_call(pool):
    f = pool.submit(time.sleep, 100)
    time.sleep(0.5)
    assert f.cancel()
    assert pool.call(lambda: 1) == 1


def test_shutdown_cancel_futures_and_refuses_more(rootfs):
    p = Pool(size=1, rootfs=rootfs)
    futs = [p.submit(time.sleep, 0.2) for _ in range(6)]
    p.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futs)
    assert all(f.done() for f in futs)
    with pytest.raises(RuntimeError, match="shutdown"):
        p.submit(int)
    p.shutdown()        # idempotent


def test_bad_options_fail_before_anything():
    with pytest.raises(ValueError):
        Pool(size=0)
    with pytest.raises(ValueError):
        Pool(network="no such network")
    with pytest.raises(TypeError):
        Pool(no_such_option=1)
    with pytest.raises(ValueError):
        Pool(timeout=-1)


def test_preload_makes_modules_importable_inside(rootfs):
    # the busybox image holds no Python: json comes from the worker's preload
    def dump():
        import json
        return json.dumps({"a": 1})
    with Pool(size=1, rootfs=rootfs, preload=["json"]) as p:
        assert p.call(dump) == '{"a": 1}'


def test_modules_in_the_working_directory_do_not_shadow_the_stdlib(rootfs, tmp_path, monkeypatch):
    """The zygote starts with `python -c`, whose import path begins with the
    working directory: a selectors.py there must not replace the standard one."""
    (tmp_path / "selectors.py").write_text("raise ImportError('not the standard selectors')\n")
    monkeypatch.chdir(tmp_path)
    with Pool(size=1, rootfs=rootfs) as p:
        assert p.call(os.getpid) == 2


def test_each_call_has_its_own_random_state_and_working_threads(rootfs):
    """Workers are forked from one zygote: each must still draw its own
    random numbers, and threads must work in it as in any process. (The
    busybox image has no Python library: what a worker imports, it preloads.)"""
    def draw():
        import random
        results = []
        t = threading.Thread(target=lambda: results.append(random.getrandbits(64)))
        t.start()
        t.join()
        return random.getrandbits(64), results[0], threading.current_thread() is threading.main_thread()

    with Pool(size=3, rootfs=rootfs, preload=["random"]) as pool:
        draws = list(pool.map(lambda _: draw(), range(6)))
    assert all(main for _, _, main in draws)
    numbers = [n for a, b, _ in draws for n in (a, b)]
    assert len(set(numbers)) == len(numbers)


def test_fork_handlers_of_preloaded_modules_run_in_each_worker(rootfs, tmp_path, monkeypatch):
    """What a preloaded module registers with os.register_at_fork runs in
    the worker, as it would in any fork."""
    (tmp_path / "forkhook_mod.py").write_text(
        "import os\n"
        "forks = []\n"
        "os.register_at_fork(after_in_child=lambda: forks.append(os.getpid()))\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def seen():
        return sys.modules["forkhook_mod"].forks

    with Pool(size=1, rootfs=rootfs, preload=["forkhook_mod"]) as p:
        assert p.call(seen) == [2]      # once, in the worker (PID 2 of its container)
        assert p.call(seen) == [2]


def test_a_preloaded_module_may_start_threads(rootfs, tmp_path, monkeypatch):
    """A zygote with a second thread forks with Python's fork handlers."""
    (tmp_path / "threaded_mod.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def draw():
        import random
        return random.getrandbits(64)

    with Pool(size=2, rootfs=rootfs, preload=["threaded_mod", "random"]) as p:
        assert len(set(p.map(lambda _: draw(), range(4)))) == 4


@pytest.mark.slow
def test_no_leak_after_1000_calls(rootfs):
    threads_before = threading.active_count()
    with Pool(size=4, rootfs=rootfs) as p:
        assert sum(p.map(lambda x: 1, range(1000))) == 1000
    assert threading.active_count() == threads_before
    # no_leaks checks mounts, processes, namespaces and fds


def test_a_pool_that_fails_to_start_leaves_nothing(rootfs, monkeypatch):
    import concurrent.futures

    def broken(*a, **k):
        raise RuntimeError("no threads today")

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", broken)
    with pytest.raises(RuntimeError, match="no threads"):
        Pool(size=1, rootfs=rootfs)
    # no_leaks: no zygote, worker, container, mount or fd remains


# --- commands: Pool.run and Pool.spawn ------------------------------------------


def test_pool_run_gives_each_command_a_fresh_container(rootfs):
    with Pool(size=2, rootfs=rootfs, hostname="cmd", memory="64M") as pool:
        seen = []
        for _ in range(4):
            r = pool.run(["sh", "-c", "echo $$; hostname; cat /marker 2>/dev/null; "
                                      "echo x > /marker; ls /proc | grep -c '^[0-9]'"],
                         capture_output=True, text=True, timeout=10)
            assert r.returncode == 0, r.stderr
            seen.append(r.stdout.split())
        for pid, host, processes in seen:
            assert pid == "2"                   # beside its init, which is PID 1
            assert host == "cmd"
            assert int(processes) <= 4          # init, sh, ls, grep: nothing from before
        r = pool.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True)
        assert r.returncode == 0


def test_pool_run_takes_subprocess_run_arguments(rootfs):
    with Pool(size=1, rootfs=rootfs) as pool:
        r = pool.run(["cat"], input=b"in", capture_output=True)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"in", b"")
        r = pool.run("echo $HOME; pwd; exit 7", shell=True, capture_output=True, text=True,
                     cwd="/tmp", env={"HOME": "/nowhere", "PATH": "/bin"})
        assert (r.returncode, r.stdout) == (7, "/nowhere\n/tmp\n")
        with pytest.raises(subprocess.CalledProcessError):
            pool.run(["false"], check=True)
        with pytest.raises(FileNotFoundError):
            pool.run(["no-such-command"])
        with pytest.raises(subprocess.TimeoutExpired):
            pool.run(["sleep", "30"], timeout=0.5)
        with pytest.raises(ValueError):
            pool.run([])
        with pytest.raises(ValueError):
            pool.run(["true"], pass_fds=[0])
        assert pool.run(["true"]).returncode == 0        # the pool still works


def test_pool_spawn_is_a_popen(rootfs):
    with Pool(size=1, rootfs=rootfs) as pool:
        p = pool.spawn(["sh", "-c", "read x; echo got $x; sleep 30"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
        p.stdin.write("hi\n")
        p.stdin.flush()
        assert p.stdout.readline() == "got hi\n"
        assert p.poll() is None
        p.terminate()                           # to the init, which passes it on
        assert p.wait(10) == -signal.SIGTERM
        p.stdin.close()
        p.stdout.close()


def test_pool_commands_are_limited_and_oom_killed(rootfs):
    with Pool(size=1, rootfs=rootfs, memory="32M", pids=10) as pool:
        r = pool.run(["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                                  "cat /sys/fs/cgroup/pids.max"], capture_output=True, text=True)
        assert r.stdout.strip() == "10"
        r = pool.run(["sh", "-c", "head -c 100000000 /dev/zero | tail"])
        assert r.oom_killed


def test_pool_commands_leave_nothing_behind(rootfs):
    from tests.conftest import assert_no_leaks, snapshot
    before = snapshot()
    with Pool(size=2, rootfs=rootfs, memory="64M") as pool:
        for _ in range(3):
            pool.run(["true"])
        p = pool.spawn(["sleep", "30"])         # still running at shutdown
        q = pool.spawn(["true"])                # ended, but never waited for
        time.sleep(0.5)
    assert p.returncode == -signal.SIGKILL    # ended with its container
    assert q.returncode == 0
    assert_no_leaks(before)


def test_classes_of_importable_modules_among_the_arguments_go_by_name(tmp_path):
    """Only the function's own module travels by value: a class of another
    module the container can import goes by name (by value, its methods
    would drag the module's globals along, a lock among them)."""
    import operator
    from isolate import Mount
    d = tmp_path / "mods"
    d.mkdir()
    (d / "isolate_test_counter.py").write_text(
        "import threading\nLOCK = threading.Lock()\n\n"
        "class Counter:\n    def __init__(self):\n        self.n = 0\n\n"
        "    def bump(self):\n        with LOCK:\n            self.n += 1\n        return self.n\n")
    sys.path.insert(0, str(d))
    try:
        import isolate_test_counter
        with Pool(size=1, mounts=[Mount.bind(d, str(d), readonly=True)]) as pool:
            assert pool.call(operator.methodcaller("bump"), isolate_test_counter.Counter()) == 1
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("isolate_test_counter", None)


def test_modules_the_workers_preloaded_go_by_name_and_hidden_ones_by_value(tmp_path):
    """A submodule of a preloaded package is the workers' own: its enum goes
    by name (a copy would not be the workers' member). A module under the
    caller's /tmp, which the container cannot see, goes by value, also when
    a lambda (which the C pickler refuses) comes first."""
    d = tmp_path / "pkgs"
    (d / "isolate_test_pkg").mkdir(parents=True)
    (d / "isolate_test_pkg" / "__init__.py").write_text(
        "from . import colors\n\ndef is_red(c):\n    return c is colors.Color.RED\n")
    (d / "isolate_test_pkg" / "colors.py").write_text(
        "import enum\n\nclass Color(enum.Enum):\n    RED = 1\n")
    (d / "isolate_test_hidden.py").write_text("class Box:\n    def __init__(self, n):\n"
                                              "        self.n = n\n")
    sys.path.insert(0, str(d))
    try:
        import isolate_test_hidden
        import isolate_test_pkg
        with Pool(size=1, preload=["isolate_test_pkg"]) as pool:
            assert pool.call(isolate_test_pkg.is_red, isolate_test_pkg.colors.Color.RED) is True
            assert pool.call(lambda box: box.n, isolate_test_hidden.Box(3)) == 3
    finally:
        sys.path.remove(str(d))
        for name in ("isolate_test_pkg", "isolate_test_pkg.colors", "isolate_test_hidden"):
            sys.modules.pop(name, None)

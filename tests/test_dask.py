"""Dask: a real LocalCluster (worker processes on the loopback) whose tasks run
in fresh isolate containers, seen from inside the tasks."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import isolate.dask  # noqa: E402
from isolate import ContainerDied, ContainerOOMError, Mount  # noqa: E402
from isolate._cgroups import layout  # noqa: E402

pytestmark = pytest.mark.slow

MEMORY_FILE = ("/sys/fs/cgroup/memory/memory.limit_in_bytes" if layout() == "v1"
               else "/sys/fs/cgroup/memory.max")
HOST_PIDNS = os.readlink("/proc/self/ns/pid")


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker():
    # Dask's worker processes share multiprocessing's resource tracker, which
    # would live as long as this process: started before any test counts processes
    import multiprocessing.resource_tracker as tracker
    tracker.ensure_running()
    yield
    stop = getattr(tracker._resource_tracker, "_stop", None)
    if stop is not None:        # (and ended with them: other tests count this process's children)
        stop()


def _cluster(plugin: isolate.dask.Isolated, n_workers: int = 2, threads: int = 2, **kwargs):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads,
                                    host="127.0.0.1", dashboard_address=None,
                                    plugins=[plugin], **kwargs)


def look(i):
    """What a task sees of where it runs; it leaves a file in /tmp."""
    with open(f"/tmp/task-{i}", "w") as f:
        f.write("x")
    try:
        with open(MEMORY_FILE) as f:
            memory = f.read().strip()
    except OSError:
        memory = None
    return {"i": i, "pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"),
            "tmp": sorted(os.listdir("/tmp")), "net": sorted(os.listdir("/sys/class/net")),
            "hostname": socket.gethostname(), "memory": memory}


def test_map_of_500_tasks_each_in_a_fresh_container_beside_plain_tasks():
    with _cluster(isolate.dask.Isolated(memory="256M", network="none", hostname="task")) as cluster, \
            distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            isolated = client.map(look, range(500))
        plain = [client.submit(who, pure=False) for _ in range(10)]   # no annotation: the worker's threads
        seen = client.gather(isolated)
        assert [s["i"] for s in seen] == list(range(500))
        for s in seen:
            assert s["pid"] in (1, 2)                     # its own PID namespace...
            assert s["pidns"] != HOST_PIDNS
            assert s["tmp"] == [f"task-{s['i']}"]         # ...and filesystem: no other task's file
            assert s["net"] == ["lo"]
            assert s["hostname"] == "task"
            assert s["memory"] == str(256 << 20)
        # namespace ids are freed and reused once a container is gone: many, not 500
        assert len({s["pidns"] for s in seen}) > 10
        for pid, pidns, hostname in client.gather(plain):
            assert pidns == HOST_PIDNS and pid > 2 and hostname != "task"
        for name in os.listdir("/tmp"):                   # the host's /tmp saw none of it
            assert not name.startswith("task-")


class ParseError(Exception):
    pass


def fails(x):
    raise ParseError(f"cannot parse {x!r}")


def test_registered_from_the_client_and_an_exception_keeps_its_type():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(isolate.dask.Isolated(hostname="registered"))
        with dask.annotate(executor="isolated"):
            assert client.submit(who).result()[2] == "registered"
        with dask.annotate(executor="isolated"):
            fut = client.submit(fails, "blob")
        with pytest.raises(ParseError, match="cannot parse 'blob'"):
            fut.result()


def killed_once(shared):
    """Kills its own container the first time; returns the second."""
    mark = os.path.join(shared, "tried")
    if not os.path.exists(mark):
        open(mark, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return ("second", os.getpid())


def test_a_task_whose_container_was_killed_fails_and_is_retried(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plugin = isolate.dask.Isolated(mounts=[Mount.bind(tmp_path, "/shared")])
    with _cluster(plugin, n_workers=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            once = client.submit(killed_once, "/shared/a", pure=False)
            retried = client.submit(killed_once, "/shared/b", retries=1, pure=False)
        with pytest.raises(ContainerDied, match="SIGKILL") as info:
            once.result()
        assert info.value.signal == signal.SIGKILL
        assert retried.result() == ("second", 2)
        assert len(client.scheduler_info()["workers"]) == 1     # the worker itself lives on


def _container_sleeps(tag: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", tag.encode()]:
                    found.append(int(pid))
        except OSError:
            pass
    return found


def sleeps(tag):
    subprocess.Popen(["sleep", tag])
    time.sleep(60)
    return "not cancelled"


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cancelling_a_running_task_kills_its_container():
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            fut = client.submit(sleeps, "4242")
        _wait_for(lambda: _container_sleeps("4242"))
        client.cancel(fut)
        _wait_for(lambda: not _container_sleeps("4242"), timeout=10)
        assert fut.cancelled()
        with dask.annotate(executor="isolated"):           # the worker goes on
            assert client.submit(look, 1).result()["pid"] == 2
        time.sleep(0.5)
        assert not _container_sleeps("4242")                # and did not run it again


def hog(mib):
    chunks = [bytearray(1 << 20) for _ in range(mib)]
    return len(chunks)


def test_a_task_killed_by_its_memory_limit_fails_with_container_oom_error():
    with _cluster(isolate.dask.Isolated(memory="64M"), n_workers=1) as cluster, \
            distributed.Client(cluster) as client:
        before = set(client.scheduler_info()["workers"])
        with dask.annotate(executor="isolated"):
            big = client.submit(hog, 256)
            small = client.submit(hog, 8)
        with pytest.raises(ContainerOOMError):
            big.result()
        assert small.result() == 8
        assert set(client.scheduler_info()["workers"]) == before     # no worker died or restarted


def slow_once(shared):
    """Notes each attempt; the first takes long enough for its worker to be killed."""
    with open(os.path.join(shared, "attempts"), "a") as f:
        f.write("x")
    with open(os.path.join(shared, "attempts")) as f:
        attempts = len(f.read())
    if attempts == 1:
        time.sleep(60)
    return attempts


def test_a_worker_killed_mid_task_has_its_task_rescheduled(tmp_path):
    plugin = isolate.dask.Isolated(mounts=[Mount.bind(tmp_path, "/shared")])
    with _cluster(plugin, n_workers=2, threads=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            fut = client.submit(slow_once, "/shared")
        _wait_for(lambda: (tmp_path / "attempts").exists())
        running = [w for w, keys in client.processing().items() if fut.key in keys]
        assert len(running) == 1
        pid = client.run(os.getpid, workers=running)[running[0]]
        os.kill(pid, signal.SIGKILL)
        assert fut.result(timeout=60) == 2


def who():
    return (os.getpid(), os.readlink("/proc/self/ns/pid"), socket.gethostname())


async def who_async():
    await asyncio.sleep(0)
    return who()


def test_every_task_isolated_with_default_and_options_per_task():
    plugin = isolate.dask.Isolated(default=True, hostname="all")
    with _cluster(plugin, n_workers=1) as cluster, distributed.Client(cluster) as client:
        plain = client.submit(who)
        coroutine = client.submit(who_async)        # not on the worker's own event loop
        with dask.annotate(isolate={"hostname": "other", "memory": "128M"}):
            other = client.submit(look, 3)
        with dask.annotate(isolate={"memory": "lots"}):
            bad = client.submit(who, pure=False)
        with dask.annotate(isolate={"trusted": True}):
            untrusting = client.submit(who, pure=False)
        with dask.annotate(isolate={"timeout": 0.5}):
            late = client.submit(time.sleep, 30)
        assert plain.result()[0] == 2 and plain.result()[1] != HOST_PIDNS
        assert plain.result()[2] == "all"
        assert coroutine.result()[0] == 2 and coroutine.result()[1] != HOST_PIDNS
        seen = other.result()
        assert (seen["hostname"], seen["memory"], seen["pid"]) == ("other", str(128 << 20), 2)
        with pytest.raises(ValueError, match="memory"):
            bad.result()
        with pytest.raises(ValueError, match="trusted"):
            untrusting.result()
        with pytest.raises(TimeoutError, match="0.5 s"):
            late.result()


def test_an_annotated_coroutine_function_runs_in_its_container():
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            fut = client.submit(who_async)
        pid, pidns, _ = fut.result()
        assert pid == 2 and pidns != HOST_PIDNS


def a_set_subclass():
    class Sneaky(set):
        pass
    return Sneaky({1})


def test_results_are_data_unless_the_plugin_trusts_the_tasks():
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            fut = client.submit(a_set_subclass)
        with pytest.raises(isolate.SerializationError):
            fut.result()


def test_bad_plugin_options_fail_in_the_client():
    with pytest.raises(ValueError, match="memory"):
        isolate.dask.Isolated(memory="lots")
    with pytest.raises(TypeError, match="colour"):
        isolate.dask.Isolated(colour="blue")
    with pytest.raises(ValueError, match="size"):
        isolate.dask.Isolated(size=0)


def test_dask_worker_command_line_with_preload(tmp_path):
    with distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", cluster.scheduler_address, "--no-nanny",
             "--nthreads", "2", "--no-dashboard", "--host", "127.0.0.1",
             "--local-directory", str(tmp_path),
             "--preload", "isolate.dask", "--isolate-all", "--isolate-memory", "256M",
             "--isolate-network", "none"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            client.wait_for_workers(1, timeout=60)
            seen = client.gather(client.map(look, range(20)))
            assert all(s["pid"] == 2 and s["pidns"] != HOST_PIDNS for s in seen)
            assert all(s["memory"] == str(256 << 20) and s["net"] == ["lo"] for s in seen)
            worker.terminate()              # as a cluster manager stops it
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            worker.stderr.close()


def test_a_trusting_plugin_takes_any_picklable_result():
    with _cluster(isolate.dask.Isolated(trusted=True), n_workers=1) as cluster, \
            distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            fut = client.submit(a_set_subclass)
        value = fut.result()
        assert type(value).__name__ == "Sneaky" and value == {1}


def exits_the_worker():
    import sys
    sys.exit(0)


def interrupts_the_worker():
    raise KeyboardInterrupt


def test_a_task_cannot_end_its_worker_with_system_exit_or_keyboard_interrupt():
    """Dask's worker re-raises both, and would die: from a container, a
    SystemExit is the process exiting (ContainerDied), anything else that is
    not an Exception a RemoteError; the worker goes on."""
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        before = set(client.scheduler_info()["workers"])
        with dask.annotate(executor="isolated"):
            exited = client.submit(exits_the_worker)
            interrupted = client.submit(interrupts_the_worker)
        with pytest.raises(ContainerDied, match="SystemExit"):
            exited.result()
        with pytest.raises(isolate.RemoteError, match="KeyboardInterrupt"):
            interrupted.result()
        assert set(client.scheduler_info()["workers"]) == before


def test_annotations_cannot_weaken_the_boundary(tmp_path):
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        asked = [{"privileged": True}, {"network": "host"}, {"seccomp": None},
                 {"mounts": [Mount.bind(tmp_path, "/host", readonly=False)]}, {"user": "0:0"}]
        futures = []
        for options in asked:
            with dask.annotate(executor="isolated", isolate=options):
                futures.append(client.submit(who, pure=False))
        for options, fut in zip(asked, futures):
            with pytest.raises(ValueError, match=f"{next(iter(options))} is the worker's choice"):
                fut.result()


def test_every_task_isolated_refuses_other_executors():
    with _cluster(isolate.dask.Isolated(default=True), n_workers=1) as cluster, \
            distributed.Client(cluster) as client:
        for name in ("offload", "actor"):
            with dask.annotate(executor=name):
                fut = client.submit(who, pure=False)
            with pytest.raises(RuntimeError, match="every task on this worker does"):
                fut.result()


def _kill_zygotes(dask_worker):
    killed = []
    for pool in dask_worker.executors["isolated"]._pools.values():
        os.kill(pool._zygote.pid, signal.SIGKILL)
        pool._zygote.wait()
        killed.append(pool._zygote.pid)
    return killed


def test_a_pool_whose_zygote_died_is_made_again():
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(executor="isolated"):
            assert client.submit(who, pure=False).result()[0] == 2
        assert all(client.run(_kill_zygotes).values())
        with dask.annotate(executor="isolated"):
            assert [r["pid"] for r in client.gather(client.map(look, range(5), pure=False))] == [2] * 5


def test_container_options_alone_make_a_task_run_isolated():
    """dask.annotate(isolate={...}) without an executor: the task runs in a
    container with those options, not on the worker's threads without them;
    with another executor named, it fails."""
    with _cluster(isolate.dask.Isolated(), n_workers=1) as cluster, distributed.Client(cluster) as client:
        with dask.annotate(isolate={"hostname": "by-options"}):
            fut = client.submit(who, pure=False)
        with dask.annotate(isolate={"hostname": "x"}, executor="offload"):
            refused = client.submit(who, pure=False)
        pid, pidns, hostname = fut.result()
        assert (pid, hostname) == (2, "by-options") and pidns != HOST_PIDNS
        with pytest.raises(RuntimeError, match="it has container options"):
            refused.result()


def sees():
    """A task's view of its root and its network."""
    with open("/etc/hostname") as f:
        return f.read(), sorted(os.listdir("/sys/class/net")), os.getpid()


@pytest.mark.skipif(os.geteuid() != 0, reason="networks need root")
def test_tasks_in_containers_of_an_image_on_a_network(rootfs, tmp_path):
    from tests.images import build_image, rootfs_layer
    [img] = isolate.load(build_image(str(tmp_path / "img.tar"), [rootfs_layer(rootfs)],
                                     name="localhost/dask-image:1"))
    try:
        with isolate.Network(subnet="10.89.17.0/24") as net:
            plugin = isolate.dask.Isolated(image="localhost/dask-image:1", network=net.name)
            with _cluster(plugin, n_workers=1) as cluster, distributed.Client(cluster) as client:
                with dask.annotate(executor="isolated"):
                    seen = client.gather(client.map(lambda i: sees(), range(8)))
                with dask.annotate(isolate={"image": "localhost/dask-image:1"}):
                    annotated = client.submit(sees, pure=False).result()
            assert all(s == ("image\n", ["eth0", "lo"], 2) for s in seen), seen
            assert annotated == ("image\n", ["eth0", "lo"], 2)
    finally:
        isolate.rmi("localhost/dask-image:1")
        isolate.prune()

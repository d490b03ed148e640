"""Python functions inside containers: results, exceptions, deaths, and what they see."""
from __future__ import annotations

import concurrent.futures
import decimal
import os
import sys
import signal
import socket
import threading
import time

import pytest

import isolate
from isolate import (Container, ContainerDied, RemoteError, RemoteTraceback, SerializationError,
                     isolated)


@pytest.fixture()
def box(rootfs):
    with Container(rootfs=rootfs, hostname="fnbox") as c:
        yield c


@pytest.mark.parametrize("value", [
    None, 0, -7, 2**100, 1.5, "text", b"\x00bytes", [1, [2, 3]], {"a": (1, 2)}, {1, 2},
    frozenset({3}), decimal.Decimal("1.10"), ValueError("as a value"), range(3), 1j,
])
def test_return_values(box, value):
    assert box.call(lambda: value) == value or repr(box.call(lambda: value)) == repr(value)


def test_builtin_and_arguments(box):
    assert box.call(len, [1, 2, 3]) == 3
    assert box.call(lambda a, b: a + b, 2, b=3) == 5
    assert box.call(dict, a=1, timeout=2) == {"a": 1, "timeout": 2}   # every keyword reaches fn


def test_closure_and_local_class(box, rootfs):
    base = 40

    class Local:
        def __init__(self, n):
            self.n = n

    def add(x):
        return Local(base + x)

    with pytest.raises(SerializationError, match="trusted=True"):
        box.call(add, 2)            # not data: only a trusting caller takes it
    with Container(rootfs=rootfs, trusted=True) as c:
        assert c.call(add, 2).n == 42


def test_exception_type_message_and_remote_traceback(box):
    def deep():
        raise KeyError("missing-key")

    with pytest.raises(KeyError) as e:
        box.call(lambda: deep())
    assert e.value.args == ("missing-key",)
    assert isinstance(e.value.__cause__, RemoteTraceback)
    assert "in deep" in str(e.value.__cause__)
    assert "missing-key" in str(e.value.__cause__)


def test_unpicklable_result_and_exception(box):
    with pytest.raises(SerializationError, match="_thread.lock"):
        box.call(threading.Lock)

    class Bad(Exception):
        def __reduce__(self):
            raise TypeError("no pickling for you")

    def boom():
        raise Bad()

    # its pickling is not needed; its class, local to a function, cannot be found
    with pytest.raises(RemoteError, match="Bad"):
        box.call(boom)
    with pytest.raises(SerializationError, match="ValueError.*_thread.lock"):
        box.call(lambda: (_ for _ in ()).throw(ValueError(threading.Lock())))


def test_function_that_kills_itself(box):
    with pytest.raises(ContainerDied) as e:
        box.call(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert e.value.signal == signal.SIGKILL
    with pytest.raises(ContainerDied) as e:
        box.call(lambda: os._exit(3))
    assert e.value.exitcode == 3
    assert box.call(lambda: "still serving") == "still serving"


def test_isolation_seen_from_inside(box, rootfs):
    def look():
        with open("/etc/hostname") as f:
            image_hostname = f.read().strip()
        return {
            "pid": os.getpid(),
            "pid1": open("/proc/1/cmdline", "rb").read().split(b"\0")[0],
            "hostname": socket.gethostname(),
            "net": sorted(os.listdir("/sys/class/net")),
            "image": image_hostname,
            "cwd": os.getcwd(),
            "uid": os.getuid(),
            "env": dict(os.environ),
            "fds": sorted(os.listdir("/proc/self/fd")),
        }
    opened = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    for fd in opened:
        os.set_inheritable(fd, True)
    try:
        seen = box.call(look)
    finally:
        for fd in opened:
            os.close(fd)
    assert 1 < seen["pid"] < 50
    assert seen["pid1"] == b"isolate-init"
    assert seen["hostname"] == "fnbox"
    assert seen["net"] == ["lo"]
    assert seen["image"] == "image"            # the busybox rootfs, not the host's /etc
    assert seen["cwd"] == "/"
    assert seen["uid"] == 0
    assert set(seen["env"]) == {"PATH", "HOME"}
    assert not set(seen["fds"]) & {str(fd) for fd in opened}   # only stdio and the result pipe


def test_big_argument_and_result(box):
    blob = os.urandom(1 << 20) * 100            # 100 MB
    assert box.call(len, blob) == len(blob)
    out = box.call(lambda n: b"x" * n, 100 << 20)
    assert len(out) == 100 << 20


def test_children_of_a_call_are_gone_afterwards(box):
    def spawn_children():
        pids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                time.sleep(100)
                os._exit(0)
            pids.append(pid)
        return pids

    def living(pids):
        out = []
        for p in pids:
            try:
                with open(f"/proc/{p}/status") as f:
                    state = f.read().split("\n")[2]
            except OSError:         # gone (perhaps just now)
                continue
            if "Z" not in state:
                out.append(p)
        return out

    pids = box.call(spawn_children)
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = box.call(living, pids)
        time.sleep(0.05)
    assert alive == []


def test_output_reaches_callers_stdout(box, capfd):
    box.call(lambda: print("from inside", flush=False))
    assert "from inside" in capfd.readouterr().out


def test_calls_from_eight_threads(box):
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda i: box.call(lambda: (i, os.getpid())), range(64)))
    assert [i for i, _ in results] == list(range(64))
    assert len({pid for _, pid in results}) > 1


def test_submit_and_cancel_kills(box):
    f = box.submit(lambda: 6 * 7)
    assert f.result(10) == 42
    slow = box.submit(time.sleep, 100)
    time.sleep(0.3)
    assert slow.cancel()
    assert slow.cancelled()
    # the killed process is gone from the container
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = box.call(lambda: [p for p in os.listdir("/proc") if p.isdigit()])
        if len(pids) <= 2:      # the init and this probe
            break
        time.sleep(0.05)
    assert len(pids) <= 2


def test_isolate_call_is_a_fresh_container():
    assert isolate.call(socket.gethostname) != socket.gethostname()
    assert isolate.call(lambda: os.listdir("/sys/class/net")) == ["lo"]


def test_isolated_decorator_fresh_container_each_call(rootfs):
    @isolated(rootfs=rootfs, network="none")
    def where(x):
        with open("/marker", "a+") as f:
            f.seek(0)
            seen = f.read()
            f.write("x")
        return x, seen, socket.gethostname()

    a = where(1)
    b = where(2)
    assert a[0] == 1 and b[0] == 2
    assert a[1] == "" and b[1] == ""         # the first call's write did not survive
    assert a[2] != b[2]
    assert where.__name__ == "where"


def test_isolated_timeout(rootfs):
    @isolated(rootfs=rootfs, timeout=0.5)
    def forever():
        time.sleep(100)

    t = time.monotonic()
    with pytest.raises(TimeoutError):
        forever()
    assert time.monotonic() - t < 10


def test_isolated_checks_options_when_decorating():
    with pytest.raises(ValueError):
        isolated(network="no such network")
    with pytest.raises(TypeError):
        isolated(no_such_option=1)


def test_call_on_closed_container(rootfs):
    c = Container(rootfs=rootfs)
    with c:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        c.call(int)


def test_output_goes_to_a_redirected_stdout_and_stderr():
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()

    def talk():
        print("to stdout", flush=True)
        print("to stderr ✓", file=sys.stderr)
        os.system("echo from a child process")
        return 7

    with Container() as c:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert c.call(talk) == 7
        assert out.getvalue() == "to stdout\nfrom a child process\n"
        assert err.getvalue() == "to stderr ✓\n"


def test_output_reaches_capsys(capsys):
    with Container() as c:
        c.call(print, "seen by capsys")
    assert capsys.readouterr().out == "seen by capsys\n"


def test_redirected_output_does_not_wait_for_an_escaped_daemon():
    import contextlib
    import io
    import time
    out = io.StringIO()
    with Container() as c:
        t = time.monotonic()
        with contextlib.redirect_stdout(out):
            c.call(os.system, "setsid sleep 30 & echo started")
        assert time.monotonic() - t < 10
        assert out.getvalue() == "started\n"


@pytest.mark.parametrize("cut", [3, 8, 20])
def test_a_frame_that_comes_in_pieces(cut):
    """The result pipe may deliver a frame in parts: a piece of the header, the
    header alone, part of the payload."""
    from isolate import _wire
    frame = _wire.frame(b"x" * 100)
    r, w = os.pipe()
    try:
        os.write(w, frame[:cut])
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            got = ex.submit(_wire.receive, r, time.monotonic() + 10)
            time.sleep(0.05)
            os.write(w, frame[cut:] + b"left behind")
            assert got.result() == b"x" * 100
        os.close(w)
        w = -1
        assert _wire.receive(r) is None         # end of file: no frame
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)

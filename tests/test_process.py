"""Commands in containers behave as subprocess's: exit codes, signals, timeouts, pipes."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

import isolate
from isolate import Container


@pytest.fixture()
def box(rootfs):
    with Container(rootfs=rootfs) as c:
        yield c


def commands_in(c: Container) -> list[str]:
    """The argv[0] of every process in the container, but this probe's."""
    out = c.run(["sh", "-c", "for p in /proc/[0-9]*; do [ $p = /proc/$$ ] || "
                             "head -c 100 $p/cmdline | tr '\\0' '\\n' | head -1; done"],
                capture_output=True, text=True).stdout
    return sorted(out.split())


@pytest.mark.parametrize("code", [0, 1, 3, 127, 255])
def test_exit_code(box, rootfs, code):
    assert box.run(["sh", "-c", f"exit {code}"]).returncode == code
    assert isolate.run(["sh", "-c", f"exit {code}"], rootfs=rootfs).returncode == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_signal_gives_negative_returncode(box, rootfs, sig):
    script = f"kill -{int(sig)} $$"
    assert box.run(["sh", "-c", script]).returncode == -sig
    assert isolate.run(["sh", "-c", script], rootfs=rootfs).returncode == -sig


def test_check_raises_called_process_error(box, rootfs):
    with pytest.raises(subprocess.CalledProcessError) as e:
        box.run(["sh", "-c", "echo out; echo err >&2; exit 4"], check=True, capture_output=True)
    assert e.value.returncode == 4 and e.value.stdout == b"out\n" and e.value.stderr == b"err\n"
    with pytest.raises(subprocess.CalledProcessError):
        isolate.run(["false"], rootfs=rootfs, check=True)


def test_input_and_text(box, rootfs):
    r = box.run(["tr", "a-z", "A-Z"], input="hello", capture_output=True, text=True)
    assert r.stdout == "HELLO"
    r = isolate.run(["wc", "-c"], input=b"x" * 100000, capture_output=True, rootfs=rootfs)
    assert r.stdout.strip() == b"100000"


def test_stdout_to_file_and_stderr_to_stdout(box, tmp_path):
    with open(tmp_path / "out", "wb") as f:
        box.run(["sh", "-c", "echo a; echo b >&2"], stdout=f, stderr=subprocess.STDOUT)
    assert sorted((tmp_path / "out").read_text().split()) == ["a", "b"]


def test_timeout_kills_command_and_children(box):
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        box.run(["sh", "-c", "sleep 100 & sleep 100 & sleep 100"], timeout=0.5)
    assert time.monotonic() - t < 10
    assert commands_in(box) == ["isolate-init"]


def test_timeout_oneshot_ends_container(rootfs):
    before = set(os.listdir("/proc"))
    with pytest.raises(subprocess.TimeoutExpired):
        isolate.run(["sh", "-c", "sleep 100 & sleep 100"], rootfs=rootfs, timeout=0.3)
    _assert_gone(before, b"sleep")


def test_oneshot_interrupted_by_the_caller_ends_container(rootfs):
    """An exception in the caller while isolate.run waits (here from a signal
    handler, as KeyboardInterrupt comes) kills the container on its way out."""
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(*_):
        raise Interrupted

    before = set(os.listdir("/proc"))
    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(Interrupted):
            isolate.run(["sh", "-c", "sleep 100 & sleep 100"], rootfs=rootfs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    _assert_gone(before, b"sleep\x00100")


def test_oneshot_interrupted_twice_still_reaps_the_container(rootfs, monkeypatch):
    """A second interruption while isolate.run reaps the container it has just
    killed (a second Ctrl-C) still leaves nothing: the reap goes on, then the
    interruption is raised. The no_leaks fixture checks for the init, a
    zombie otherwise, and the fds."""
    real_waitpid = os.waitpid
    calls = []

    def waitpid(pid, options):
        calls.append(pid)
        if len(calls) <= 2:         # the wait, then the reap after SIGKILL
            raise KeyboardInterrupt
        return real_waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", waitpid)
    with pytest.raises(KeyboardInterrupt):
        isolate.run(["sleep", "100"], rootfs=rootfs)
    monkeypatch.undo()
    assert len(calls) == 3


def test_close_interrupted_while_it_reaps_still_ends_the_container(rootfs, monkeypatch):
    real_waitpid = os.waitpid
    c = Container(rootfs=rootfs).start()
    init = c.pid
    interrupted = []

    def waitpid(pid, options):
        if pid == init and not interrupted:
            interrupted.append(pid)
            raise KeyboardInterrupt
        return real_waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", waitpid)
    with pytest.raises(KeyboardInterrupt):
        c.close()
    monkeypatch.undo()
    assert interrupted and "closed" in repr(c)
    c.close()       # idempotent; no_leaks checks the init, its fds and the rest


def test_oneshot_timeout_longer_than_poll_takes(rootfs):
    assert isolate.run(["true"], rootfs=rootfs, timeout=1e12).returncode == 0


def _assert_gone(before: set[str], cmdline: bytes) -> None:
    """No process new since before (a listing of /proc) runs cmdline: nothing
    of a killed container remains. Killed processes may take a moment to be
    fully gone on a loaded machine; the no_leaks fixture checks the rest."""
    deadline = time.monotonic() + 5
    while True:
        left = [p for p in set(os.listdir("/proc")) - before
                if p.isdigit() and cmdline in _cmdline(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, {p: _cmdline(p) for p in left}


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:         # gone meanwhile
        return b""


def test_spawn_popen_interface(box):
    p = box.spawn(["sh", "-c", "read x; echo got $x; sleep 30"], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, text=True)
    assert p.poll() is None and p.returncode is None
    p.stdin.write("line\n")
    p.stdin.flush()
    assert p.stdout.readline() == "got line\n"
    p.terminate()
    assert p.wait(timeout=5) == -signal.SIGTERM
    p.stdout.close()
    p.stdin.close()


def test_spawn_wait_timeout_and_kill(box):
    p = box.spawn(["sleep", "30"])
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.1)
    p.kill()
    assert p.wait() == -signal.SIGKILL


def test_spawn_communicate(box):
    p = box.spawn(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, err = p.communicate(b"abc", timeout=5)
    assert (out, err, p.returncode) == (b"abc", None, 0)


def _init_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me and "(isolate-init)" in stat:
            found.append(int(pid))
    return found


def test_oneshot_init_forwards_signals_to_command(rootfs):
    import threading
    result = {}
    t = threading.Thread(target=lambda: result.update(r=isolate.run(["sleep", "30"], rootfs=rootfs)))
    t.start()
    deadline = time.monotonic() + 10
    while not _init_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    (init,) = _init_children()
    time.sleep(0.1)
    os.kill(init, signal.SIGTERM)       # PID 1 would ignore it; the init passes it on
    t.join(10)
    assert result["r"].returncode == -signal.SIGTERM


def test_signal_to_container_init_does_not_stop_it(box):
    os.kill(box.pid, signal.SIGUSR1)
    assert box.run(["true"]).returncode == 0


def test_missing_command_is_file_not_found(box, rootfs):
    with pytest.raises(FileNotFoundError) as e:
        box.run(["no-such-command"])
    assert e.value.filename == "no-such-command"
    assert "no-such-command" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        isolate.run(["/bin/no-such-command"], rootfs=rootfs)
    assert e.value.filename == "/bin/no-such-command"


def test_not_executable_is_permission_error(box):
    box.run(["sh", "-c", "echo x > /tmp/f; chmod 644 /tmp/f"], check=True)
    with pytest.raises(PermissionError):
        box.run(["/tmp/f"])


def test_bad_cwd_names_the_step(box):
    with pytest.raises(isolate.ContainerError) as e:
        box.run(["true"], cwd="/no/such/dir")
    assert e.value.step == "chdir" and e.value.filename == "/no/such/dir"


def test_shell_and_executable(box):
    assert box.run("echo $0", shell=True, capture_output=True, text=True).stdout == "/bin/sh\n"
    # busybox picks the applet from argv[0]; "echo" is not on this PATH, the executable is
    r = box.run(["echo", "hi"], executable="/bin/busybox", env={"PATH": "/nowhere"},
                capture_output=True, text=True)
    assert r.stdout == "hi\n"


def test_pass_fds(box):
    r, w = os.pipe()
    try:
        box.run(["sh", "-c", f"echo through >&{w}"], pass_fds=[w], check=True)
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"through\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_inheritable_fds_do_not_reach_the_container(box, rootfs):
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    try:
        for fd in fds:
            os.set_inheritable(fd, True)
        expect = ["0", "1", "2", "3"]      # 3: ls's own directory fd
        out = box.run(["ls", "/proc/self/fd"], capture_output=True, text=True).stdout
        assert sorted(out.split()) == expect
        out = isolate.run(["ls", "/proc/self/fd"], capture_output=True, text=True,
                          rootfs=rootfs).stdout
        assert sorted(out.split()) == expect
    finally:
        for fd in fds:
            os.close(fd)


def test_processes_get_their_own_session(box):
    sid = box.run(["sh", "-c", "cut -d' ' -f6 /proc/$$/stat; echo $$"], capture_output=True,
                  text=True).stdout.split()
    assert sid[0] == sid[1]


CLOSE_WHILE_OTHERS_RUN = """
import random, sys, threading, time, isolate
live, lock = {}, threading.Lock()
def worker(i):
    rnd = random.Random(i)
    for j in range(5):
        c = isolate.Container(rootfs=sys.argv[1])
        c.start()
        with lock:
            live[(i, j)] = c
        time.sleep(rnd.random() * 0.1)
        with lock:
            others = list(live.values())
        for other in others:        # perhaps being closed by its thread
            try:
                other.run(["true"], capture_output=True, timeout=10)
            except Exception:
                pass
        with lock:
            del live[(i, j)]
        c.close()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done")
"""


def test_close_while_other_threads_start_commands_in_it_ends(rootfs):
    """Threads that close their containers while other threads start
    commands in them: the init's end waits for every process of its PID
    namespace to be reaped, a command being started among them, whose
    thread needs the container's lock to reap it. close() waits for the
    init without the lock, so every thread ends."""
    import sys
    r = subprocess.run([sys.executable, "-c", CLOSE_WHILE_OTHERS_RUN, rootfs],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr[-2000:]


def test_a_second_close_returns_once_the_first_is_done(rootfs):
    import threading
    c = Container(rootfs=rootfs)
    c.start()
    c.spawn(["sleep", "60"])
    init = c.pid
    first = threading.Thread(target=c.close)
    first.start()
    c.close()       # while the first is under way, or after it
    with pytest.raises(ProcessLookupError):
        os.kill(init, 0)        # reaped: nothing of it is left
    first.join()

"""The boundary, attacked from inside as an attacker would: nothing of the
caller (memory, environment, fds, root, executable, control channel) may be
reached by a process in the container.

The containers here use the host's root (read-only), so the attacker is the
host's own Python running inside.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import isolate
from isolate import Container, Pool

SECRET = "isolate-test-secret-" + os.urandom(8).hex()

#: Watches the container's PID namespace for each new process and, while it
#: exists, tries what runc's CVE-2016-9962 allowed: the process's environment
#: and memory (/proc/N/environ, /proc/N/mem), its fds and its root. Prints a
#: LEAK line for each success that shows the caller's secret, the caller's
#: memory (a Python mapped: the racer's own is skipped), a host fd, or a
#: root that is not the container's; SEEN n at the end.
RACER = textwrap.dedent(r"""
    import errno, os, sys, time
    secret, marker, seconds = sys.argv[1].encode(), sys.argv[2], float(sys.argv[3])
    memory = sys.argv[4] == "1"
    leaks, seen = set(), set()
    deadline = time.monotonic() + seconds
    me = os.getpid()
    print("READY", flush=True)
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (1, me):
                continue
            n = int(name)
            seen.add(n)
            base = f"/proc/{n}/"
            try:
                with open(base + "environ", "rb") as f:
                    if secret in f.read():
                        leaks.add("environ")
            except OSError:
                pass
            try:        # the caller's memory (or a copy of it): a python mapped
                fd = os.open(base + "mem", os.O_RDONLY)
                try:
                    with open(base + "maps") as f:
                        if memory and "python" in f.read():
                            leaks.add("mem")
                finally:
                    os.close(fd)
            except OSError:
                pass
            try:
                for fd in os.listdir(base + "fd"):
                    if marker in os.readlink(base + "fd/" + fd):
                        leaks.add("fd")
            except OSError:
                pass
            try:
                if os.path.exists(base + "root" + marker):
                    leaks.add("root")
            except OSError:
                pass
    for leak in sorted(leaks):
        print("LEAK", leak)
    print("SEEN", len(seen), flush=True)
""")


@pytest.fixture()
def host_marker():
    """A file only the host sees (the container's /tmp is its own), kept
    open by the caller: found through a container process's root or fds,
    it shows the caller's."""
    path = f"/tmp/isolate-marker-{os.urandom(6).hex()}"
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    os.environ["ISOLATE_TEST_SECRET"] = SECRET
    try:
        yield path
    finally:
        del os.environ["ISOLATE_TEST_SECRET"]
        os.close(fd)
        os.unlink(path)


def _race(c: Container, marker: str, seconds: float, action, memory: bool = True) -> list[str]:
    racer = c.spawn([sys.executable, "-c", RACER, SECRET, marker, str(seconds), str(int(memory))],
                    stdout=subprocess.PIPE, text=True)
    try:
        assert racer.stdout.readline() == "READY\n"
        action()
        out = racer.communicate(timeout=seconds + 30)[0]
    finally:
        racer.kill()
        racer.wait()
    lines = out.splitlines()
    assert lines and lines[-1].startswith("SEEN ")
    assert int(lines[-1].split()[1]) > 20, "the racer saw too few processes to mean anything"
    return [line for line in lines if line.startswith("LEAK")]


@pytest.mark.parametrize("caps", [[], ["SYS_PTRACE"]])
def test_a_racer_inside_never_reaches_the_caller_through_joining_processes(host_marker, caps):
    """Commands joining a running container (Container.run/spawn)."""
    with Container(cap_add=caps) as c:
        def action():
            for _ in range(150):
                c.run(["/bin/true"])
        assert _race(c, host_marker, 4.0, action) == []


def test_a_racer_inside_never_reaches_the_caller_through_call_processes(host_marker):
    """Container.call forks the caller: born non-dumpable, or (a container
    that may ptrace) stripped before it enters the PID namespace. A call
    process is a copy of the caller's memory (README): with CAP_SYS_PTRACE
    the container may read that copy, but never the caller's environment
    area, fds or root."""
    for caps in ([], ["SYS_PTRACE"]):
        with Container(cap_add=caps) as c:
            def action():
                for _ in range(60):
                    c.call(os.getpid)
            assert _race(c, host_marker, 4.0, action, memory=not caps) == [], caps


SCRIPT = "#!/proc/self/exe\nprint('HOST-PYTHON')\n"


@pytest.mark.parametrize("how", ["isolate.run", "Container.run"])
def test_a_proc_self_exe_script_does_not_run_a_host_binary(fresh_rootfs, how):
    """runc CVE-2019-5736: the process that execs a command must not have a
    host binary (the caller's Python) as /proc/self/exe, or a script whose
    interpreter is /proc/self/exe runs it, and can then write it."""
    with open(os.path.join(fresh_rootfs, "x"), "w") as f:
        f.write(SCRIPT)
    os.chmod(os.path.join(fresh_rootfs, "x"), 0o755)
    if how == "isolate.run":
        r = isolate.run(["/x"], rootfs=fresh_rootfs, capture_output=True, text=True)
    else:
        with Container(rootfs=fresh_rootfs) as c:
            r = c.run(["/x"], capture_output=True, text=True)
    assert "HOST-PYTHON" not in r.stdout
    assert r.returncode != 0


def test_pool_workers_run_from_a_sealed_copy_of_python():
    def exe():
        import errno
        import os
        path = os.readlink("/proc/self/exe")
        try:
            os.open("/proc/self/exe", os.O_WRONLY)
            writable = True
        except OSError as e:
            writable = e.errno not in (errno.EPERM, errno.EACCES, errno.ETXTBSY)
        return path, writable
    with Pool(size=1) as pool:
        path, writable = pool.call(exe)
    assert path.startswith("/memfd:")
    assert not writable


def _own_exe():
    import errno
    import os
    path = os.readlink("/proc/self/exe")
    try:
        os.close(os.open("/proc/self/exe", os.O_WRONLY))
        writable = True
    except OSError as e:
        writable = e.errno not in (errno.EPERM, errno.EACCES, errno.ETXTBSY)
    st = os.stat("/proc/self/exe")
    return path, writable, (st.st_dev, st.st_ino)


@pytest.mark.parametrize("how", ["Container.call", "isolate.call", "submit", "SYS_PTRACE",
                                 "userns"])
def test_call_processes_run_from_a_sealed_copy_of_the_callers_binary(how):
    """A call process is a fork of the caller, yet its /proc/self/exe, which
    the function can open, is no host file: the caller's binary could be
    written through it (runc CVE-2019-5736)."""
    host = os.stat("/proc/self/exe")
    if how == "isolate.call":
        path, writable, ident = isolate.call(_own_exe)
    else:
        options = {"SYS_PTRACE": {"cap_add": ["SYS_PTRACE"]}, "userns": {"userns": True}}
        with Container(**options.get(how, {})) as c:
            if how == "submit":
                path, writable, ident = c.submit(_own_exe).result()
            else:
                path, writable, ident = c.call(_own_exe)
            assert c.call(os.readlink, "/proc/self/exe") == path      # and again
    assert path.startswith("/memfd:isolate-python")
    assert not writable
    assert ident != (host.st_dev, host.st_ino)


def _chmod_exe():
    import os
    try:
        os.chmod("/proc/self/exe", 0)
        return "changed"
    except OSError as e:
        return e.errno


def test_one_container_cannot_spoil_the_copy_for_the_others():
    """Every call of a caller runs from the same sealed copy: a container's
    root, which may own it, must not make it unusable for the rest."""
    with Container() as a, Container() as b:
        a.call(_chmod_exe)
        assert b.call(os.getpid) > 1
        assert isolate.call(os.getpid) > 1


def test_a_caller_that_closed_the_copy_gets_a_new_one(tmp_path):
    """A daemon that closes every fd, then opens a file that takes the
    copy's number: the call must not run as that file."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"#!/bin/sh\n")
    os.chmod(victim, 0o755)
    code = textwrap.dedent(f"""
        import os
        from isolate import Container, _call
        with Container() as c:
            c.call(os.getpid)
            fd = _call._exe[1]
            os.close(fd)
            assert os.open({str(victim)!r}, os.O_RDONLY) == fd
            print(c.call(os.readlink, "/proc/self/exe"))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("/memfd:isolate-python")


@pytest.mark.parametrize("how", ["legacy layout", "binary mapped shared"])
def test_calls_work_whatever_the_callers_mappings(how):
    """Libraries mapped below the binary (the legacy layout of an unlimited
    stack), or a shared mapping of the binary itself."""
    code = textwrap.dedent("""
        import mmap, os, isolate
        if os.environ.get("MAP_SELF"):
            with open("/proc/self/exe", "rb") as f:
                keep = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        print(isolate.call(os.readlink, "/proc/self/exe"))
    """)
    env = dict(os.environ)
    cmd = [sys.executable, "-c", code]
    if how == "legacy layout":
        cmd = ["setarch", os.uname().machine, "-L", *cmd]
    else:
        env["MAP_SELF"] = "1"
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("/memfd:isolate-python")


def _nested_call():
    import os
    import isolate
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):        # where the caller's stdio was no file (pytest's capture)
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(null, fd)
    return isolate.call(_own_exe)


def test_a_call_in_a_call_process_runs_from_the_copy_too():
    """A privileged container may make containers: its call process, whose
    binary already is the copy (and whose fds were closed, the init's copy
    among them), makes calls of its own."""
    with Container(privileged=True) as c:
        path, writable, _ = c.call(_nested_call)
    assert path.startswith("/memfd:isolate-python") and not writable


#: The owner of the container runs a copy of the interpreter (the binary it
#: attacks). The function hands an O_PATH fd of its /proc/self/exe to a shell
#: in a session of its own, waits for the owner's death (its result pipe
#: breaks) and exits, so that nothing runs the binary any more; the shell
#: then opens the fd for writing and overwrites the binary's first bytes.
OWNER = textwrap.dedent(r"""
    import os, select, sys, time
    from isolate import Container

    def attack():
        import fcntl, os, select, time
        fd = os.open("/proc/self/exe", os.O_PATH)
        os.set_inheritable(fd, True)
        if os.fork() == 0:
            os.setsid()
            script = ("i=0; while [ $i -lt 200 ]; do "
                      f"if (printf PWNED 1<>/proc/self/fd/{fd}) 2>/dev/null; then exit 0; fi; "
                      "i=$((i+1)); sleep 0.02; done")
            os.execv("/bin/sh", ["sh", "-c", script])
        pipes = []
        for n in os.listdir("/proc/self/fd"):
            try:
                if (os.readlink(f"/proc/self/fd/{n}").startswith("pipe:")
                        and fcntl.fcntl(int(n), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY):
                    pipes.append(int(n))
            except OSError:
                pass
        print("READY", flush=True)
        poll = select.poll()
        for n in pipes:
            poll.register(n, select.POLLERR)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:      # the result pipe's reader gone
            if any(ev & select.POLLERR for _, ev in poll.poll(20)):
                break
        os._exit(0)

    with Container() as c:
        c.call(attack)
""")


def test_a_container_cannot_write_the_owners_binary_after_the_owner_is_killed(tmp_path):
    """runc CVE-2019-5736 through a call process, the owner SIGKILLed."""
    import sysconfig
    copy = tmp_path / "python-copy"
    with open("/proc/self/exe", "rb") as src:
        original = src.read()
    copy.write_bytes(original)
    copy.chmod(0o755)
    env = {"PYTHONHOME": sys.base_prefix, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        env["LD_LIBRARY_PATH"] = sysconfig.get_config_var("LIBDIR")
    for _ in range(1):
        owner = subprocess.Popen([str(copy), "-c", OWNER], stdout=subprocess.PIPE, text=True,
                                 env=env)
        try:
            assert owner.stdout.readline() == "READY\n"
        finally:
            owner.kill()
            owner.wait()
            owner.stdout.close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and copy.read_bytes()[:5] != b"PWNED":
            time.sleep(0.1)
        assert copy.read_bytes() == original


def _init_links() -> list[str]:
    import os
    found = []
    for name in ("exe", "root", "cwd", *(f"fd/{n}" for n in os.listdir("/proc/1/fd"))):
        try:
            found.append(os.readlink(f"/proc/1/{name}"))
        except PermissionError:
            pass
    return found


def test_the_init_is_not_dumpable():
    """Its control socket (the command's exit status) and memory are its own."""
    r = isolate.run(["sh", "-c", "for f in /proc/1/fd/* /proc/1/exe /proc/1/root; do "
                     "readlink $f; done; cat /proc/1/environ; grep -q . /proc/1/mem"],
                    capture_output=True, text=True)
    assert r.stdout == ""
    assert r.stderr.count("Permission denied") >= 2
    with Container() as c:
        assert c.call(_init_links) == []


FORGE = textwrap.dedent(r"""
    import ctypes, os, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    init = os.pidfd_open(1)
    for fd in range(3, 16):
        got = libc.syscall(438, init, fd, 0)        # pidfd_getfd
        if got >= 0:
            msg = struct.pack("ii", 3, 0) + bytes(4 + 4 + 256)   # ISO_MSG_EXIT, status 0
            try:
                os.send(got, msg) if hasattr(os, "send") else os.write(got, msg)
            except OSError:
                pass
    sys.exit(7)
""")


def test_the_exit_status_cannot_be_forged():
    with pytest.raises(subprocess.CalledProcessError) as e:
        isolate.run([sys.executable, "-c", FORGE], check=True)
    assert e.value.returncode == 7


def _dumpable() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(3, 0, 0, 0, 0)        # PR_GET_DUMPABLE


def test_starting_a_command_as_another_user_leaves_the_caller_dumpable(rootfs):
    assert _dumpable() == 1
    isolate.run(["true"], rootfs=rootfs, user="1000:1000")
    assert _dumpable() == 1
    with Container(rootfs=rootfs) as c:
        c.run(["true"], user="1000:1000")
        assert c.call(os.getuid) == 0
    assert _dumpable() == 1
    with Container(rootfs=rootfs, userns=True) as c:     # setns into a user namespace
        c.run(["true"])
    assert _dumpable() == 1


def _environ() -> bytes:
    with open("/proc/self/environ", "rb") as f:
        return f.read()


def test_the_callers_environment_does_not_reach_call_or_pool_processes(host_marker):
    assert SECRET.encode() not in isolate.call(_environ)
    with Container() as c:
        assert SECRET.encode() not in c.call(_environ)
    with Pool(size=1) as pool:
        assert SECRET.encode() not in pool.call(_environ)
    r = isolate.run(["cat", "/proc/self/environ", "/proc/1/environ"], capture_output=True)
    assert SECRET.encode() not in r.stdout


def test_commands_hold_only_stdio_and_pass_fds():
    r, w = os.pipe()
    try:
        out = isolate.run(["ls", "/proc/self/fd"], capture_output=True, text=True,
                          pass_fds=[w]).stdout.split()
        assert len(out) == 5 and {"0", "1", "2", str(w)} <= set(out)     # and ls's own
        with Container() as c:
            out = c.run(["ls", "/proc/self/fd"], capture_output=True, text=True).stdout.split()
            assert len(out) == 4 and {"0", "1", "2"} <= set(out)
    finally:
        os.close(r)
        os.close(w)


def test_a_command_that_kills_itself_is_reported_as_killed():
    r = isolate.run(["sh", "-c", "kill -9 $$"])
    assert r.returncode == -signal.SIGKILL


def _stdio() -> tuple[bytes, list[str]]:
    import os
    os.set_blocking(0, False)
    try:
        data = os.read(0, 100)
    except BlockingIOError:
        data = b"(blocked)"
    print("from the worker")
    return data, [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)]


def test_pool_workers_do_not_get_the_callers_stdio():
    code = ("import isolate, sys\nsys.path.insert(0, 'tests')\nfrom test_boundary import _stdio\n"
            "with isolate.Pool(size=1) as p:\n    print(p.call(_stdio))\n")
    r = subprocess.run([sys.executable, "-c", code], input="CALLER-STDIN-SECRET\n",
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    assert "CALLER-STDIN-SECRET" not in r.stdout
    assert "from the worker" in r.stdout           # relayed
    # stdin /dev/null; stdout and stderr sockets of the pool's (whose read end,
    # unlike a pipe's, no open() of /proc/self/fd/1 reaches)
    assert "/dev/null" in r.stdout and "socket:" in r.stdout and "pipe:" not in r.stdout


def _fake_result_then_linger():
    """Writes a result frame of its own to its result pipe, then goes on."""
    import os
    import pickle
    import struct
    import time
    data = pickle.dumps(("ok", "fake"))
    for n in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{n}").startswith(("pipe:", "socket:")) and int(n) > 2:
                os.write(int(n), struct.pack("<Q", len(data)) + data)
        except OSError:
            pass
    time.sleep(60)


@pytest.mark.parametrize("how", ["Container.call", "Pool.call"])
def test_a_function_that_answers_and_goes_on_is_ended(how):
    """A result sent early must not let the function outlive its call (nor
    keep a pool's container from being replaced)."""
    import time
    start = time.monotonic()
    if how == "Pool.call":
        with Pool(size=1, timeout=20) as pool:
            for _ in range(3):
                try:
                    pool.call(_fake_result_then_linger)
                except Exception:
                    pass
            assert pool.call(os.getpid) == 2        # a fresh worker came
    else:
        with Container() as c:
            try:
                isolate.isolated(timeout=20)(_fake_result_then_linger)()
            except Exception:
                pass
            try:
                c.call(_fake_result_then_linger)
            except Exception:
                pass
            names = c.run(["sh", "-c", "cat /proc/[0-9]*/comm"], capture_output=True,
                          text=True).stdout.split()
            assert set(names) <= {"isolate-init", "sh", "cat"}, names   # no call left
    assert time.monotonic() - start < 15


SIGINT_OWNER = textwrap.dedent(r"""
    import atexit, os, sys
    from isolate import Container
    me = os.getpid()
    atexit.register(lambda: os.getpid() != me and os.write(2, b"CALLER-CODE-INSIDE\n"))
    with Container() as c:
        c.spawn(["sh", "-c", "while :; do kill -INT -1 2>/dev/null; done"])
        for _ in range(150):
            try:
                c.call(os.getpid)
            except BaseException:
                pass
""")


def test_signals_from_inside_never_run_the_callers_code_in_the_container():
    """A process inside sends SIGINT to every process it sees: a call's
    process must not unwind into the caller's code (its atexit handlers,
    finally blocks) before it is restricted."""
    r = subprocess.run([sys.executable, "-c", SIGINT_OWNER], capture_output=True, text=True,
                       timeout=120)
    assert "CALLER-CODE-INSIDE" not in r.stderr, r.stderr[-2000:]


def _open_own_output():
    import errno
    found = {}
    for fd in (1, 2):
        try:
            os.close(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK))
            found[fd] = "opened"
        except OSError as e:
            found[fd] = errno.errorcode[e.errno]
    return found


def test_a_pool_call_cannot_read_what_the_other_calls_print():
    """A pool's workers share the relay of their output: a pipe's read end
    would be one open() of /proc/self/fd/1 away; a socket's is not."""
    with Pool(size=2) as pool:
        assert pool.call(_open_own_output) == {1: "ENXIO", 2: "ENXIO"}


def _claims_a_huge_result():
    import struct
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.write(fd, struct.pack("<Q", 1 << 40) + bytes(1 << 16))
            except OSError:
                pass
    os._exit(0)


@pytest.mark.parametrize("how", ["pool", "container"])
def test_a_result_larger_than_the_memory_limit_is_refused_unread(how):
    """A container under memory="64M" cannot hold a terabyte result, but it
    could stream one (zeros cost it nothing) into the caller's memory."""
    if how == "pool":
        with Pool(size=1, memory="64M") as pool, \
                pytest.raises(isolate.SerializationError, match="memory limit"):
            pool.call(_claims_a_huge_result)
    else:
        with Container(memory="64M") as c, \
                pytest.raises(isolate.SerializationError, match="memory limit"):
            c.call(_claims_a_huge_result)


def _forges_a_unicode_error():
    """Reports a UnicodeDecodeError whose start lies a terabyte past its
    object: CPython's str() of it reads there unchecked (gh-123378)."""
    import pickle
    import isolate._wire as w

    def raised(e, tb, trusted):
        fields = {"object": pickle.dumps(range(1)), "start": pickle.dumps(1 << 40),
                  "end": pickle.dumps((1 << 40) + 1), "encoding": pickle.dumps("utf-8"),
                  "reason": pickle.dumps("r")}
        return pickle.dumps(("raise", "builtins", "UnicodeDecodeError", pickle.dumps(("x",)),
                             fields, {}, "forged", ""))
    w._raised = raised
    raise ValueError("x")


def test_an_exception_whose_fields_would_crash_the_caller_is_not_rebuilt():
    code = ("import sys; sys.path.insert(0, 'tests')\nimport isolate\n"
            "from test_boundary import _forges_a_unicode_error\n"
            "for run in (isolate.call, isolate.Pool(size=1).call):\n"
            "    try:\n        run(_forges_a_unicode_error)\n"
            "    except Exception as e:\n        print(type(e).__name__, str(e)[:40])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]          # not killed by SIGSEGV
    assert r.stdout.splitlines() == ["RemoteError builtins.UnicodeDecodeError: forged (rai"] * 2


class _ListOfRange:
    def __reduce__(self):
        return (list, (range(16000),))      # 16,000 ints from some 45 bytes of pickle


def _raises_with_many_costly_attributes(n):
    e = ValueError("many attributes")
    for i in range(n):
        setattr(e, f"a{i}", _ListOfRange())
    raise e


def test_an_exceptions_parts_share_one_budget():
    """Each attribute of an exception from a container was decoded with a
    budget of its own: 3,000 of them, some 150 KB, made the caller hold
    gigabytes. One budget for all, and at most 256 attributes."""
    with Pool(size=1, memory="64M") as pool, pytest.raises(ValueError) as e:
        pool.call(_raises_with_many_costly_attributes, 3000)
    held = sum(len(v) for k, v in vars(e.value).items() if k.startswith("a"))
    assert held <= 16000 * 100          # what its size warrants, not 3,000 lists


def _watch_opens(path: str):
    """An inotify fd that becomes readable once path is opened."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    assert libc.inotify_add_watch(fd, os.fsencode(path), 0x20) >= 0     # IN_OPEN
    return fd


@pytest.mark.parametrize("link", ["dir", "file"])
def test_a_terminal_is_opened_in_the_containers_devpts_only(rootfs, tmp_path, link):
    """The caller opens a container's ptmx for tty=True. A privileged
    container that puts a symlink at /dev/pts (or /dev/pts/ptmx) to a host
    path must not make the caller open that host file (a device with side
    effects on open, say): the path resolves inside the container's root,
    and only a devpts ptmx is taken."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "ptmx").write_text("host file\n")
    watch = _watch_opens(str(host_dir / "ptmx"))
    try:
        with Container(rootfs=rootfs, privileged=True) as c:
            if link == "dir":
                script = f"umount -l /dev/pts && rmdir /dev/pts && ln -s {host_dir} /dev/pts"
            else:
                script = (f"umount -l /dev/pts && mount -t tmpfs none /dev/pts && "
                          f"ln -s {host_dir}/ptmx /dev/pts/ptmx")
            c.run(["sh", "-c", script], check=True)
            with pytest.raises(OSError):
                c.open_pty()
            with pytest.raises(OSError):
                c.spawn(["true"], tty=True)
            # the caller still gets terminals of a devpts the container mounts
            c.run(["sh", "-c", "rm -rf /dev/pts; mkdir -p /dev/pts; "
                   "mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts"], check=True)
            master, slave = c.open_pty()
            os.close(master)
            os.close(slave)
        with pytest.raises(BlockingIOError):
            os.read(watch, 4096)            # no open of the host file was seen
    finally:
        os.close(watch)

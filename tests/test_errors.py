"""Every bad input is a clear exception, raised before anything is created.

The autouse no_leaks fixture checks that each leaves nothing behind.
"""
from __future__ import annotations

import errno
import os

import pytest

import isolate
from isolate import Container, ContainerError, Mount


def both(**opts):
    """The same options through Container and isolate.run."""
    yield lambda: Container(**opts).start()
    yield lambda: isolate.run(["true"], **opts)


@pytest.mark.parametrize("opts, exc, words", [
    ({"rootfs": "/no/such/dir"}, FileNotFoundError, "/no/such/dir"),
    ({"rootfs": "/etc/passwd"}, NotADirectoryError, "/etc/passwd"),
    ({"rootfz": "/"}, TypeError, "rootfz"),
    ({"namespaces": ["pid", "nope"]}, ValueError, "nope"),
    ({"namespaces": "pid"}, TypeError, "collection"),
    ({"network": "no such net"}, ValueError, "no such net"),
    ({"network": "none", "namespaces": ["pid", "mount"]}, ValueError, "net"),
    ({"hostname": "x" * 65}, ValueError, "hostname"),
    ({"hostname": "h", "namespaces": ["mount"]}, ValueError, "uts"),
    ({"cwd": "relative"}, ValueError, "cwd"),
    ({"user": "nobody-here"}, ValueError, "nobody-here"),
    ({"user": True}, TypeError, "user"),
    ({"env": {"A=B": "1"}}, ValueError, "A=B"),
    ({"env": {"A": 1}}, TypeError, "str"),
    ({"mounts": ["/data"]}, TypeError, "Mount"),
    ({"mounts": [Mount.bind("/no/such/source", "/x")]}, FileNotFoundError, "/no/such/source"),
    ({"namespaces": ["pid"], "mounts": [Mount.tmpfs("/x")]}, ValueError, "mount"),
])
def test_bad_option(opts, exc, words):
    for attempt in both(**opts):
        with pytest.raises(exc) as e:
            attempt()
        assert words in str(e.value)


def test_mount_specs_are_checked_when_made():
    with pytest.raises(ValueError, match="relative"):
        Mount.tmpfs("relative/target")
    with pytest.raises(ValueError, match="not a size"):
        Mount.tmpfs("/x", size="12Q")
    with pytest.raises(ValueError, match="positive"):
        Mount.tmpfs("/x", size=0)
    with pytest.raises(ValueError, match="relative"):
        Mount.bind("relative/source", "/x")
    with pytest.raises(ValueError, match="mode"):
        Mount.tmpfs("/x", mode=0o77777)


def test_size_strings():
    from isolate._sizes import parse_size
    assert parse_size("64M") == 64 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_size("1.5K") == 1536
    assert parse_size("512") == 512
    assert parse_size(4096) == 4096
    for bad in ("", "M", "-1M", "1.2.3", "64 MB extra"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_rootfs_with_symlinked_proc_is_refused(tmp_path, rootfs):
    evil = tmp_path / "evil"
    evil.mkdir()
    for d in ("sys", "dev"):
        (evil / d).mkdir()
    os.symlink("/", evil / "proc")
    with pytest.raises(ValueError, match="symlink"):
        Container(rootfs=str(evil))


def test_failed_setup_step_names_step_and_path(rootfs, tmp_path):
    # a file cannot be bound over a directory: the mount fails inside the new container
    (tmp_path / "f").write_text("x")
    with pytest.raises(ContainerError) as e:
        Container(rootfs=rootfs, readonly=True, mounts=[Mount.bind(str(tmp_path / "f"), "/etc")]
                  ).start()
    assert e.value.step == "bind mount"
    assert e.value.errno in (errno.EINVAL, errno.ENOTDIR)
    assert e.value.filename == "/etc"
    assert "/etc" in str(e.value)
    assert isinstance(e.value, OSError)


def test_empty_args(rootfs):
    with pytest.raises(ValueError, match="empty"):
        isolate.run([], rootfs=rootfs)
    with Container(rootfs=rootfs) as c, pytest.raises(ValueError, match="empty"):
        c.run([])


def test_unsupported_popen_options_are_refused(rootfs):
    with Container(rootfs=rootfs) as c:
        with pytest.raises(TypeError):
            c.run(["true"], preexec_fn=lambda: None)
        with pytest.raises(TypeError):
            c.spawn(["true"], close_fds=False)
        with pytest.raises(ValueError, match="not mapped"):
            Container(rootfs=rootfs, namespaces={"user", "mount", "pid"}, user=1000)


def test_container_starts_once_and_refuses_work_when_closed(rootfs):
    c = Container(rootfs=rootfs)
    with c:
        with pytest.raises(RuntimeError, match="once"):
            c.start()
    with pytest.raises(RuntimeError, match="closed"):
        c.run(["true"])
    with pytest.raises(RuntimeError, match="closed"):
        c.start()


def test_repeated_options_are_rechecked(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    Container(rootfs=str(root))             # valid now, and remembered
    root.rmdir()
    with pytest.raises(FileNotFoundError):
        Container(rootfs=str(root))
    src = tmp_path / "src"
    src.mkdir()
    Container(mounts=[Mount.bind(str(src), "/tmp/src")])
    src.rmdir()
    with pytest.raises(FileNotFoundError):
        Container(mounts=[Mount.bind(str(src), "/tmp/src")])


def test_namespace_errors_say_what_to_change(monkeypatch):
    import builtins
    import io

    from isolate.errors import NamespaceError, child_error
    for err in (errno.EPERM, errno.ENOSPC):
        e = child_error("clone", err, "")
        assert isinstance(e, NamespaceError)
        assert "user.max_user_namespaces" in str(e)
    # a machine where one switch is off: the message names it and the fix
    real_open = builtins.open

    def fake_open(path, *a, **k):
        if path == "/proc/sys/user/max_user_namespaces":
            return io.StringIO("0\n")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    msg = str(child_error("clone", errno.ENOSPC, ""))
    assert "user.max_user_namespaces is 0: sysctl -w user.max_user_namespaces=15000" in msg
    assert "unprivileged_userns_clone is" not in msg


# -- small input bugs: each refused before anything is created -----------------

def test_nul_byte_in_argv_executable_cwd_env(rootfs):
    """A NUL byte would cut the string short in C: refused, as subprocess does."""
    for kw in ({}, {"capture_output": True}):
        for args in (["echo", "a\0b"], [b"echo", b"a\0b"], "ec\0ho"):
            with pytest.raises(ValueError, match="null byte"):
                isolate.run(args, rootfs=rootfs, **kw)
        with pytest.raises(ValueError, match="null byte"):
            isolate.run("echo a\0b", shell=True, rootfs=rootfs, **kw)
        with pytest.raises(ValueError, match="null byte"):
            isolate.run(["echo"], executable="/bin/ec\0ho", rootfs=rootfs, **kw)
        with pytest.raises(ValueError, match="cwd"):
            isolate.run(["true"], cwd="/t\0mp", rootfs=rootfs, **kw)
        with pytest.raises(ValueError, match="A"):
            isolate.run(["true"], env={"A": "a\0b"}, rootfs=rootfs, **kw)
    with pytest.raises(ValueError, match="cwd"):
        Container(rootfs=rootfs, cwd="/t\0mp")
    with Container(rootfs=rootfs) as c:
        with pytest.raises(ValueError, match="null byte"):
            c.run(["echo", "a\0b"])
        with pytest.raises(ValueError, match="null byte"):
            c.spawn(["echo", "a\0b"])
        with pytest.raises(ValueError, match="null byte"):
            c.run(["echo"], executable=b"/bin/ec\0ho")
        with pytest.raises(ValueError, match="cwd"):
            c.run(["true"], cwd="/t\0mp")
        with pytest.raises(ValueError, match="A"):
            c.run(["true"], env={"A": "a\0b"})
        # and a good command still runs after all that
        assert c.run(["echo", "ab"], capture_output=True).stdout == b"ab\n"


def test_strings_that_cannot_be_encoded_are_refused():
    with pytest.raises(ValueError, match="A"):
        Container(env={"A": "\ud800"})
    with pytest.raises(ValueError, match="cwd"):
        Container(cwd="/\ud800")


@pytest.mark.parametrize("make, exc, words", [
    # the dataclass built directly skips Mount.tmpfs's parsing: checked all the same
    (lambda: Mount("tmpfs", "/x", size="1M,nr_inodes=3,huge=always"), TypeError, "size"),
    (lambda: Mount("tmpfs", "/x", size=0), ValueError, "positive"),
    (lambda: Mount("tmpfs", "/x", size=-1), ValueError, "positive"),
    (lambda: Mount("tmpfs", "/x", size=True), TypeError, "size"),
    (lambda: Mount("tmpfs", "/x", size=1 << 63), ValueError, "size"),
    (lambda: Mount.tmpfs("/x", size=1 << 63), ValueError, "size"),
    (lambda: Mount.tmpfs("/x", size="99999999T"), ValueError, "size"),
    (lambda: Mount("tmpfs", "/x", mode="755,uid=0"), ValueError, "mode"),
    (lambda: Mount("tmpfs", "/x", mode=0o10000), ValueError, "mode"),
    (lambda: Mount("tmpfs", "/x", mode=-1), ValueError, "mode"),
    (lambda: Mount("tmpfs", "/x", mode=True), ValueError, "mode"),
    (lambda: Mount("tmpfs", "/x", source="/etc"), ValueError, "source"),
    (lambda: Mount("tmpfs", "/x", readonly="no"), TypeError, "readonly"),
    (lambda: Mount("squashfs", "/x"), ValueError, "kind"),
    (lambda: Mount("overlay", "/x"), TypeError, "source"),
    (lambda: Mount("overlay", "/x", source="/etc", readonly=True), ValueError, "read-only"),
    (lambda: Mount(["bind"], "/x"), ValueError, "kind"),     # unhashable: no TypeError from `in`
    (lambda: Mount("bind", "/x"), TypeError, "source"),
    (lambda: Mount("bind", "/x", source=b"/etc"), TypeError, "source"),
    (lambda: Mount("bind", "/x", source="etc"), ValueError, "relative"),
    (lambda: Mount("bind", "/x", source="/e\0tc"), ValueError, "NUL"),
    (lambda: Mount("bind", "/x", source="/etc", size=1 << 20), ValueError, "size"),
    (lambda: Mount("bind", "/x", source="/etc", mode=0o755), ValueError, "mode"),
    (lambda: Mount.bind("/e\0tc", "/x"), ValueError, "NUL"),
])
def test_mount_fields_are_checked_however_made(make, exc, words):
    with pytest.raises(exc) as e:
        make()
    assert words in str(e.value)


def test_mount_largest_size_is_the_kernels():
    assert Mount("tmpfs", "/x", size=(1 << 63) - 1).size == (1 << 63) - 1
    assert Mount.tmpfs("/x", size="1T").size == 1 << 40


def _cli(capsys, *args):
    from isolate import cli
    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--tmpfs", "/x:1M,nr_inodes=3"], "not a size"),
    (["--tmpfs", "/x:99999999T"], "kernel"),
    (["--tmpfs", "relative"], "relative"),
    (["--tmpfs", ":1M"], "target"),
    (["--mount", "relative:/x"], "relative"),
    (["--mount", "/etc:"], "/etc:"),
    (["--mount", ":/x"], ":/x"),
    (["--mount", "/etc:/x:rw:ro"], "SRC:DST"),
    (["--hostname", "a/b"], "hostname"),
    (["--cpus", "nan"], "cpus"),
    (["--pids", "1000000000"], "pids"),
    (["--memory", "1e3M"], "not a size"),
    (["--memory", "99999999T"], "kernel"),
])
def test_cli_refuses_bad_options_with_125(capsys, args, words):
    code, err = _cli(capsys, "run", *args, "--", "true")
    assert code == 125
    assert words in err


@pytest.mark.parametrize("rlimits, words", [
    ({"nofile": (-2, 5)}, "nofile"),
    ({"nofile": (1, 2**64)}, "nofile"),
    ({"core": (1, 2**64)}, "core"),
    ({"core": (-5, -1)}, "core"),
    ({"nofile": (None, None)}, "nr_open"),          # the kernel caps nofile at fs.nr_open
    ({"nofile": (1, 1 << 40)}, "nr_open"),
    ({"nofile": (1, 1.5)}, "nofile"),
    ({"nofile": (True, 5)}, "nofile"),
])
def test_bad_rlimit_values_name_the_rlimit(rlimits, words):
    for attempt in both(rlimits=rlimits):
        with pytest.raises(ValueError) as e:
            attempt()
        assert words in str(e.value)


def test_rlimit_hard_limit_above_the_callers_is_refused():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the default capabilities have no CAP_SYS_RESOURCE: no raising a hard limit
    for attempt in both(rlimits={"nofile": (1, hard + 1)}):
        with pytest.raises(ValueError, match="nofile.*CAP_SYS_RESOURCE"):
            attempt()
    _, core_hard = resource.getrlimit(resource.RLIMIT_CORE)
    if core_hard != resource.RLIM_INFINITY:
        with pytest.raises(ValueError, match="core"):
            Container(rlimits={"core": (None, None)})
    with open("/proc/self/status") as f:
        caps = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    if not caps & (1 << 24):        # CAP_SYS_RESOURCE: privileged has only the caller's
        with pytest.raises(ValueError, match="nofile"):
            Container(privileged=True, rlimits={"nofile": (1, hard + 1)})
    Container(rlimits={"nofile": (hard, hard)})     # up to the caller's is fine


def test_rlimit_infinity_and_minus_one_mean_unlimited(rootfs):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != resource.RLIM_INFINITY:
        pytest.skip("this process's core hard limit is finite")
    for unlimited in (None, -1, resource.RLIM_INFINITY, 2**64 - 1):
        r = isolate.run(["sh", "-c", "ulimit -c; ulimit -Hc"], rootfs=rootfs,
                        rlimits={"core": (0, unlimited)}, capture_output=True, text=True)
        assert r.stdout.split() == ["0", "unlimited"], unlimited


def test_default_nofile_is_runcs_1024(rootfs):
    r = isolate.run(["sh", "-c", "ulimit -n; ulimit -Hn; grep 'open files' /proc/self/limits"],
                    rootfs=rootfs, capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["1024", "1024"]
    assert lines[2].split()[3:5] == ["1024", "1024"]
    # a user's rlimits override it per resource
    r = isolate.run(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"], rootfs=rootfs,
                    rlimits={"core": 0}, capture_output=True, text=True)
    assert r.stdout.split() == ["1024", "1024", "0"]
    r = isolate.run(["sh", "-c", "ulimit -n; ulimit -Hn"], rootfs=rootfs,
                    rlimits={"nofile": (50, 60)}, capture_output=True, text=True)
    assert r.stdout.split() == ["50", "60"]
    import resource
    with Container(rootfs=rootfs) as c:
        assert c.run(["sh", "-c", "ulimit -Hn"], capture_output=True).stdout == b"1024\n"
        assert c.call(resource.getrlimit, resource.RLIMIT_NOFILE) == (1024, 1024)
    with Container(rootfs=rootfs, privileged=True) as c:
        assert c.call(resource.getrlimit, resource.RLIMIT_NOFILE) == (1024, 1024)
    # a Pool's workers too (in a process of its own: a Pool keeps a sealed copy of
    # the interpreter open for the rest of the process)
    assert _python(rootfs, "with isolate.Pool(size=1, rootfs=rootfs) as p:\n"
                   "    print(p.submit(resource.getrlimit, resource.RLIMIT_NOFILE).result())"
                   ) == "(1024, 1024)"


def _python(rootfs, code):
    """What code prints, run by a Python process of its own (rootfs given)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "import resource, sys, isolate\n"
                        "rootfs = sys.argv[1]\n" + code, rootfs],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_default_nofile_fits_a_lower_hard_limit(rootfs):
    """A caller whose hard limit is below 1024 gets its own: no failed setrlimit."""
    assert _python(rootfs, "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))\n"
                   "r = isolate.run(['sh', '-c', 'ulimit -n; ulimit -Hn'], rootfs=rootfs,\n"
                   "                capture_output=True, text=True)\n"
                   "print(r.stdout.split())") == "['512', '512']"


@pytest.mark.parametrize("opts, exc, words", [
    ({"memory": 10**30}, ValueError, "memory"),
    ({"memory": "99999999T"}, ValueError, "memory"),
    ({"memory": 1 << 63}, ValueError, "memory"),
    ({"memory": "1e3M"}, ValueError, "not a size"),
    ({"memory": "1G", "memory_swap": 10**30}, ValueError, "memory_swap"),
    ({"pids": 10**9}, ValueError, "pids"),
    ({"pids": True}, TypeError, "pids"),
    ({"cpus": float("nan")}, ValueError, "cpus"),
    ({"cpus": float("inf")}, ValueError, "cpus"),
    ({"hostname": "a/b"}, ValueError, "hostname"),
    ({"hostname": "a\nb"}, ValueError, "hostname"),
    ({"hostname": "a b"}, ValueError, "hostname"),
    ({"hostname": "-n"}, ValueError, "hostname"),
    ({"user": "\u0663"}, ValueError, "\u0663"),          # a digit, but not an ASCII one
    ({"user": "0:"}, ValueError, "group"),
    ({"user": "0:\u0663"}, ValueError, "\u0663"),
    ({"readonly": "no"}, TypeError, "readonly"),
    ({"mounts": None}, TypeError, "Mount"),
    ({"mounts": Mount.tmpfs("/x")}, TypeError, "Mount"),
    ({"cap_drop": ["ALL", 5]}, TypeError, "capability"),
    ({"uid_map": [(0, 100000, 2**32)], "gid_map": [(0, 100000, 1)]}, ValueError, "uid_map"),
    ({"uid_map": [(0, 100000, True)], "gid_map": [(0, 100000, 1)]}, ValueError, "uid_map"),
])
def test_more_bad_options(opts, exc, words):
    for attempt in both(**opts):
        with pytest.raises(exc) as e:
            attempt()
        assert words in str(e.value)


def test_user_with_a_broken_passwd_entry(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("odd:x:notanumber:0::/:/bin/sh\n")
    with pytest.raises(ValueError, match="odd"):
        Container(rootfs=str(root), user="odd")


def test_io_max_rates_are_bounded():
    import stat
    dev = next((f"/dev/{d}" for d in sorted(os.listdir("/dev"))
                if stat.S_ISBLK(os.stat(f"/dev/{d}").st_mode)), None)
    if dev is None:
        pytest.skip("no block device here")
    for rates, words in (({"rbps": 1 << 63}, "rbps"), ({"wbps": "99999999T"}, "wbps"),
                         ({"riops": 2**32}, "riops")):
        with pytest.raises(ValueError, match=words):
            Container(io_max={dev: rates})


def test_size_strings_are_exact_and_bounded():
    from isolate._sizes import parse_size
    assert parse_size("9007199254740993") == 9007199254740993     # no float rounding
    assert parse_size("64MiB") == parse_size("64MB") == 64 << 20
    assert parse_size("7b") == 7
    assert parse_size((1 << 63) - 1) == (1 << 63) - 1
    for bad in ("1e3M", "1iB", "\u0661\u0662", "8E", "1 << 20", "0x10"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError, match="kernel"):
        parse_size(1 << 63)
    with pytest.raises(ValueError, match="kernel"):
        parse_size("8388608T")


def test_negative_timeout_times_out_at_once_as_in_subprocess(rootfs):
    import subprocess
    import time
    for kw in ({}, {"capture_output": True}):
        t = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            isolate.run(["sleep", "5"], rootfs=rootfs, timeout=-1, **kw)
        assert time.monotonic() - t < 3
    with Container(rootfs=rootfs) as c, pytest.raises(subprocess.TimeoutExpired):
        c.run(["sleep", "5"], timeout=-1)


def test_pool_size_is_bounded_by_what_it_can_hold():
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    for size in (10**9, soft):
        with pytest.raises(ValueError, match="size"):
            isolate.Pool(size=size)

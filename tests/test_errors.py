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
    ({"network": "bridge"}, ValueError, "bridge"),
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


def test_failed_setup_step_names_step_and_path(rootfs):
    # a read-only root cannot grow a mount point: mkdir fails inside the new container
    with pytest.raises(ContainerError) as e:
        Container(rootfs=rootfs, readonly=True, mounts=[Mount.tmpfs("/not-there")]).start()
    assert e.value.step == "mkdir"
    assert e.value.errno == errno.EROFS
    assert e.value.filename == "/not-there"
    assert "read-only" in str(e.value)
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

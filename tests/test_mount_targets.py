"""Mount targets resolve inside the container's root when each container
starts, never once for every start with the same options: a directory of
the image that becomes a symlink between two starts cannot point a mount, or
what is made for it, out of the root."""
from __future__ import annotations

import errno
import os
import shutil

import pytest

import isolate
from isolate import ContainerError, Mount

#: where the symlink that replaces the image's /a points (victim: a host directory)
ESCAPES = {
    "oldroot": lambda victim: "/oldroot" + victim,     # the host's root during setup
    "absolute": lambda victim: victim,
    "relative-oldroot": lambda victim: "../" * 12 + "oldroot" + victim,
    "relative": lambda victim: "../" * 12 + victim.lstrip("/"),
}

#: what shows the mount in the container: (mount, command that prints "ok" when it is there)
KINDS = {
    "tmpfs": (lambda src: Mount.tmpfs("/a/b", size="1M"),
              'd=$(readlink -f /a/b); grep -q " $d tmpfs " /proc/self/mounts && '
              'touch /a/b/new && echo ok'),
    "bind": (lambda src: Mount.bind(str(src), "/a/b"),
             'cat /a/b/f && touch /a/b/new && echo ok'),
    "bind-ro": (lambda src: Mount.bind(str(src), "/a/b", readonly=True),
                'cat /a/b/f && ! touch /a/b/new 2>/dev/null && echo ok'),
    "file": (lambda src: Mount.bind(str(src / "f"), "/a/f"),
             'cat /a/f && echo ok'),
}

ROOTS = {"overlay": {}, "readonly": {"readonly": True}, "userns": {"userns": True}}


def _run(opts):
    return isolate.run(["sh", "-c", opts.pop("_check")], capture_output=True, text=True,
                       timeout=30, **opts)


@pytest.mark.parametrize("root", list(ROOTS))
@pytest.mark.parametrize("escape", list(ESCAPES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_symlink_swapped_in_between_two_starts(tmp_path, fresh_rootfs, kind, escape, root):
    victim = tmp_path / "victim"
    victim.mkdir()
    os.chmod(victim, 0o777)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from host\n")
    make, check = KINDS[kind]
    mount = make(src)
    a = os.path.join(fresh_rootfs, "a")
    os.mkdir(a)
    if root == "readonly":      # a read-only root needs its targets in the image
        leaf = os.path.join(fresh_rootfs, mount.target.lstrip("/"))
        open(leaf, "w").close() if kind == "file" else os.mkdir(leaf)
    opts = dict(rootfs=fresh_rootfs, mounts=[mount], **ROOTS[root])

    r = _run(dict(opts, _check=check))
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r
    # the same options again, but the image's /a is now a symlink out of it
    shutil.rmtree(a)
    os.symlink(ESCAPES[escape](str(victim)), a)
    try:
        r = _run(dict(opts, _check=check))
    except ContainerError as e:
        r = e
    # nothing made on the host (the autouse no_leaks checks its mount table)
    assert os.listdir(victim) == []
    assert sorted(os.listdir(src)) == ["f"] + (["new"] if kind == "bind" else [])
    if isinstance(r, ContainerError):
        # refused cleanly (a read-only root cannot make the target where the
        # symlink leads inside it), naming the target as written
        assert root == "readonly", r
        assert r.errno == errno.EROFS and r.filename == mount.target, r
    else:
        # the mount is where /a/b leads inside the root: visible in the container
        assert r.returncode == 0 and r.stdout.endswith("ok\n"), r
    assert os.readlink(a) == ESCAPES[escape](str(victim))    # the image is left as it is


def test_symlink_in_the_image_to_the_host_root_stays_inside(tmp_path, fresh_rootfs):
    """/data/link -> /../../etc: a mount below it goes to the root's /etc."""
    os.symlink("/../../etc", os.path.join(fresh_rootfs, "data", "link"))
    os.symlink("../../../../../../../../../../tmp/made", os.path.join(fresh_rootfs, "rel"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from host\n")
    r = isolate.run(["sh", "-c", "grep -q ' /etc/x tmpfs ' /proc/self/mounts && cat /etc/y/f "
                     "/tmp/made/sub/f && echo ok"],
                    rootfs=fresh_rootfs, capture_output=True, text=True, timeout=30,
                    mounts=[Mount.tmpfs("/data/link/x"), Mount.bind(str(src), "/data/link/y"),
                            Mount.bind(str(src / "f"), "/rel/sub/f")])
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r
    assert not os.path.exists("/etc/x") and not os.path.exists("/etc/y")
    assert not os.path.exists("/tmp/made")
    assert not os.path.exists(os.path.join(fresh_rootfs, "etc", "x"))   # made in the overlay


def test_dangling_symlink_to_a_file_target_is_followed_inside(tmp_path, fresh_rootfs):
    """/etc/resolv.conf -> ../run/resolve/stub.conf, dangling in the image: a
    bind of a file there makes the file (and its directories) inside the root."""
    os.symlink("../run/resolve/stub.conf", os.path.join(fresh_rootfs, "etc", "resolv.conf"))
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    r = isolate.run(["cat", "/etc/resolv.conf", "/run/resolve/stub.conf"], rootfs=fresh_rootfs,
                    capture_output=True, text=True, timeout=30,
                    mounts=[Mount.bind(str(tmp_path / "resolv.conf"), "/etc/resolv.conf")])
    assert r.returncode == 0, r
    assert r.stdout == "nameserver 192.0.2.1\n" * 2
    assert not os.path.exists(os.path.join(fresh_rootfs, "run"))


def test_missing_target_on_a_read_only_image_is_made_without_writing_it(fresh_rootfs, tmp_path):
    """As Docker makes mount points in any image, --read-only included: a
    shadow of the nearest directory that exists takes the new entry, shows
    what the directory holds, and stays read-only."""
    os.symlink("bin", os.path.join(fresh_rootfs, "link"))
    before = sorted(os.listdir(fresh_rootfs))
    (tmp_path / "f").write_text("from host\n")
    r = isolate.run(["sh", "-c", "cat /not/there/f; ls /; ls -d /a/b/c; touch /x 2>&1; "
                     "touch /not/y 2>&1; readlink /link"],
                    rootfs=fresh_rootfs, readonly=True, capture_output=True, text=True,
                    timeout=30, mounts=[Mount.bind(str(tmp_path), "/not/there"),
                                        Mount.tmpfs("/a/b/c")])
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "from host"
    listed = lines[1:lines.index("/a/b/c")]
    assert sorted(listed) == sorted(before + ["a", "not"])     # the image's entries, and the new
    assert "Read-only file system" in lines[-3] and "Read-only file system" in lines[-2]
    assert lines[-1] == "bin"                                   # symlinks made again
    assert sorted(os.listdir(fresh_rootfs)) == before            # the image is untouched


def test_missing_target_on_the_hosts_root(tmp_path):
    """The default root (the host's, read-only): a bind to a new path."""
    (tmp_path / "f").write_text("from host\n")
    r = isolate.run(["sh", "-c", "cat /isolate-new-target/f; ls /; touch /y 2>&1; "
                     "ls /usr/lib | wc -l"], capture_output=True, text=True, timeout=30,
                    mounts=[Mount.bind(str(tmp_path), "/isolate-new-target"),
                            Mount.tmpfs("/usr/lib/isolate-new")])
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "from host"
    assert set(e for e in os.listdir("/") if not e.startswith(".")) <= set(lines)
    assert "Read-only file system" in lines[-2]
    assert int(lines[-1]) == len(os.listdir("/usr/lib")) + 1
    assert not os.path.exists("/isolate-new-target") and not os.path.exists("/usr/lib/isolate-new")


def test_plan_holds_no_resolved_target(fresh_rootfs, tmp_path):
    """The plan names targets as written: nothing of the image is looked at
    when it is made (it is reused for every start with the same options)."""
    from isolate import _plan
    from isolate._config import make_config
    os.symlink("/etc", os.path.join(fresh_rootfs, "link"))
    cfg = make_config(fresh_rootfs, mounts=[Mount.tmpfs("/link/x"),
                                           Mount.bind(str(tmp_path), "/link/y", readonly=True)])
    lines = [s for s in _plan.describe(_plan.container_steps(cfg)) if "/link/" in s]
    assert len(lines) == 2 and all("/newroot/link/" in s for s in lines), lines


def test_overlay_mount_is_writable_inside_and_leaves_the_host_as_it_was(tmp_path):
    """Mount.overlay: the host's directory, copy-on-write; the writes vanish."""
    (tmp_path / "f").write_text("orig\n")
    inside = str(tmp_path)          # under /tmp, which is the container's own tmpfs
    script = ("echo changed > /data/f && echo new > /data/g && cat /data/f /data/g && "
              f"rm {inside}/f && ls {inside} | wc -l && ls /data")
    r = isolate.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                    mounts=[Mount.overlay(tmp_path, "/data"), Mount.overlay(tmp_path)])
    assert r.returncode == 0, r
    assert r.stdout.split() == ["changed", "new", "0", "f", "g"]
    assert (tmp_path / "f").read_text() == "orig\n"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_overlay_mount_bad_input(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        isolate.run(["true"], mounts=[Mount.overlay(tmp_path / "file", "/x")])
    with pytest.raises(FileNotFoundError):
        isolate.run(["true"], mounts=[Mount.overlay(tmp_path / "missing", "/x")])
    with pytest.raises(ValueError, match="overlayfs cannot take"):
        Mount.overlay("/tmp/a,b", "/x")
    odd = tmp_path / "a,upperdir=x"             # reached through a symlink: its options
    odd.mkdir()                                 # would have gone into the mount's
    (tmp_path / "link").symlink_to(odd)
    with pytest.raises(ValueError, match="overlayfs cannot take"):
        isolate.run(["true"], mounts=[Mount.overlay(tmp_path / "link", "/x")])
    with pytest.raises(ValueError, match="relative"):
        Mount.overlay("relative", "/x")


def test_a_bind_source_swapped_for_a_symlink_is_refused(tmp_path, rootfs):
    """A directory on a bind source's path that becomes a symlink after the
    container's plan was made (whoever may write its parent can swap it) is
    refused, not followed to where it points."""
    import isolate
    from isolate import Mount
    src = tmp_path / "vol" / "sub"
    src.mkdir(parents=True)
    (src / "f").write_text("mine\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "f").write_text("host secret\n")
    mounts = [Mount.bind(str(src), "/mnt", readonly=True)]
    r = isolate.run(["cat", "/mnt/f"], rootfs=rootfs, mounts=mounts, capture_output=True)
    assert r.stdout == b"mine\n"
    os.rename(src, tmp_path / "vol" / "old")
    os.symlink(secret, src)             # the same options: the plan made before is used
    with pytest.raises(isolate.ContainerError) as e:
        isolate.run(["cat", "/mnt/f"], rootfs=rootfs, mounts=mounts, capture_output=True)
    assert e.value.step == "bind mount" and e.value.errno == errno.ELOOP

"""What a contained process sees: its PIDs, hostname, mounts, network, root."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

import isolate
from isolate import Container, Mount


def _oneshot(args, **opts):
    return isolate.run(args, capture_output=True, text=True, timeout=30, **opts)


def _in_container(args, **opts):
    with Container(**opts) as c:
        return c.run(args, capture_output=True, text=True, timeout=30)


@pytest.fixture(params=["isolate.run", "Container.run"])
def run(request):
    """Run a command in a fresh container, through each of the two entry points."""
    return _oneshot if request.param == "isolate.run" else _in_container


def sh(run, script, **opts):
    r = run(["sh", "-c", script], **opts)
    assert r.returncode == 0, r.stderr
    return r.stdout


# -- PID namespace ----------------------------------------------------------

def test_pid1_is_the_init_and_only_the_container_is_visible(run, rootfs):
    out = sh(run, "cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                  "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '", rootfs=rootfs)
    cmdline, pids = out.splitlines()
    assert cmdline.split()[0] == "isolate-init"
    pids = [int(p) for p in pids.split()]
    # the init, sh, and the pipeline's processes: a handful, all small numbers
    assert pids[0] == 1
    assert len(pids) <= 6 and max(pids) < 20, pids


def test_host_process_is_invisible(run, rootfs):
    host = subprocess.Popen(["sleep", "60"])
    try:
        out = sh(run, "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; "
                      "echo; done", rootfs=rootfs)
        assert "sleep 60" not in out
        r = run(["kill", "-0", str(host.pid)], rootfs=rootfs)
        assert r.returncode != 0      # that pid does not exist in here
    finally:
        host.kill()
        host.wait()


def test_command_pid_in_container(rootfs):
    with Container(rootfs=rootfs) as c:
        pid = int(c.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout)
        assert 1 < pid < 100
        assert c.pid != pid and c.pid > 1       # host pid of the init


# -- UTS --------------------------------------------------------------------

def test_hostname_given(run, rootfs):
    assert sh(run, "hostname", rootfs=rootfs, hostname="box") == "box\n"
    assert socket.gethostname() != "box"


def test_hostname_defaults_to_container_id(rootfs):
    with Container(rootfs=rootfs) as c:
        assert c.run(["hostname"], capture_output=True, text=True).stdout == c.id + "\n"


# -- network ----------------------------------------------------------------

def test_network_none_has_only_lo_and_it_is_up(run, rootfs):
    out = sh(run, "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
             rootfs=rootfs)
    names, flags = out.split()[:-2], int(out.split()[-1], 16)
    assert names == ["lo"]
    assert flags & 0x1          # IFF_UP
    # and it carries traffic
    # (the listener reads the connection to its end: a plain `nc -l` in the
    # background, its stdin /dev/null, may end before it has read it)
    out = sh(run, "nc -l -p 8080 -e sh -c 'cat > /tmp/got' & "
                  "for i in $(seq 100); do echo hi | nc -w 1 127.0.0.1 8080 2>/dev/null && break; "
                  "sleep 0.05; done; wait; cat /tmp/got", rootfs=rootfs)
    assert out.strip() == "hi"


def test_a_container_has_its_own_network_namespace_for_all_its_processes(rootfs):
    """The init, the first command and later ones share one network namespace,
    the container's own: neither the host's nor another container's. (The
    init is not dumpable: its namespaces are read from the host.)"""
    host = os.readlink("/proc/self/ns/net")
    script = "readlink /proc/self/ns/net"
    first = sh(_oneshot, script, rootfs=rootfs).strip()
    with Container(rootfs=rootfs) as c, Container(rootfs=rootfs) as d:
        third = sh(_in_container, script, rootfs=rootfs).strip()   # for good measure
        seen: dict[str, set[str]] = {}
        for box in (c, c, d):
            r = box.run(["sh", "-c", script], capture_output=True, text=True)
            assert r.stdout.strip() == os.readlink(f"/proc/{box.pid}/ns/net")
            seen.setdefault(box.id, set()).add(r.stdout.strip())
    assert [len(v) for v in seen.values()] == [1, 1]           # c's two commands
    assert len({host, first, third, *seen[c.id], *seen[d.id]}) == 5


def test_mount_below_sys_keeps_the_containers_network(run, tmp_path, rootfs):
    """A mount of the caller's below /sys, on top of the container's sysfs,
    which still shows the container's network namespace and masks."""
    (tmp_path / "f").write_text("from host\n")
    out = sh(run, "cat /sys/kernel/debug/f; ls /sys/class/net; ls /sys/firmware | wc -l",
             rootfs=rootfs, mounts=[Mount.bind(str(tmp_path), "/sys/kernel/debug", readonly=True)])
    assert out.split("\n")[:3] == ["from host", "lo", "0"]


@pytest.mark.parametrize("image", ["busybox", "host"])
def test_network_host_sees_host_interfaces(rootfs, image):
    # The test session has a network namespace of its own (conftest): a veth
    # pair there, so that it holds more than lo. The host's root keeps the
    # host's /sys (of the namespace that mounted it); a rootfs gets a sysfs
    # of the caller's network namespace.
    import socket
    subprocess.run(["ip", "link", "add", "isotest0", "type", "veth", "peer", "name", "isotest1"],
                   check=True)
    try:
        host_ifaces = sorted(os.listdir("/sys/class/net")) if image != "busybox" else \
            sorted(name for _, name in socket.if_nameindex())
        r = _oneshot(["ls", "/sys/class/net"], rootfs=rootfs if image == "busybox" else None,
                     network="host")
    finally:
        subprocess.run(["ip", "link", "del", "isotest0"], check=True)
    assert sorted(r.stdout.split()) == host_ifaces
    assert len(host_ifaces) > 1
    r = _oneshot(["sh", "-c", "echo x > /sys/kernel/uevent_helper"],
                 rootfs=rootfs if image == "busybox" else None, network="host")
    assert r.returncode != 0        # read-only


# -- filesystem -------------------------------------------------------------

def _mountpoints(out: str) -> dict[str, tuple[str, str]]:
    table = {}
    for line in out.splitlines():
        dev, mnt, fstype, opts = line.split()[:4]
        table[mnt] = (fstype, opts)
    return table


def test_mount_table(run, rootfs):
    table = _mountpoints(sh(run, "cat /proc/mounts", rootfs=rootfs))
    assert table["/"][0] == "overlay"
    assert table["/proc"][0] == "proc" and {"nosuid", "nodev", "noexec"} <= set(table["/proc"][1].split(","))
    assert table["/sys"][0] == "sysfs" and "ro" in table["/sys"][1].split(",")
    assert table["/dev"][0] == "tmpfs"
    assert table["/dev/pts"][0] == "devpts"
    assert table["/dev/shm"][0] == "tmpfs"
    # nothing of the host's beyond that: no /oldroot, no host disks (below /proc and
    # /sys: the masked and read-only entries)
    assert {m for m in table if not m.startswith(("/proc/", "/sys/"))} == {
        "/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"}
    # nodev but /dev, whose nodes the default seccomp filter keeps anyone from adding to
    assert all("nodev" in table[m][1].split(",") for m in ("/", "/dev/shm"))
    assert "ro" in table["/proc/sys"][1].split(",")


def test_dev_nodes(run, rootfs):
    out = sh(run, "for n in null zero full random urandom tty; do stat -c '%n %t:%T %F' /dev/$n; "
                  "done; for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; "
                  "head -c 4 /dev/zero | od -An -tx1", rootfs=rootfs)
    lines = out.splitlines()
    expect = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9",
              "tty": "5:0"}
    for line, (name, dev) in zip(lines, expect.items()):
        assert line.startswith(f"/dev/{name} {dev} character special"), line
    assert lines[6:11] == ["/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1",
                           "/proc/self/fd/2", "pts/ptmx"]
    assert lines[11].split() == ["00"] * 4


def test_overlay_writes_do_not_touch_rootfs(run, fresh_rootfs):
    before = sorted(os.listdir(fresh_rootfs))
    out = sh(run, "echo data > /newfile; rm /etc/passwd; mkdir /newdir; cat /newfile; "
                  "ls /etc/passwd 2>&1 || true", rootfs=fresh_rootfs)
    assert out.startswith("data\n")
    assert sorted(os.listdir(fresh_rootfs)) == before
    assert os.path.exists(os.path.join(fresh_rootfs, "etc", "passwd"))


def test_each_container_gets_a_fresh_overlay(rootfs):
    sh(_oneshot, "echo one > /marker", rootfs=rootfs)
    r = _oneshot(["cat", "/marker"], rootfs=rootfs)
    assert r.returncode != 0


def test_readonly_rootfs_refuses_writes(run, rootfs):
    r = run(["sh", "-c", "echo x > /newfile"], rootfs=rootfs, readonly=True)
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    assert not os.path.exists(os.path.join(rootfs, "newfile"))


def test_default_root_is_host_readonly_with_fresh_tmp(run):
    out = sh(run, "cat /etc/os-release | head -1; touch /etc/isolate-x 2>&1; "
                  "touch /usr/isolate-x 2>&1; touch /tmp/ok && ls /tmp; "
                  "grep -E ' /(tmp|run) ' /proc/mounts | cut -d' ' -f2,3")
    lines = out.splitlines()
    with open("/etc/os-release") as f:
        assert lines[0] == f.readline().rstrip("\n")
    assert "Read-only file system" in lines[1]
    assert "Read-only file system" in lines[2]  # submounts too, if any
    assert lines[3] == "ok"                      # /tmp is empty and writable
    assert sorted(lines[4:]) == ["/run tmpfs", "/tmp tmpfs"]
    assert not os.path.exists("/etc/isolate-x")


def test_mount_propagation_is_private(rootfs):
    with Container(rootfs=rootfs, cap_add=["SYS_ADMIN"]) as c:
        r = c.run(["sh", "-c", "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x && echo ok"],
                  capture_output=True, text=True)
        assert r.stdout == "ok\n"
        with open("/proc/self/mountinfo") as f:
            assert "/mnt/x" not in f.read()


def test_bind_mount_readonly_and_tmpfs(tmp_path, rootfs):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from host\n")
    mounts = [Mount.bind(str(data), "/data", readonly=True),
              Mount.bind(str(data / "hello"), "/etc/hello"),
              Mount.tmpfs("/scratch", size="8M")]
    with Container(rootfs=rootfs, mounts=mounts) as c:
        out = c.run(["sh", "-c", "cat /data/hello /etc/hello; touch /data/x 2>&1; "
                                 "grep ' /scratch ' /proc/mounts; "
                                 "dd if=/dev/zero of=/scratch/big bs=1M count=16 2>&1 | grep -o 'No space.*'"],
                    capture_output=True, text=True).stdout
    lines = out.splitlines()
    assert lines[:2] == ["from host", "from host"]
    assert "Read-only file system" in lines[2]
    assert "size=8192k" in lines[3]
    assert "No space left on device" in lines[4]
    assert not (data / "x").exists()


def test_bind_target_symlink_stays_inside_rootfs(tmp_path, fresh_rootfs):
    escape = tmp_path / "outside"
    escape.mkdir()
    os.symlink("../../../../../../../../" + str(escape).lstrip("/"),
               os.path.join(fresh_rootfs, "evil"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    with Container(rootfs=fresh_rootfs, mounts=[Mount.bind(str(src), "/evil")]) as c:
        out = c.run(["sh", "-c", "ls " + str(escape)], capture_output=True, text=True).stdout
    # the mount landed at <rootfs>/<escape path>, inside the container, not on the host dir
    assert out.split() == ["f"]
    assert os.listdir(escape) == []


def test_bind_source_symlink_is_followed_on_the_host(tmp_path, rootfs):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("y")
    os.symlink(tmp_path / "real", tmp_path / "link")
    r = _oneshot(["cat", "/m/f"], rootfs=rootfs, mounts=[Mount.bind(str(tmp_path / "link"), "/m")])
    assert r.stdout == "y"


# -- identity, environment --------------------------------------------------

def test_user_env_cwd(run, rootfs):
    out = sh(run, "id -u; id -g; pwd; echo $FOO; echo $PATH", rootfs=rootfs, user="1000:100",
             env={"FOO": "bar", "PATH": "/bin"}, cwd="/home/user")
    assert out.splitlines() == ["1000", "100", "/home/user", "bar", "/bin"]


def test_user_by_name_and_default_env(rootfs):
    out = sh(_oneshot, "id -u; id -g; echo $HOME; echo $PATH", rootfs=rootfs, user="user")
    assert out.splitlines()[:3] == ["1000", "1000", "/"]
    assert "/bin" in out.splitlines()[3].split(":")


def test_root_has_no_host_supplementary_groups(rootfs):
    out = sh(_oneshot, "id -G", rootfs=rootfs)
    assert out.split() == ["0"]


def test_run_overrides_container_defaults(rootfs):
    with Container(rootfs=rootfs, env={"A": "1", "PATH": "/bin"}, cwd="/etc", user=1000) as c:
        assert c.run(["sh", "-c", "echo $A $(pwd) $(id -u)"], capture_output=True,
                     text=True).stdout == "1 /etc 1000\n"
        assert c.run(["sh", "-c", "echo $A $(pwd) $(id -u)"], env={"A": "2", "PATH": "/bin"},
                     cwd="/", user=0, capture_output=True, text=True).stdout == "2 / 0\n"


def test_ipc_namespace_is_private(rootfs):
    with Container(rootfs=rootfs) as c, Container(rootfs=rootfs) as d:
        inode = c.run(["readlink", "/proc/self/ns/ipc"], capture_output=True, text=True).stdout
        assert inode != os.readlink("/proc/self/ns/ipc") + "\n"
        assert inode != d.run(["readlink", "/proc/self/ns/ipc"], capture_output=True,
                              text=True).stdout


def test_cgroup_namespace_shows_own_root(rootfs):
    out = sh(_oneshot, "cat /proc/self/cgroup", rootfs=rootfs)
    for line in out.splitlines():
        assert line.endswith(":/"), line


@pytest.mark.parametrize("ns", ["mount", "pid", "uts", "ipc", "net", "cgroup"])
def test_each_default_namespace_is_new(ns, rootfs):
    name = {"mount": "mnt"}.get(ns, ns)
    host = os.readlink(f"/proc/self/ns/{name}")
    with Container(rootfs=rootfs) as c:
        inside = c.run(["readlink", f"/proc/self/ns/{name}"], capture_output=True, text=True).stdout
    assert inside.strip() != host and inside.startswith(name + ":[")


def test_namespaces_selects(rootfs):
    host_net = os.readlink("/proc/self/ns/net")
    host_uts = os.readlink("/proc/self/ns/uts")
    with Container(rootfs=rootfs, namespaces={"mount", "pid", "uts"}) as c:
        out = c.run(["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts"],
                    capture_output=True, text=True).stdout.split()
    assert out[0] == host_net
    assert out[1] != host_uts


def test_user_namespace_maps_root_to_caller(rootfs):
    with Container(rootfs=rootfs, namespaces={"user", "mount", "pid", "uts", "ipc", "net"}) as c:
        out = c.run(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                                 "readlink /proc/self/ns/user"],
                    capture_output=True, text=True).stdout.split()
    assert out[:6] == ["0", str(os.geteuid()), "1", "0", str(os.getegid()), "1"]
    assert out[6] == "0"
    assert out[7] != os.readlink("/proc/self/ns/user")


def test_time_namespace(rootfs):
    host = os.readlink("/proc/self/ns/time")
    with Container(rootfs=rootfs, namespaces={"mount", "pid", "time"}) as c:
        out = c.run(["readlink", "/proc/self/ns/time"], capture_output=True, text=True)
        init = os.readlink(f"/proc/{c.pid}/ns/time")
    assert out.returncode == 0, out.stderr
    mine = out.stdout.strip()
    assert mine == init != host
    r = _oneshot(["readlink", "/proc/self/ns/time"], rootfs=rootfs, namespaces={"mount", "pid", "time"})
    assert r.stdout.strip() not in ("", host)

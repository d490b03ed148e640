"""Devices and the memory a container's files take, seen from inside.

Only the default /dev nodes (and those given with devices=) can be opened:
every other mount is nodev. A container's writable layer, /tmp and /run are
tmpfs, host RAM: each holds at most storage_size (default 1G).
"""
from __future__ import annotations

import os
import stat

import pytest

import isolate
from isolate import Container, Mount

OPEN_NODE = "(exec 3<> {path}) 2>/dev/null && echo opened || echo refused"


def _try_open(path: str, **opts) -> str:
    r = isolate.run(["sh", "-c", OPEN_NODE.format(path=path)], capture_output=True, text=True,
                    **opts)
    return r.stdout.strip()


@pytest.mark.parametrize("where", ["/dev", "/tmp", "/dev/shm"])
def test_a_node_made_inside_cannot_be_opened(where):
    """Without seccomp (which refuses device mknod), CAP_MKNOD makes the
    node; nodev keeps it shut. The node is /dev/null's number: harmless if
    this test ever fails."""
    r = isolate.run(["sh", "-c", f"mknod {where}/n c 1 3 && echo made; "
                     + OPEN_NODE.format(path=f"{where}/n")],
                    seccomp=None, capture_output=True, text=True)
    assert r.stdout.split() == ["made", "refused"], r.stderr


@pytest.mark.parametrize("opts", [{}, {"readonly": True},
                                  {"user": "1000:1000", "cap_drop": ["ALL"]}])
def test_a_node_shipped_in_the_image_cannot_be_opened(fresh_rootfs, opts):
    os.mknod(os.path.join(fresh_rootfs, "data", "n"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert _try_open("/data/n", rootfs=fresh_rootfs, **opts) == "refused"


def test_a_node_in_a_bind_mount_or_the_hosts_root_cannot_be_opened(tmp_path, fresh_rootfs):
    os.mknod(tmp_path / "n", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(tmp_path, 0o755)
    assert _try_open("/mnt/n", rootfs=fresh_rootfs,
                     mounts=[Mount.bind(str(tmp_path), "/mnt")]) == "refused"
    assert _try_open(str(tmp_path / "n")) == "refused"       # the host's root, read-only
    assert _try_open("/dev/null") == "opened"


def test_the_default_nodes_work(rootfs):
    r = isolate.run(["sh", "-c", "echo x > /dev/null && head -c 3 /dev/zero | wc -c && "
                     "head -c 5 /dev/urandom | wc -c && head -c 2 /dev/full | wc -c && "
                     "ls /dev/tty && (echo x > /dev/full) 2>&1"],
                    rootfs=rootfs, capture_output=True, text=True)
    assert r.stdout.split()[:4] == ["3", "5", "2", "/dev/tty"]
    assert "No space left" in r.stdout


def test_devices_gives_host_nodes(rootfs):
    r = isolate.run(["sh", "-c", "head -c 4 /dev/myzero | wc -c; ls -l /dev/fuse"],
                    rootfs=rootfs, devices=["/dev/zero:/dev/myzero", "/dev/fuse"],
                    capture_output=True, text=True)
    assert r.stdout.split()[0] == "4", r.stderr
    assert "10, 229" in r.stdout
    with pytest.raises(ValueError, match="not a character or block device"):
        Container(devices=["/etc/passwd:/dev/passwd"])
    with pytest.raises(FileNotFoundError):
        Container(devices=["/dev/no-such-device"])
    with pytest.raises(ValueError, match="under /dev"):
        Container(devices=["/dev/zero:/etc/zero"])


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable")


WRITE = ("dd if=/dev/zero of={path} bs=1M count={mb} 2>/dev/null; echo rc=$?; "
         "du -m {path} | cut -f1; grep MemAvailable /proc/meminfo")


def test_a_default_container_cannot_fill_host_memory_with_files():
    """3 GiB written to /tmp of a default container: it stops at the 1G cap,
    and host memory falls by no more than that while the file is there."""
    before = _mem_available()
    r = isolate.run(["sh", "-c", WRITE.format(path="/tmp/big", mb=3072)],
                    capture_output=True, text=True)
    rc, mb, _, during, _ = r.stdout.split()
    assert rc != "rc=0"                         # No space left on device
    assert int(mb) <= 1024
    assert before - int(during) * 1024 < 1536 << 20


@pytest.mark.parametrize("where", ["/big", "/tmp/big"])
def test_storage_size_bounds_the_writable_layer(fresh_rootfs, where):
    r = isolate.run(["sh", "-c", WRITE.format(path=where, mb=64)], rootfs=fresh_rootfs,
                    storage_size="16M", capture_output=True, text=True)
    rc, mb = r.stdout.split()[:2]
    assert rc != "rc=0" and int(mb) <= 16
    r = isolate.run(["sh", "-c", WRITE.format(path="/run/big", mb=64)], storage_size="16M",
                    capture_output=True, text=True)
    rc, mb = r.stdout.split()[:2]
    assert rc != "rc=0" and int(mb) <= 16


def test_storage_size_is_checked():
    with pytest.raises(ValueError, match="storage_size"):
        Container(storage_size="1K")
    with pytest.raises(ValueError):
        Container(storage_size="lots")

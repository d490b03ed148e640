"""Shared fixtures: a busybox root filesystem, and a check that no test leaks.

Every test runs under `no_leaks`: afterwards the host must have the same
mounts, network namespaces and processes in other PID namespaces as before,
and this process no new child processes or fds.
"""
from __future__ import annotations

import os
import time

import pytest

import isolate

from .rootfs import make_rootfs


def pytest_configure(config):
    """An image store of the session's own (tests that want one of their
    own set ISOLATE_HOME again): the host's /var/lib/isolate is never written.
    And a network namespace of the session's own, lo up, made before any
    thread: the bridges, veths and firewall tables that tests make, the
    daemons they start and all their traffic stay in it, and the host's
    interfaces and firewall are never changed."""
    import tempfile
    _own_network_namespace()
    if not hasattr(config, "workerinput") or "ISOLATE_HOME" not in os.environ:
        config._isolate_home = tempfile.mkdtemp(prefix="isolate-test-store-")
        os.environ["ISOLATE_HOME"] = config._isolate_home


def _own_network_namespace() -> None:
    import ctypes
    import fcntl
    import socket
    import struct
    if os.geteuid() != 0 or os.environ.get("ISOLATE_TEST_NETNS") == str(os.getpid()):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    # the host's, kept open: what must reach out (a package index) enters it
    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    os.environ["ISOLATE_HOST_NETNS"] = f"/proc/{os.getpid()}/fd/{host}"
    if libc.unshare(0x40000000) != 0:       # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) for the test session")
    os.environ["ISOLATE_TEST_NETNS"] = str(os.getpid())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:    # lo up
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]     # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))      # SIOCSIFFLAGS


def pytest_unconfigure(config):
    import shutil
    home = getattr(config, "_isolate_home", None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)

@pytest.fixture(scope="session")
def rootfs(tmp_path_factory) -> str:
    """A busybox root filesystem: /bin with every applet, /etc/passwd with root and user."""
    return make_rootfs(str(tmp_path_factory.mktemp("busybox")))


@pytest.fixture()
def public_tmp():
    """A directory others can traverse (pytest's own are mode 700): for
    containers whose root is an unprivileged host id."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="isolate-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


@pytest.fixture()
def fresh_rootfs(tmp_path) -> str:
    """A busybox root filesystem of this test alone (for tests that inspect it after)."""
    return make_rootfs(str(tmp_path / "rootfs"))


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        # mount id and parent id change when remounted; compare the rest
        return sorted(" ".join(line.split()[2:]) for line in f)


def _ns_inode(pid: str, ns: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino
    except OSError:
        return None


def _procs() -> dict[str, str]:
    """Processes in other PID namespaces than ours, and children of this process."""
    me = str(os.getpid())
    my_pidns = _ns_inode("self", "pid")
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me or _ns_inode(pid, "pid") not in (my_pidns, None):
            out[pid] = stat[: stat.rfind(")") + 1]
    return out


def _netns() -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            ino = _ns_inode(pid, "net")
            if ino is not None:
                found.add(ino)
    return found


def _cgroups() -> set[str]:
    """Containers' cgroups, where this process makes them (v1 or v2)."""
    from isolate import _cgroups as cg
    found = set()
    for base in cg.bases():
        try:
            found |= {f"{base}/{n}" for n in os.listdir(base) if n.startswith(cg.PREFIX)}
        except OSError:
            pass
    return found


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _links() -> set[str]:
    """The interfaces of the session's network namespace (bridges, veths)."""
    import socket
    return {name for _, name in socket.if_nameindex()}


def _tables() -> set[str]:
    """Its nf_tables tables (a network's, a container's published ports)."""
    from isolate import _netlink
    try:
        return {f"{family}:{name}" for family, name in _netlink.tables()}
    except OSError:
        return set()


def snapshot() -> dict:
    return {"mounts": _mounts(), "processes": _procs(), "netns": _netns(), "fds": _fds(),
            "cgroups": _cgroups(), "links": _links(), "tables": _tables()}


def leaks(before: dict, after: dict) -> dict:
    found = {}
    mounts = sorted(set(after["mounts"]) - set(before["mounts"]))
    if mounts:
        found["mounts"] = mounts
    procs = {p: s for p, s in after["processes"].items() if p not in before["processes"]}
    if procs:
        found["processes"] = procs
    if after["cgroups"] - before["cgroups"]:
        found["cgroups"] = after["cgroups"] - before["cgroups"]
    if after["netns"] - before["netns"]:
        found["netns"] = after["netns"] - before["netns"]
    for kind in ("links", "tables"):
        if after[kind] - before[kind]:
            found[kind] = after[kind] - before[kind]
    fds = {}
    for fd in after["fds"] - before["fds"]:
        try:                # the fd listdir itself used is gone by now
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    if fds:
        found["fds"] = fds
    return found


def assert_no_leaks(before: dict) -> None:
    # a network's spare (a namespace made ahead for its next container) is
    # kept for a moment by design: dropped here, it must go with its veth
    from isolate import network
    network.drop_spares()
    # processes killed a moment ago can take a few ms to be fully gone
    deadline = time.monotonic() + 5
    while True:
        found = leaks(before, snapshot())
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not found, f"left behind: {found}"


@pytest.fixture(scope="session", autouse=True)
def _warm():
    # The process keeps one /dev/null fd, the init's memfd and the copy of
    # its own binary that call processes run as for its lifetime.
    isolate.run(["true"])
    with isolate.Container() as c:
        c.call(int)


@pytest.fixture(autouse=True)
def no_leaks(_warm):
    before = snapshot()
    yield
    assert_no_leaks(before)

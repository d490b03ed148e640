"""Attacks from inside a default container that the default seccomp filter
stops, run for real: the calls Docker's default profile refuses (the ptrace
family without CAP_SYS_PTRACE, AF_VSOCK and AF_ALG sockets, ...), and device
nodes made with mknod. Each probe runs in the container through ctypes and
gives back (return value, errno name)."""
from __future__ import annotations

import os
import sys

import pytest

import isolate
from isolate import Container

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="the probes' numbers are x86-64's")

# x86-64 syscall numbers
PTRACE, SOCKET, MKNOD, SYSLOG, MKNODAT = 101, 41, 133, 103, 259
PROCESS_VM_READV, KCMP, PIDFD_GETFD, PROCESS_MADVISE = 310, 312, 438, 440
AF_ALG, AF_VSOCK = 38, 40


def syscall(nr: int, *args: int) -> tuple[int, str]:
    import ctypes
    import errno
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return r, (errno.errorcode.get(ctypes.get_errno(), "?") if r < 0 else "")


def ptrace_family(target: int | None = None) -> dict[str, tuple[int, str]]:
    """Each call of the ptrace family on `target`, or on a child of this
    process made for it (a process the kernel lets this one trace: same
    user, dumpable, unlike the init and call() processes). Returns (return
    value, errno name) for each."""
    import ctypes
    import signal

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    secret, copy = ctypes.create_string_buffer(b"secret!"), ctypes.create_string_buffer(8)
    r, w = os.pipe()
    child = None
    if target is None:
        ready_r, ready_w = os.pipe()
        child = target = os.fork()
        if child == 0:      # dumpable, as any program the container runs is
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)      # PR_SET_DUMPABLE
            os.write(ready_w, b".")
            os.read(r, 1)
            os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
    local, remote = Iovec(ctypes.addressof(copy), 8), Iovec(ctypes.addressof(secret), 8)
    pidfd, own = os.pidfd_open(target), os.pidfd_open(os.getpid())
    try:
        out = {
            "pidfd_getfd": [syscall(PIDFD_GETFD, pidfd, fd, 0) for fd in range(5)],
            "process_vm_readv": syscall(PROCESS_VM_READV, target, ctypes.addressof(local), 1,
                                        ctypes.addressof(remote), 1, 0),
            "kcmp": syscall(KCMP, os.getpid(), target, 0, 0, 0),       # KCMP_FILE, fd 0
            # on this process: on another the kernel wants CAP_SYS_NICE too
            "process_madvise": syscall(PROCESS_MADVISE, own, ctypes.addressof(local), 1,
                                       20, 0),                         # MADV_COLD
            "ptrace": syscall(PTRACE, 16, target, 0, 0),               # PTRACE_ATTACH
        }
        if out["process_vm_readv"][0] == 8 and child is not None:
            out["read"] = copy.value.decode()
    finally:
        for fd, _ in out["pidfd_getfd"]:
            if fd >= 0:
                os.close(fd)
        if out["ptrace"][0] == 0 and child is None:     # the init, on a filter that let it
            os.waitpid(target, 0x40000000)              # __WALL: the stop the attach sent
            syscall(PTRACE, 17, target, 0, 0)           # PTRACE_DETACH
        os.close(pidfd)
        os.close(own)
        os.close(r)
        os.close(w)
        if child is not None:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    return out


REFUSED = {"pidfd_getfd": [(-1, "EPERM")] * 5, "process_vm_readv": (-1, "EPERM"),
           "kcmp": (-1, "EPERM"), "process_madvise": (-1, "EPERM"), "ptrace": (-1, "EPERM")}


def test_ptrace_family_refused_without_cap_sys_ptrace(rootfs):
    """pidfd_getfd would take another process's fds (the init's control
    socket, to forge its exit status), process_vm_readv read its memory,
    ptrace take it over, kcmp compare its files with ours."""
    with Container(rootfs=rootfs) as c:
        on_init = c.call(ptrace_family, 1)
        on_sibling = c.call(ptrace_family)
        assert c.run(["true"]).returncode == 0
    assert on_init == REFUSED
    assert on_sibling == REFUSED


def test_ptrace_family_allowed_with_cap_sys_ptrace(rootfs):
    with Container(rootfs=rootfs) as c:
        assert c.call(ptrace_family) == REFUSED
    with Container(rootfs=rootfs, cap_add=["SYS_PTRACE"]) as c:
        got = c.call(ptrace_family)
    assert all(fd >= 0 for fd, _ in got["pidfd_getfd"][:3]), got
    assert got["process_vm_readv"] == (8, "") and got["read"] == "secret!"
    assert got["kcmp"] == (0, "")
    assert got["ptrace"] == (0, "")
    assert got["process_madvise"][1] != "EPERM"


def test_vsock_and_alg_sockets_are_refused(rootfs):
    def sockets():
        got = {name: syscall(SOCKET, family, kind, 0) for name, family, kind in
               (("vsock", AF_VSOCK, 1), ("vsock_high_bits", (1 << 32) | AF_VSOCK, 1),
                ("alg", AF_ALG, 5), ("unix", 1, 1), ("inet", 2, 2))}
        for fd, _ in got.values():
            if fd >= 0:
                os.close(fd)
        return got
    with Container(rootfs=rootfs) as c:
        got = c.call(sockets)
    assert got["vsock"] == got["vsock_high_bits"] == got["alg"] == (-1, "EPERM")
    assert got["unix"][0] >= 0 and got["inet"][0] >= 0


def test_vsock_socket_refused_to_host_python():
    """The same with the host's root and its whole Python: the socket module."""
    code = ("import socket\n"
            "try:\n"
            "    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n"
            "except PermissionError:\n"
            "    print('refused')\n"
            "except OSError as e:\n"
            "    print('other', e)\n"
            "else:\n"
            "    print('made')\n")
    r = isolate.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout == "refused\n", r.stderr


def make_nodes() -> dict[str, str]:
    import ctypes
    import errno
    import stat
    out = {}

    def attempt(name, fn):
        try:
            fn()
            out[name] = "made"
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
    dev = os.makedev(1, 3)
    attempt("chr", lambda: os.mknod("/tmp/chr", stat.S_IFCHR | 0o600, dev))
    attempt("blk", lambda: os.mknod("/tmp/blk", stat.S_IFBLK | 0o600, os.makedev(7, 0)))
    dirfd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    try:
        attempt("chr_at", lambda: os.mknod("chr_at", stat.S_IFCHR | 0o666, dev, dir_fd=dirfd))
    finally:
        os.close(dirfd)
    for name, nr, mode, rdev in (
            ("chr_raw", MKNOD, stat.S_IFCHR | 0o600, dev),
            ("chr_raw_high_bits", MKNOD, (1 << 16) | stat.S_IFCHR | 0o600, dev),
            ("blk_rawat", MKNODAT, stat.S_IFBLK | 0o600, os.makedev(7, 0))):
        path = ctypes.create_string_buffer(f"/tmp/{name}".encode())
        where = (ctypes.addressof(path),) if nr == MKNOD else (-100, ctypes.addressof(path))
        r, err = syscall(nr, *where, mode, rdev)                    # -100: AT_FDCWD
        out[name] = "made" if r == 0 else err
    attempt("fifo", lambda: os.mkfifo("/tmp/fifo"))
    attempt("fifo_mknod", lambda: os.mknod("/tmp/fifo2", stat.S_IFIFO | 0o600))
    attempt("file", lambda: os.mknod("/tmp/file", stat.S_IFREG | 0o600))
    attempt("socket", lambda: os.mknod("/tmp/sock", stat.S_IFSOCK | 0o600))
    return out


@pytest.mark.parametrize("cap_add", [[], ["SYS_ADMIN", "SYS_RAWIO"]], ids=["default", "more_caps"])
def test_no_device_nodes_by_mknod(rootfs, cap_add):
    with Container(rootfs=rootfs, cap_add=cap_add) as c:
        got = c.call(make_nodes)
    refused = ("chr", "blk", "chr_at", "chr_raw", "chr_raw_high_bits", "blk_rawat")
    assert {k: got[k] for k in refused} == dict.fromkeys(refused, "EPERM")
    assert {k: v for k, v in got.items() if k not in refused} == \
        dict.fromkeys(("fifo", "fifo_mknod", "file", "socket"), "made")


def test_busybox_mknod(rootfs):
    r = isolate.run(["sh", "-c", "mknod /tmp/null c 1 3; echo rc=$?; mknod /tmp/loop b 7 0; "
                                 "echo rc=$?; mknod /tmp/pipe p && ls -l /tmp/pipe"],
                    rootfs=rootfs, capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["rc=1", "rc=1"], r.stderr
    assert lines[2].startswith("p")
    assert r.stderr.count("Operation not permitted") == 2


@pytest.fixture()
def dmesg_open():
    """kernel.dmesg_restrict 0 for the test: syslog then reads without
    CAP_SYSLOG unless seccomp refuses it."""
    path = "/proc/sys/kernel/dmesg_restrict"
    try:
        with open(path) as f:
            saved = f.read()
        with open(path, "w") as f:
            f.write("0")
    except OSError:
        pytest.skip(f"{path} cannot be changed here")
    yield
    with open(path, "w") as f:
        f.write(saved)


def test_syslog_is_refused(rootfs, dmesg_open):
    def read_log():
        import ctypes
        buf = ctypes.create_string_buffer(4096)
        return {"read_all": syscall(SYSLOG, 3, ctypes.addressof(buf), 4096),   # SYSLOG_ACTION_READ_ALL
                "size": syscall(SYSLOG, 10, 0, 0)}                          # SYSLOG_ACTION_SIZE_BUFFER
    with Container(rootfs=rootfs) as c:
        got = c.call(read_log)
    assert got == {"read_all": (-1, "EPERM"), "size": (-1, "EPERM")}
    with Container(rootfs=rootfs, cap_add=["SYSLOG"]) as c:
        got = c.call(read_log)
    assert got["size"][0] > 0


# calls Docker's default profile refuses that the filter let through before:
# (number, arguments, the capability that allows it as in Docker's profile)
NEWLY_REFUSED = {
    "migrate_pages": (256, (0, 8, 0, 0), None),
    "set_mempolicy_home_node": (450, (0, 0, 0, 0), "SYS_NICE"),
    "quotactl_fd": (443, (0, 0, 0, 0), "SYS_ADMIN"),
    "lsm_list_modules": (461, (0, 0, 0), "SYS_ADMIN"),
    "security": (185, (), None),
    "afs_syscall": (183, (), None),
}


@pytest.mark.parametrize("name", NEWLY_REFUSED)
def test_newly_refused_calls(rootfs, name):
    nr, args, cap = NEWLY_REFUSED[name]
    with Container(rootfs=rootfs) as c:
        assert c.call(syscall, nr, *args) == (-1, "EPERM")
    if cap is not None:
        with Container(rootfs=rootfs, cap_add=[cap]) as c:
            assert c.call(syscall, nr, *args)[1] != "EPERM"

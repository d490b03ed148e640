"""The default seccomp filter, compiled by isolate, decides every call as the
program libseccomp makes from the same rules does. Both programs are run
here by a small classic-BPF interpreter over every syscall number, the x32
and foreign-architecture calls, and the arguments the rules look at."""
from __future__ import annotations

import errno
import struct

import pytest

from isolate import _seccomp
from isolate._security import cap_number

DOCKER_CAPS = 0xa80425fb
SYS_ADMIN = 1 << cap_number("SYS_ADMIN")
SYS_PTRACE = 1 << cap_number("SYS_PTRACE")
ALL_CAPS = (1 << 41) - 1

#: capability masks: Docker's default, with each capability the profile
#: looks at added, with SYS_CHROOT dropped, none and all
CAPS = {"default": DOCKER_CAPS, "none": 0, "all": ALL_CAPS,
        "no_sys_chroot": DOCKER_CAPS & ~(1 << cap_number("SYS_CHROOT"))}
for _need, _ in _seccomp.CAPS_ONLY:
    for _cap in _need:
        CAPS[_cap.lower()] = DOCKER_CAPS | (1 << cap_number(_cap))


def run_bpf(prog: bytes, nr: int, arch: int, args=(0,)) -> int:
    """What a classic BPF seccomp program returns for one call."""
    code = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("=IIQ6Q", nr, arch, 0, *args)
    a = pc = steps = 0
    while True:
        op, jt, jf, k = code[pc]
        steps += 1
        assert steps <= len(code), "a loop"
        pc += 1
        if op == 0x20:                              # ld [k]
            a = struct.unpack_from("=I", data, k)[0]
        elif op == 0x54:                            # and #k
            a &= k
        elif op == 0x05:                            # ja
            pc += k
        elif op in (0x15, 0x25, 0x35, 0x45):        # jeq, jgt, jge, jset
            hit = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[op]
            pc += jt if hit else jf
        elif op == 0x06:                            # ret #k
            return k
        else:
            raise AssertionError(f"instruction {op:#x} at {pc - 1}")


def libseccomp_filter(caps: int) -> bytes:
    """The default profile's rules, compiled by libseccomp."""
    lib = _seccomp._lib()
    ctx = _seccomp._new(lib, _seccomp.SCMP_ACT_ALLOW)
    eperm = _seccomp._errno_action(errno.EPERM)
    cmp, gt, masked_eq = _seccomp._Cmp, 6, 7
    try:
        for name in _seccomp.DENIED:
            _seccomp._rule(lib, ctx, eperm, name)
        for need, names in _seccomp.CAPS_ONLY:
            if not any(caps & (1 << cap_number(c)) for c in need):
                for name in names:
                    _seccomp._rule(lib, ctx, eperm, name)
        _seccomp._rule(lib, ctx, _seccomp._errno_action(errno.ENOSYS), "clone3")
        # personality: each gap between the allowed values as aligned blocks
        allowed = _seccomp.PERSONALITIES
        for lo, hi in zip(allowed, allowed[1:]):
            first, last = lo + 1, hi - 1
            while first <= last:
                size = 1
                while first % (size * 2) == 0 and first + size * 2 - 1 <= last:
                    size *= 2
                mask = 0xffffffffffffffff & ~(size - 1)
                _seccomp._rule(lib, ctx, eperm, "personality", cmp(0, masked_eq, mask, first))
                first += size
        _seccomp._rule(lib, ctx, eperm, "personality", cmp(0, gt, 0xffffffff, 0))
        # socket's family is an int: the low half of the argument
        for family in _seccomp.SOCKET_FAMILIES:
            _seccomp._rule(lib, ctx, eperm, "socket", cmp(0, masked_eq, 0xffffffff, family))
        for name, arg in (("mknod", 1), ("mknodat", 2)):
            for kind in _seccomp.MKNOD_TYPES:
                _seccomp._rule(lib, ctx, eperm, name, cmp(arg, masked_eq, 0o170000, kind))
        if not caps & SYS_ADMIN:
            for flag in _seccomp.NAMESPACE_FLAGS:
                _seccomp._rule(lib, ctx, eperm, "clone", cmp(0, masked_eq, flag, flag))
        return _seccomp._export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def nr_of(name: str) -> int:
    lib = _seccomp._lib()
    return _seccomp._number(lib, lib.seccomp_arch_native(), name)


def calls():
    """(number, architecture, arguments) of the calls both programs decide."""
    lib = _seccomp._lib()
    native = lib.seccomp_arch_native()
    arg0 = [0, 1, 7, 8, 9, 17, 0x1ffff, 0x20000, 0x20001, 0x20008, 0x20009, 0x40000, 0xfffffffe,
            0xffffffff, 1 << 32, (1 << 32) | 8, 0xffffffff00000000, 0xffffffffffffffff]
    arg0 += [f for flag in _seccomp.NAMESPACE_FLAGS for f in (flag, flag | 17, flag << 32)]
    families = [f + d for f in _seccomp.SOCKET_FAMILIES for d in (-1, 0, 1)]
    arg0 += families + [f | (1 << 32) for f in families] + [0xffffff00 | f for f in families]
    modes = [kind | perm for kind in range(0, 0o200000, 0o010000) for perm in (0, 0o644, 0o7777)]
    modes += [m | high for m in (0o020000, 0o060000, 0o010000) for high in (0x10000, 1 << 32)]
    # the argument each rule looks at, in its place and in the others'
    looked_at = {"personality": arg0, "clone": arg0, "socket": arg0, "mknod": modes,
                 "mknodat": modes}
    with_args = {nr_of(name): values for name, values in looked_at.items() if nr_of(name) >= 0}
    for arch in (native, 0x40000003, 0xc00000b7):            # i386, aarch64
        numbers = list(range(0, 1024))
        numbers += [0x40000000 + n for n in range(0, 1024, 7)]
        numbers += [0x3fffffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]
        for nr in numbers:
            if nr in with_args and arch == native:
                for value in with_args[nr]:
                    for place in range(3):
                        args = [0xffffffff if place else 0] * 3
                        args[place] = value
                        yield nr, arch, tuple(args)
            else:
                for arg in (0, 0xffffffff):
                    yield nr, arch, (arg,) * 3


@pytest.mark.parametrize("caps", CAPS.values(), ids=CAPS.keys())
def test_default_filter_decides_as_libseccomp(caps):
    ours, theirs = _seccomp.default_filter(caps), libseccomp_filter(caps)
    differ = [(nr, hex(arch), [hex(a) for a in args], hex(run_bpf(ours, nr, arch, args)),
               hex(run_bpf(theirs, nr, arch, args)))
              for nr, arch, args in calls()
              if run_bpf(ours, nr, arch, args) != run_bpf(theirs, nr, arch, args)]
    assert differ == []
    assert len(ours) < len(theirs) / 2


EPERM = _seccomp._errno_action(errno.EPERM)
ALLOW = _seccomp.SCMP_ACT_ALLOW


def decide(caps: int, name: str, *args: int) -> int:
    lib = _seccomp._lib()
    return run_bpf(_seccomp.default_filter(caps), nr_of(name), lib.seccomp_arch_native(), args)


@pytest.mark.parametrize("name", ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                                  "pidfd_getfd", "process_madvise"])
def test_ptrace_family_needs_sys_ptrace(name):
    assert decide(DOCKER_CAPS, name) == EPERM
    assert decide(DOCKER_CAPS | SYS_PTRACE, name) == ALLOW
    assert decide(ALL_CAPS & ~SYS_PTRACE, name) == EPERM


def test_socket_families_and_device_nodes():
    for caps in (DOCKER_CAPS, ALL_CAPS):
        assert decide(caps, "socket", 40, 1, 0) == EPERM            # AF_VSOCK
        assert decide(caps, "socket", 38, 5, 0) == EPERM            # AF_ALG
        assert decide(caps, "socket", (1 << 32) | 40) == EPERM     # the kernel takes an int
        for family in (1, 2, 10, 16, 17, 39, 41, 44):
            assert decide(caps, "socket", family, 1, 0) == ALLOW
        for kind, verdict in ((0o020000, EPERM), (0o060000, EPERM), (0o010000, ALLOW),
                              (0o140000, ALLOW), (0o100000, ALLOW), (0, ALLOW)):
            assert decide(caps, "mknod", 0, kind | 0o600, 0) == verdict
            assert decide(caps, "mknodat", 0xffffff9c, 0, kind | 0o600, 0) == verdict


@pytest.mark.parametrize("name, cap", [
    ("syslog", "SYSLOG"), ("syslog", "SYS_ADMIN"), ("bpf", "BPF"), ("bpf", "SYS_ADMIN"),
    ("perf_event_open", "PERFMON"), ("reboot", "SYS_BOOT"), ("init_module", "SYS_MODULE"),
    ("acct", "SYS_PACCT"), ("iopl", "SYS_RAWIO"), ("clock_settime", "SYS_TIME"),
    ("vhangup", "SYS_TTY_CONFIG"), ("mbind", "SYS_NICE"), ("set_mempolicy_home_node", "SYS_NICE"),
    ("open_by_handle_at", "DAC_READ_SEARCH"), ("sethostname", "SYS_ADMIN"),
    ("quotactl_fd", "SYS_ADMIN"), ("lsm_list_modules", "SYS_ADMIN"),
])
def test_calls_allowed_with_a_capability_as_docker_does(name, cap):
    assert decide(DOCKER_CAPS, name) == EPERM
    assert decide(DOCKER_CAPS | (1 << cap_number(cap)), name) == ALLOW


def test_chroot_needs_sys_chroot():
    assert decide(DOCKER_CAPS, "chroot") == ALLOW
    assert decide(CAPS["no_sys_chroot"], "chroot") == EPERM


@pytest.mark.parametrize("name", ["keyctl", "move_pages", "migrate_pages", "pivot_root",
                                  "security", "vserver", "io_uring_setup"])
def test_refused_whatever_the_capabilities(name):
    assert decide(ALL_CAPS, name) == EPERM


def test_newer_call_numbers_agree_with_libseccomp():
    lib = _seccomp._lib()
    for name, nr in _seccomp._NEWER_CALLS.items():
        known = lib.seccomp_syscall_resolve_name(name.encode())
        assert known < 0 or known == nr, (name, known, nr)


@pytest.mark.parametrize("caps", [DOCKER_CAPS, 0, ALL_CAPS], ids=["default", "none", "all"])
def test_default_filter_paths_are_short(caps):
    """Each call walks a few comparisons (and the load, which walks the
    program for every number, stays cheap)."""
    prog = _seccomp.default_filter(caps)
    code = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    worst = 0
    for nr in range(1024):
        pc = steps = 0
        while code[pc][0] != 0x06:
            op, jt, jf, k = code[pc]
            steps += 1
            if op == 0x20:
                pc += 1
                if k == 0:
                    a = nr
                elif k == 4:
                    a = _seccomp._lib().seccomp_arch_native()
                else:
                    break           # an argument: the call's own rule
                continue
            hit = {0x15: a == k, 0x35: a >= k, 0x45: bool(a & k)}[op]
            pc += 1 + (jt if hit else jf)
        worst = max(worst, steps)
    assert worst <= 14
    assert len(code) <= 110

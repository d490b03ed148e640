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


def run_bpf(prog: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """What a classic BPF seccomp program returns for one call."""
    code = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    data = struct.pack("=IIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
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
        if not caps & SYS_ADMIN:
            for name in _seccomp.ADMIN_ONLY:
                _seccomp._rule(lib, ctx, eperm, name)
            for flag in _seccomp.NAMESPACE_FLAGS:
                _seccomp._rule(lib, ctx, eperm, "clone", cmp(0, masked_eq, flag, flag))
        return _seccomp._export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def calls():
    lib = _seccomp._lib()
    native = lib.seccomp_arch_native()
    nr_of = {n: lib.seccomp_syscall_resolve_name(n.encode()) for n in ("personality", "clone")}
    args = [0, 1, 7, 8, 9, 17, 0x1ffff, 0x20000, 0x20001, 0x20008, 0x20009, 0x40000, 0xfffffffe,
            0xffffffff, 1 << 32, (1 << 32) | 8, 0xffffffff00000000, 0xffffffffffffffff]
    args += [f for flag in _seccomp.NAMESPACE_FLAGS for f in (flag, flag | 17, flag << 32)]
    for arch in (native, 0x40000003, 0xc00000b7):            # i386, aarch64
        numbers = list(range(0, 1024))
        numbers += [0x40000000 + n for n in range(0, 1024, 7)]
        numbers += [0x3fffffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]
        for nr in numbers:
            for arg0 in (args if nr in nr_of.values() else (0, 0xffffffff)):
                yield nr, arch, arg0


@pytest.mark.parametrize("caps", [DOCKER_CAPS, DOCKER_CAPS | SYS_ADMIN], ids=["default", "sys_admin"])
def test_default_filter_decides_as_libseccomp(caps):
    ours, theirs = _seccomp.default_filter(caps), libseccomp_filter(caps)
    differ = [(nr, hex(arch), hex(arg0), hex(run_bpf(ours, nr, arch, arg0)),
               hex(run_bpf(theirs, nr, arch, arg0)))
              for nr, arch, arg0 in calls()
              if run_bpf(ours, nr, arch, arg0) != run_bpf(theirs, nr, arch, arg0)]
    assert differ == []
    assert len(ours) < len(theirs) / 2


def test_default_filter_paths_are_short():
    """Each call walks a few comparisons (and the load, which walks the
    program for every number, stays cheap)."""
    prog = _seccomp.default_filter(DOCKER_CAPS)
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

"""Seccomp filters as BPF: the default profile, compiled here, and OCI/Docker
JSON profiles, compiled by libseccomp (which also names the syscalls).

A filter is made in the caller and handed to the child as BPF, which loads
it as its last step before exec. Blocked calls fail with EPERM and the
process lives on; clone3 answers ENOSYS, so that libcs fall back to clone,
whose namespace flags the filter can see.

The default profile refuses what Docker's default profile refuses on x86-64,
with the same capability conditions (a call Docker allows with a capability
is allowed here when the container holds it), and more: the ptrace family,
ptrace and process_vm_* included, only with CAP_SYS_PTRACE; no device nodes
by mknod; clone3 never; only the native ABI. It is a denylist: a call newer
than its lists is allowed (file_getattr, file_setattr, which Docker's list,
being older, refuses).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import struct
from typing import Union

from ._security import cap_number

#: always refused, whatever the capabilities (Docker's default profile
#: refuses these too; the last six are not implemented by Linux)
DENIED = (
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "swapon", "swapoff",
    "nfsservctl", "uselib", "vm86", "vm86old", "create_module", "get_kernel_syms",
    "query_module", "_sysctl", "sysfs", "ustat", "move_pages", "migrate_pages", "pivot_root",
    "getpmsg", "putpmsg", "afs_syscall", "tuxcall", "security", "vserver",
)

#: refused unless CAP_SYS_ADMIN was granted
ADMIN_ONLY = ("mount", "umount", "umount2", "unshare", "setns", "open_tree", "open_tree_attr",
              "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
              "sethostname", "setdomainname", "quotactl", "quotactl_fd", "lookup_dcookie",
              "fanotify_init", "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules")

#: refused unless the container holds one of the capabilities (Docker's
#: includes.caps rules; ptrace and process_vm_* too here, where Docker
#: allows them to all): (capabilities, calls)
CAPS_ONLY = (
    (("SYS_ADMIN",), ADMIN_ONLY),
    (("SYS_ADMIN", "SYSLOG"), ("syslog",)),
    (("SYS_ADMIN", "BPF"), ("bpf",)),
    (("SYS_ADMIN", "PERFMON"), ("perf_event_open",)),
    (("SYS_PTRACE",), ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
                       "process_madvise")),
    (("SYS_BOOT",), ("reboot",)),
    (("SYS_CHROOT",), ("chroot",)),
    (("SYS_MODULE",), ("init_module", "finit_module", "delete_module")),
    (("SYS_PACCT",), ("acct",)),
    (("SYS_RAWIO",), ("iopl", "ioperm")),
    (("SYS_TIME",), ("settimeofday", "stime", "clock_settime", "clock_adjtime")),
    (("SYS_TTY_CONFIG",), ("vhangup",)),
    (("SYS_NICE",), ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node")),
    (("DAC_READ_SEARCH",), ("open_by_handle_at", "name_to_handle_at")),
)

#: socket families refused (Docker's list): AF_ALG, AF_VSOCK
SOCKET_FAMILIES = (38, 40)

#: file types mknod and mknodat may not make: S_IFCHR, S_IFBLK (a container's
#: nodes are made before the filter loads; more come in by bind mount)
MKNOD_TYPES = (0o020000, 0o060000)
_S_IFMT = 0o170000

#: numbers of calls that older libseccomp releases do not name; the same on
#: x86-64 and aarch64, as every call since Linux 5.1 (424 on)
_NEWER_CALLS = {"lsm_get_self_attr": 459, "lsm_set_self_attr": 460, "lsm_list_modules": 461,
                "open_tree_attr": 467}

#: clone flags that make namespaces (refused unless CAP_SYS_ADMIN)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)

#: personality values a program may set (Docker's list); others fail
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xffffffff)

SCMP_ACT_ALLOW = 0x7FFF0000


def _errno_action(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise ImportError("the default seccomp filter needs libseccomp "
                          "(Debian: apt-get install libseccomp2), or pass seccomp=None") from e
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_Cmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


SCMP_FLTATR_CTL_OPTIMIZE = 8


def _new(lib, default: int):
    """A filter context; its syscalls sorted into a binary tree (libseccomp's
    optimize level 2), so each call a process makes walks a few comparisons,
    not the whole list."""
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise MemoryError("seccomp_init")
    lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)   # older libseccomp: ignored
    return ctx


def _rule(lib, ctx, action: int, name: str, *cmps: _Cmp) -> None:
    nr = _number(lib, lib.seccomp_arch_native(), name)
    if nr < 0:
        return      # not a syscall of this architecture
    arr = (_Cmp * len(cmps))(*cmps) if cmps else None
    r = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if r < 0:
        raise OSError(-r, f"seccomp rule for {name}: {os.strerror(-r)}")


@functools.lru_cache(maxsize=16)
def default_filter(caps: int) -> bytes:
    """BPF (struct sock_filter[]) of the default profile for a capability mask.

    Compiled here rather than by libseccomp: the profile is a short denylist,
    and loading a filter costs in proportion to its length and to the path
    each syscall number takes through it (the kernel walks the program for
    every number when it loads it, to cache what is always allowed). This
    program is about a quarter of libseccomp's (99 instructions against 375
    on x86-64, Docker's capabilities), a call walks a handful of
    comparisons, and a container loads it in about 60% of the time.
    tests/test_seccomp_bpf.py checks that it decides every call as
    libseccomp's program for the same rules does.
    """
    lib = _lib()
    arch = lib.seccomp_arch_native()
    eperm = _errno_action(errno.EPERM)
    actions: dict[int, _Action] = {}

    def rule(name: str, action: _Action) -> None:
        nr = _number(lib, arch, name)
        if nr >= 0:         # else not a syscall of this architecture
            actions[nr] = action

    for name in DENIED:
        rule(name, eperm)
    for need, names in CAPS_ONLY:
        if not any(caps & (1 << cap_number(c)) for c in need):
            for name in names:
                rule(name, eperm)
    rule("clone3", _errno_action(errno.ENOSYS))
    rule("personality", _Personality(PERSONALITIES, eperm))
    rule("socket", _ArgRefused(0, 0xffffffff, SOCKET_FAMILIES, eperm))
    rule("mknod", _ArgRefused(1, _S_IFMT, MKNOD_TYPES, eperm))
    rule("mknodat", _ArgRefused(2, _S_IFMT, MKNOD_TYPES, eperm))
    if not caps & (1 << cap_number("SYS_ADMIN")):
        mask = 0
        for flag in NAMESPACE_FLAGS:
            mask |= flag
        rule("clone", _FlagsRefused(mask, eperm))
    return _compile(arch, actions)


def _number(lib, arch: int, name: str) -> int:
    """A call's number on the native architecture, or -1 where it has none."""
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0 and arch in (_AUDIT_ARCH_X86_64, _AUDIT_ARCH_AARCH64):
        return _NEWER_CALLS.get(name, -1)
    return nr


# classic BPF, as seccomp takes it (linux/filter.h, linux/seccomp.h)
_LD_ABS, _AND, _JEQ, _JGE, _JSET, _RET = 0x20, 0x54, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARG0_LO, _ARG0_HI = 0, 4, 16, 20        # offsets in struct seccomp_data
_KILL_THREAD = 0x00000000
_AUDIT_ARCH_X86_64 = 0xc000003e
_AUDIT_ARCH_AARCH64 = 0xc00000b7
_X32_SYSCALL_BIT = 0x40000000


class _Ret(int):
    """A jump's target: the return of this value, one of those at the
    program's end, which all of its jumps to that value share."""


#: an instruction: (code, jt, jf, k); a jump's jt and jf are offsets, or a _Ret
_Insn = tuple[int, int, int, int]


class _Personality:
    """personality(2) allowed for the listed values only (high bits clear)."""

    def __init__(self, allowed: tuple[int, ...], refuse: int):
        self.allowed, self.refuse = allowed, refuse

    def emit(self) -> list[_Insn]:
        allow, refuse = _Ret(SCMP_ACT_ALLOW), _Ret(self.refuse)
        code = [(_LD_ABS, 0, 0, _ARG0_HI), (_JEQ, 0, refuse, 0), (_LD_ABS, 0, 0, _ARG0_LO)]
        code += [(_JEQ, allow, 0, value) for value in self.allowed]
        return code[:-1] + [(_JEQ, allow, refuse, self.allowed[-1])]


class _FlagsRefused:
    """A call refused when its first argument has any of the flags in mask
    (clone with a namespace flag). The flags all lie in the low 32 bits."""

    def __init__(self, mask: int, refuse: int):
        self.mask, self.refuse = mask, refuse

    def emit(self) -> list[_Insn]:
        return [(_LD_ABS, 0, 0, _ARG0_LO),
                (_JSET, _Ret(self.refuse), _Ret(SCMP_ACT_ALLOW), self.mask)]


class _ArgRefused:
    """A call refused when the low 32 bits of one of its arguments, masked,
    equal one of the values: socket's family (an int, so the high half, which
    the kernel drops, is not looked at), mknod's file type (mode is 16 bits)."""

    def __init__(self, arg: int, mask: int, values: tuple[int, ...], refuse: int):
        self.arg, self.mask, self.values, self.refuse = arg, mask, values, refuse

    def emit(self) -> list[_Insn]:
        refuse = _Ret(self.refuse)
        code = [(_LD_ABS, 0, 0, _ARG0_LO + 8 * self.arg)]
        if self.mask != 0xffffffff:
            code.append((_AND, 0, 0, self.mask))
        code += [(_JEQ, refuse, 0, value) for value in self.values]
        return code[:-1] + [(_JEQ, refuse, _Ret(SCMP_ACT_ALLOW), self.values[-1])]


#: what a syscall number leads to: a return value, or code on its arguments
_Action = Union[int, _Personality, _FlagsRefused, _ArgRefused]


def _compile(arch: int, actions: dict[int, _Action]) -> bytes:
    """A filter that returns actions[nr] (a return value, or an object whose
    emit() gives the code that decides on the arguments) and allows every
    other call; calls of another architecture kill the thread, as the x32
    ABI's do on x86-64 (libseccomp's behaviour for an architecture not in a
    filter). The numbers are found by a binary search over runs of equal
    actions; a run that returns at once is a jump to one of the returns at
    the end, which all jumps to the same value share."""
    points: list[tuple[int, _Action]] = []  # (first number, action), in order
    end = 0
    for nr in sorted(actions):
        if nr > end:
            points.append((end, SCMP_ACT_ALLOW))
        points.append((nr, actions[nr]))
        end = nr + 1
    points.append((end, SCMP_ACT_ALLOW))
    runs: list[tuple[int, _Action]] = []
    for first, action in points:
        if runs and isinstance(action, int) and runs[-1][1] == action:
            continue        # the same return as the run before: one run
        runs.append((first, action))

    def search(lo: int, hi: int) -> list[_Insn]:
        if hi - lo == 1:
            action = runs[lo][1]
            return [(_RET, 0, 0, action)] if isinstance(action, int) else action.emit()
        mid = (lo + hi) // 2
        code: list[_Insn] = [(_JGE, 0, 0, runs[mid][0])]
        left, right = branch(lo, mid), branch(mid, hi)
        if isinstance(left, list):
            code += left
        if isinstance(right, list):
            code += right
        jt = right if isinstance(right, _Ret) else len(code) - 1 - len(right)
        jf = left if isinstance(left, _Ret) else 0
        code[0] = (_JGE, jt, jf, runs[mid][0])
        return code

    def branch(lo: int, hi: int) -> Union[list[_Insn], _Ret]:
        action = runs[lo][1]
        if hi - lo == 1 and isinstance(action, int):
            return _Ret(action)
        return search(lo, hi)

    kill = _Ret(_KILL_THREAD)
    code: list[_Insn] = [(_LD_ABS, 0, 0, _ARCH), (_JEQ, 0, kill, arch), (_LD_ABS, 0, 0, _NR)]
    if arch == _AUDIT_ARCH_X86_64:      # x32 numbers (all but -1): kill, as libseccomp does
        code += [(_JGE, 0, 1, _X32_SYSCALL_BIT), (_JEQ, 0, kill, 0xffffffff)]
    code += search(0, len(runs))
    # the shared returns, in the order first jumped to
    rets: dict[int, int] = {}
    for _, jt, jf, _ in code:
        for to in (jt, jf):
            if isinstance(to, _Ret) and int(to) not in rets:
                rets[int(to)] = len(code) + len(rets)
    out = []
    for i, (op, jt, jf, k) in enumerate(code):
        jt, jf = (rets[int(to)] - i - 1 if isinstance(to, _Ret) else to for to in (jt, jf))
        if jt > 255 or jf > 255:
            raise ValueError("seccomp filter too large for a classic BPF jump")
        out.append((op, jt, jf, k))
    out += [(_RET, 0, 0, value) for value in rets]
    if len(out) > 4096:
        raise ValueError("seccomp filter too long")
    return b"".join(struct.pack("=HBBI", *insn) for insn in out)


_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
            "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
            "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": SCMP_ACT_ALLOW}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


def _action(name: object, errno_ret: object, where: str) -> int:
    if name == "SCMP_ACT_ERRNO":
        err = errno.EPERM if errno_ret is None else errno_ret
        if not isinstance(err, int) or not 0 <= err < 4096:
            raise ValueError(f"seccomp profile: {where}: errnoRet {err!r} is not an errno")
        return _errno_action(err)
    if name not in _ACTIONS:
        raise ValueError(f"seccomp profile: {where}: unknown action {name!r} "
                         f"(use one of SCMP_ACT_ERRNO, {', '.join(_ACTIONS)})")
    return _ACTIONS[name]  # type: ignore[index]


def _applies(entry: dict, caps: int, where: str) -> bool:
    """Docker's includes/excludes: an entry may hold only with some capabilities."""
    for key, want in (("includes", True), ("excludes", False)):
        cond = entry.get(key) or {}
        if not isinstance(cond, dict):
            raise ValueError(f"seccomp profile: {where}: {key} must be an object")
        names = cond.get("caps") or []
        if names:
            have = any(caps & (1 << cap_number(n)) for n in names)
            if have != want:
                return False
        arches = cond.get("arches") or []
        if arches:
            here = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
            if (here in arches) != want:
                return False
    return True


def profile_filter(profile: object, caps: int) -> bytes:
    """BPF for an OCI/Docker JSON seccomp profile (a dict, or a path to one)."""
    import json
    if isinstance(profile, (str, os.PathLike)):
        path = os.fspath(profile)
        try:
            with open(path) as f:
                profile = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"seccomp profile {path!r} is not JSON: {e}") from None
    if not isinstance(profile, dict):
        raise TypeError("seccomp takes 'default', None, a profile dict or the path of a JSON profile")
    default_errno = profile.get("defaultErrnoRet")
    default = _action(profile.get("defaultAction"), default_errno, "defaultAction")
    entries = profile.get("syscalls") or []
    if not isinstance(entries, list):
        raise ValueError("seccomp profile: syscalls must be a list")
    lib = _lib()
    ctx = _new(lib, default)
    try:
        for i, entry in enumerate(entries):
            where = f"syscalls[{i}]"
            if not isinstance(entry, dict):
                raise ValueError(f"seccomp profile: {where} must be an object")
            if not _applies(entry, caps, where):
                continue
            names = entry.get("names") or ([entry["name"]] if "name" in entry else [])
            if not names or not all(isinstance(n, str) for n in names):
                raise ValueError(f"seccomp profile: {where} names no syscalls")
            action = _action(entry.get("action"), entry.get("errnoRet", default_errno), where)
            if action == default:
                continue        # libseccomp refuses rules that repeat the default
            cmps = []
            for j, a in enumerate(entry.get("args") or []):
                try:
                    op = _OPS[a["op"]]
                    cmps.append(_Cmp(int(a["index"]), op, int(a["value"]), int(a.get("valueTwo", 0))))
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"seccomp profile: {where}.args[{j}] is not "
                                     "{index, value, valueTwo, op}") from None
            for name in names:
                _rule(lib, ctx, action, name, *cmps)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _export(lib, ctx) -> bytes:
    r, w = os.pipe()
    try:
        rc = lib.seccomp_export_bpf(ctx, w)
        if rc < 0:
            raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
        os.close(w)
        w = -1
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return b"".join(chunks)

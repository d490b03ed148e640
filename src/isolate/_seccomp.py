"""The default seccomp filter, built with libseccomp and exported as BPF.

The filter is made in the caller (libseccomp allocates) and handed to the
child as BPF, which loads it as its last step before exec. Blocked calls fail
with EPERM and the process lives on; clone3 answers ENOSYS, so that libcs
fall back to clone, whose namespace flags the filter can see.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

from ._security import cap_number

#: always refused (Docker's default profile refuses these too)
DENIED = (
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "open_by_handle_at",
    "init_module", "finit_module", "delete_module", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "swapon", "swapoff", "reboot",
    "settimeofday", "clock_settime", "clock_adjtime", "acct", "lookup_dcookie", "quotactl",
    "nfsservctl", "uselib", "vm86", "vm86old", "iopl", "ioperm", "create_module",
    "get_kernel_syms", "query_module", "_sysctl", "sysfs", "ustat", "fanotify_init",
    "name_to_handle_at", "move_pages", "mbind", "set_mempolicy", "get_mempolicy",
)

#: refused unless CAP_SYS_ADMIN was granted
ADMIN_ONLY = ("mount", "umount", "umount2", "pivot_root", "unshare", "setns", "open_tree",
              "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr")

#: clone flags that make namespaces (refused unless CAP_SYS_ADMIN)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                   0x40000000, 0x00000080)

#: personality values a program may set (Docker's list); others fail
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xffffffff)

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 6, 7


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
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return      # not a syscall of this architecture
    arr = (_Cmp * len(cmps))(*cmps) if cmps else None
    r = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if r < 0:
        raise OSError(-r, f"seccomp rule for {name}: {os.strerror(-r)}")


@functools.lru_cache(maxsize=16)
def default_filter(caps: int) -> bytes:
    """BPF (struct sock_filter[]) of the default profile for a capability mask."""
    lib = _lib()
    ctx = _new(lib, SCMP_ACT_ALLOW)
    eperm = _errno_action(errno.EPERM)
    try:
        for name in DENIED:
            _rule(lib, ctx, eperm, name)
        _rule(lib, ctx, _errno_action(errno.ENOSYS), "clone3")
        _personality(lib, ctx, eperm)
        if not caps & (1 << cap_number("SYS_ADMIN")):
            for name in ADMIN_ONLY:
                _rule(lib, ctx, eperm, name)
            for flag in NAMESPACE_FLAGS:
                _rule(lib, ctx, eperm, "clone", _Cmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _personality(lib, ctx, action: int) -> None:
    """personality(2) refused for every value outside PERSONALITIES.

    A rule holds one comparison per argument and rules are ORed, so each gap
    between the safe values is refused as aligned power-of-two blocks, one
    masked comparison each, and everything above 32 bits by one more.
    """
    for lo, hi in zip(PERSONALITIES, PERSONALITIES[1:]):
        first, last = lo + 1, hi - 1
        while first <= last:
            size = 1
            while first % (size * 2) == 0 and first + size * 2 - 1 <= last:
                size *= 2
            mask = 0xffffffffffffffff & ~(size - 1)
            _rule(lib, ctx, action, "personality", _Cmp(0, SCMP_CMP_MASKED_EQ, mask, first))
            first += size
    _rule(lib, ctx, action, "personality", _Cmp(0, SCMP_CMP_GT, 0xffffffff, 0))


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

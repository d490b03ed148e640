"""What a contained process may do: capabilities, rlimits, masked paths.

The defaults are Docker's and runc's: the 14 capabilities below, no_new_privs,
and the /proc and /sys entries that leak host information or control masked
or made read-only.
"""
from __future__ import annotations

import resource
from collections.abc import Iterable, Mapping

#: capabilities(7), by number
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                "AUDIT_WRITE")

MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/proc/interrupts", "/sys/firmware", "/sys/devices/virtual/powercap")

READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def cap_number(name: str) -> int:
    if not isinstance(name, str):
        raise TypeError(f"a capability is a name like 'NET_ADMIN', not {name!r}")
    key = name.upper().removeprefix("CAP_")
    try:
        return CAPABILITIES.index(key)
    except ValueError:
        raise ValueError(f"unknown capability {name!r} (see capabilities(7))") from None


def cap_mask(names: Iterable[str]) -> int:
    mask = 0
    for n in names:
        mask |= 1 << cap_number(n)
    return mask


def caps_for(cap_add: Iterable[str], cap_drop: Iterable[str]) -> int:
    for arg in (cap_add, cap_drop):
        if isinstance(arg, str):
            raise TypeError("cap_add and cap_drop take a list of names, e.g. ['NET_ADMIN']")
    drop = list(cap_drop)
    if any(isinstance(n, str) and n.upper() in ("ALL", "CAP_ALL") for n in drop):
        base = 0
        drop = [n for n in drop if n.upper() not in ("ALL", "CAP_ALL")]
    else:
        base = cap_mask(DEFAULT_CAPS)
    return (base | cap_mask(cap_add)) & ~cap_mask(drop)


def rlimits_for(rlimits: Mapping[str, tuple[int, int]] | None) -> tuple[tuple[int, int, int], ...]:
    """(resource number, soft, hard) for {"nofile": (1024, 1024), ...}."""
    if rlimits is None:
        return ()
    if not isinstance(rlimits, Mapping):
        raise TypeError("rlimits is a mapping like {'nofile': (1024, 1024)}")
    out = []
    for name, value in rlimits.items():
        number = getattr(resource, "RLIMIT_" + str(name).upper().removeprefix("RLIMIT_"), None)
        if number is None:
            raise ValueError(f"unknown rlimit {name!r}: use names like 'nofile', 'nproc', 'core'")
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value, value)
        try:
            soft, hard = value
        except (TypeError, ValueError):
            raise TypeError(f"rlimit {name!r} takes (soft, hard), not {value!r}") from None
        limits = []
        for v in (soft, hard):
            if v is None or v == resource.RLIM_INFINITY:
                v = resource.RLIM_INFINITY
            elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"rlimit {name!r}: {v!r} is not a limit")
            limits.append(v)
        soft, hard = limits
        if soft > hard:
            raise ValueError(f"rlimit {name!r}: soft limit {soft} exceeds hard limit {hard}")
        out.append((number, soft, hard))
    return tuple(out)

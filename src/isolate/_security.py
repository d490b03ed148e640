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
        drop = [n for n in drop if not (isinstance(n, str) and n.upper() in ("ALL", "CAP_ALL"))]
    else:
        base = cap_mask(DEFAULT_CAPS)
    return (base | cap_mask(cap_add)) & ~cap_mask(drop)


#: RLIM_INFINITY as the kernel has it (Python's resource module says -1)
RLIM_INFINITY = (1 << 64) - 1

#: What every process gets unless rlimits names the resource: runc's and
#: containerd's default spec, RLIMIT_NOFILE 1024:1024 (lowered to the
#: caller's hard limit where that is below 1024, which no process may raise).
DEFAULT_RLIMITS = {"nofile": (1024, 1024)}


def _nr_open() -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open)."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def _hard_limit(number: int) -> int:
    hard = resource.getrlimit(number)[1]
    return RLIM_INFINITY if hard == resource.RLIM_INFINITY else hard


def rlimits_for(rlimits: Mapping[str, tuple[int, int]] | None,
                may_raise: bool = False) -> tuple[tuple[int, int, int], ...]:
    """(resource number, soft, hard) for {"nofile": (1024, 1024), ...}, with
    DEFAULT_RLIMITS for the resources not named.

    A limit is an int from 0, or unlimited: None, -1 or resource.RLIM_INFINITY
    (both -1, as `resource` has it) or 2**64 - 1 (the kernel's RLIM_INFINITY).
    A hard limit above the caller's is refused unless the container's
    processes may raise it (`may_raise`: they keep CAP_SYS_RESOURCE in the
    initial user namespace); nofile never above the kernel's fs.nr_open.
    """
    if rlimits is None:
        rlimits = {}
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
            if v is None:
                v = RLIM_INFINITY
            elif not isinstance(v, int) or isinstance(v, bool) or not -1 <= v <= RLIM_INFINITY:
                raise ValueError(f"rlimit {name!r}: {v!r} is not a limit (an int from 0, or "
                                 "None or -1 for unlimited)")
            elif v == -1:
                v = RLIM_INFINITY
            limits.append(v)
        soft, hard = limits
        if soft > hard:
            raise ValueError(f"rlimit {name!r}: soft limit {soft} exceeds hard limit {hard}")
        if number == resource.RLIMIT_NOFILE and hard > _nr_open():
            raise ValueError(f"rlimit {name!r}: {'unlimited' if hard == RLIM_INFINITY else hard}"
                             f" is above the kernel's fs.nr_open ({_nr_open()})")
        ours = _hard_limit(number)
        if hard > ours and not may_raise:
            raise ValueError(
                f"rlimit {name!r}: hard limit {'unlimited' if hard == RLIM_INFINITY else hard} "
                f"is above this process's ({ours}); raising it needs CAP_SYS_RESOURCE, in the "
                "caller and kept in the container (privileged=True or cap_add=['SYS_RESOURCE'], "
                "root inside, no user namespace)")
        out.append((number, soft, hard))
    named = {number for number, _, _ in out}
    for name, (soft, hard) in DEFAULT_RLIMITS.items():
        number = getattr(resource, "RLIMIT_" + name.upper())
        if number not in named:
            ours = _hard_limit(number)
            out.append((number, min(soft, ours), min(hard, ours)))
    return tuple(out)


def may_raise_rlimits(caps: int | None, userns: bool, uid: int) -> bool:
    """Whether a container's processes keep CAP_SYS_RESOURCE in the initial
    user namespace when they set their rlimits: the caller's own set
    (privileged, caps None) or `caps`, as root, outside a user namespace."""
    bit = 1 << cap_number("SYS_RESOURCE")
    if userns or uid != 0 or (caps is not None and not caps & bit):
        return False
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & bit)
    except (OSError, ValueError):
        pass
    return False

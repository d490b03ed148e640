"""OCI runtime bundles: a config.json as the Config that Container(...) builds.

isolate-runc (see runc.py) reads a bundle with `load`; everything of the
runtime specification that runc honours on Linux either becomes an option of
the one Config (namespaces, root, mounts, ids, capabilities, rlimits,
seccomp, limits, masked and read-only paths, sysctls, devices) or is kept for
the runtime's own steps (hooks, cgroupsPath, oomScoreAdj, the terminal).
What isolate cannot do is refused with an error that names the field; what
the specification lets a runtime ignore (annotations, unknown properties) is
ignored. Errors are `SpecError`, a ValueError naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from ._config import Config, User, make_config
from .mounts import Mount

#: OCI namespace types and isolate's names for them
NAMESPACES = {"pid": "pid", "network": "net", "mount": "mount", "ipc": "ipc", "uts": "uts",
              "user": "user", "cgroup": "cgroup", "time": "time"}
#: the namespaces a container may join by path instead of making its own
JOINABLE = {"net", "ipc", "uts", "cgroup", "pid"}
#: linux.personality's domains, as personality(2) takes them (PER_LINUX, PER_LINUX32)
_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")
#: the mounts isolate makes itself for every container, as runc's spec lists
#: them: (destination, types that stand for it)
BUILTIN_MOUNTS = {"/proc": ("proc",), "/dev": ("tmpfs",), "/dev/pts": ("devpts",),
                  "/dev/shm": ("tmpfs", "shm"), "/sys": ("sysfs",),
                  "/sys/fs/cgroup": ("cgroup", "cgroup2")}
#: sysctls that belong to a namespace of the container (runc's list), by prefix
_SYSCTL_IPC = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
               "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
_FLAGS = {"ro", "rw", "bind", "rbind", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
          "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
          "runbindable", "relatime", "norelatime", "strictatime", "nostrictatime", "noatime",
          "atime", "nodiratime", "diratime", "sync", "async", "dirsync", "mand", "nomand",
          "silent", "loud", "defaults", "remount", "tmpcopyup", "idmap", "ridmap"}


class SpecError(ValueError):
    """A config.json that cannot be run as it is: the message names the field."""


@dataclass
class Bundle:
    """What isolate-runc needs of a bundle besides the Config."""

    path: str
    config: Config
    spec: dict[str, Any]
    args: list[str]
    env: list[tuple[str, str]]
    cwd: str
    terminal: bool
    umask: int
    cgroups_path: str | None
    oom_score_adj: int | None
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (isolate name, path) of namespaces to join instead of making
    joins: list[tuple[str, str]] = field(default_factory=list)
    #: /sys/fs/cgroup asked for without a cgroup namespace: the container's
    #: own cgroups bound there once made (see cgroup_mounts), as runc does
    cgroup_binds: bool = False
    warnings: list[str] = field(default_factory=list)


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = None
         ) -> Any:
    value = obj.get(key, default) if isinstance(obj, dict) else default
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in
                                       (kind if isinstance(kind, tuple) else (kind,))):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise SpecError(f"{where}.{key}: {value!r} is not {names}")
    return value


def read_spec(bundle: str) -> dict[str, Any]:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file (a bundle holds config.json)") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: the config is a JSON object")
    return spec


def load(bundle: str, spec: dict[str, Any] | None = None) -> Bundle:
    """The bundle at `bundle` (a directory with config.json), validated;
    with spec, that config instead of the bundle's file (exec: the one the
    container was created from, which the container may since have written)."""
    bundle = os.path.abspath(bundle)
    if spec is None:
        spec = read_spec(bundle)
    warnings: list[str] = []
    if not isinstance(spec.get("process"), dict):
        raise SpecError("process: missing (isolate-runc runs a process)")
    p = _process(spec["process"], warnings)
    root = _get(spec, "root", dict, "config", {})
    root_path = _get(root, "path", str, "root")
    if not root_path:
        raise SpecError("root.path: missing")
    rootfs = os.path.join(bundle, root_path)
    if not os.path.isdir(rootfs):
        raise SpecError(f"root.path: {rootfs}: no such directory")
    readonly = _get(root, "readonly", bool, "root", False)

    linux = _get(spec, "linux", dict, "config", {})
    namespaces: set[str] = set()
    joins: list[tuple[str, str]] = []
    for i, ns in enumerate(_get(linux, "namespaces", list, "linux", [])):
        where = f"linux.namespaces[{i}]"
        kind = _get(ns, "type", str, where)
        if kind not in NAMESPACES:
            raise SpecError(f"{where}.type: unknown namespace {kind!r} (one of "
                            f"{', '.join(NAMESPACES)})")
        name = NAMESPACES[kind]
        if name in namespaces or any(j[0] == name for j in joins):
            raise SpecError(f"{where}: {kind} is listed twice")
        path = _get(ns, "path", str, where)
        if path:
            if not os.path.exists(path):
                raise SpecError(f"{where}.path: {path}: no such file")
            joins.append((name, path))
        else:
            namespaces.add(name)
    for name, path in joins:
        if name not in JOINABLE:
            raise SpecError(f"linux.namespaces: joining a {name} namespace by path ({path}) "
                            f"is not supported (only {', '.join(sorted(JOINABLE))})")
    if "mount" not in namespaces:
        raise SpecError("linux.namespaces: isolate-runc needs a mount namespace")

    uid_map = _id_map(linux, "uidMappings")
    gid_map = _id_map(linux, "gidMappings")
    if (uid_map is None) != (gid_map is None):
        raise SpecError("linux.uidMappings and gidMappings: give both or neither")
    if uid_map is not None and "user" not in namespaces:
        raise SpecError("linux.uidMappings: needs a user namespace")

    if uid_map == [(0, os.geteuid(), 1)] and gid_map == [(0, os.getegid(), 1)]:
        uid_map = gid_map = None    # the caller's own ids alone: the child maps them itself
    hostname = _get(spec, "hostname", str, "config")
    domainname = _get(spec, "domainname", str, "config")
    if domainname and "uts" not in namespaces:
        raise SpecError("domainname: needs a uts namespace of the container's own")

    mounts = _mounts(spec, bundle)
    cgroup_mount = any(isinstance(m, dict) and m.get("destination") == "/sys/fs/cgroup"
                       and m.get("type") in ("cgroup", "cgroup2")
                       for m in spec.get("mounts") or [])
    limits = _resources(_get(linux, "resources", dict, "linux", {}))
    unified = limits.pop("unified", None)
    sysctls = _sysctls(_get(linux, "sysctl", dict, "linux", {}), namespaces)
    if domainname:      # setdomainname(2), as the UTS namespace's sysctl
        if len(domainname.encode()) > 64 or "\n" in domainname:
            raise SpecError(f"domainname: {domainname!r} is longer than 64 bytes or has a newline")
        sysctls += (("kernel.domainname", domainname),)
    devices = _devices(_get(linux, "devices", list, "linux", []))
    seccomp = _get(linux, "seccomp", dict, "linux")
    if seccomp is not None:
        if seccomp.get("listenerPath"):
            raise SpecError("linux.seccomp.listenerPath: SCMP_ACT_NOTIFY is not supported yet")
        seccomp = {k: v for k, v in seccomp.items() if k not in ("flags", "listenerMetadata")}
    masked = _paths(linux, "maskedPaths")
    ro_paths = _paths(linux, "readonlyPaths")
    cgroups_path = _get(linux, "cgroupsPath", str, "linux")
    offsets = []
    for clock, value in _get(linux, "timeOffsets", dict, "linux", {}).items():
        if clock not in ("monotonic", "boottime"):
            raise SpecError(f"linux.timeOffsets.{clock}: the clocks are monotonic and boottime")
        where = f"linux.timeOffsets.{clock}"
        offsets.append((clock, _get(value, "secs", int, where, 0),
                        _get(value, "nanosecs", int, where, 0)))
    if offsets and "time" not in namespaces:
        raise SpecError("linux.timeOffsets: needs a time namespace")
    personality = None
    persona = _get(linux, "personality", dict, "linux")
    if persona is not None:
        domain = _get(persona, "domain", str, "linux.personality")
        if domain not in _DOMAINS:
            raise SpecError(f"linux.personality.domain: {domain!r} is not LINUX or LINUX32")
        personality = _DOMAINS[domain]
        if _get(persona, "flags", list, "linux.personality"):
            warnings.append("linux.personality.flags: not supported; ignored (as runc)")
    for key in ("intelRdt", "mountLabel"):
        if linux.get(key) not in (None, "", {}, []):
            warnings.append(f"linux.{key}: not supported; ignored")

    hooks = {}
    for name, entries in _get(spec, "hooks", dict, "config", {}).items():
        if name not in HOOKS:
            continue
        if not isinstance(entries, list):
            raise SpecError(f"hooks.{name}: a list")
        for i, h in enumerate(entries):
            where = f"hooks.{name}[{i}]"
            path = _get(h, "path", str, where)
            if not path or not path.startswith("/"):
                raise SpecError(f"{where}.path: an absolute path")
            _get(h, "args", list, where)
            _get(h, "env", list, where)
            timeout = _get(h, "timeout", int, where)
            if timeout is not None and timeout <= 0:
                raise SpecError(f"{where}.timeout: positive seconds")
        if name in ("createContainer", "startContainer") and entries:
            raise SpecError(f"hooks.{name}: hooks run in the container's namespaces are not "
                            "supported yet")
        hooks[name] = entries

    try:
        cfg = make_config(
            rootfs, _subid_maps=False, hostname=hostname or None, mounts=mounts,
            env=dict(p.env), cwd=p.cwd, user=f"{p.uid}:{p.gid}", readonly=readonly,
            namespaces=namespaces, cap_add=p.caps, cap_drop=["ALL"], rlimits=p.rlimits,
            seccomp=seccomp, uid_map=uid_map, gid_map=gid_map, devices=devices,
            userns="user" in namespaces, **limits)
    except SpecError:
        raise
    except (ValueError, TypeError, OSError) as e:
        raise SpecError(f"config.json: {e}") from None
    if unified:
        cfg = dataclasses.replace(cfg, limits=(*cfg.limits, ("unified", unified)))
    cfg = dataclasses.replace(
        cfg, user=User(p.uid, p.gid, p.groups), no_new_privs=p.no_new_privs,
        rootfs_inplace=True, masked_paths=masked, readonly_paths=ro_paths, sysctls=sysctls,
        cgroupfs=cgroup_mount, joins=tuple(joins), time_offsets=tuple(offsets),
        personality=personality)
    return Bundle(bundle, cfg, spec, p.args, p.env, p.cwd, p.terminal, p.umask, cgroups_path,
                  p.oom_score_adj, hooks, joins, cgroup_mount and "cgroup" not in namespaces,
                  warnings)


def cgroup_mounts(version: str, dirs: dict[str, str]) -> tuple[Mount, ...]:
    """The container's own cgroups at /sys/fs/cgroup, read-only, for a
    container without a cgroup namespace: v2 its directory; v1 a small
    tmpfs with each controller's directory bound by the controller's name."""
    if version == "v2":
        return (Mount.bind(dirs[""], "/sys/fs/cgroup", readonly=True, nosuid=True,
                           noexec=True),)
    return (Mount.tmpfs("/sys/fs/cgroup", size="64k", mode=0o755, noexec=True),
            *(Mount.bind(d, f"/sys/fs/cgroup/{c}", readonly=True, nosuid=True, noexec=True)
              for c, d in sorted(dirs.items())))


@dataclass
class Process:
    """config.json's process (or `exec --process`'s file)."""

    args: list[str]
    env: list[tuple[str, str]]
    cwd: str
    terminal: bool
    umask: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    caps: list[str]
    rlimits: dict[str, tuple[int, int]]
    no_new_privs: bool
    oom_score_adj: int | None
    #: exec: the container's Config with this process's ids and security
    config: Any = None


def _process(process: dict, warnings: list[str]) -> Process:
    args = _get(process, "args", list, "process", [])
    if not args or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise SpecError("process.args: a non-empty list of strings without NUL bytes")
    env = []
    for item in _get(process, "env", list, "process", []):
        if not isinstance(item, str) or "=" not in item or item.startswith("=") \
                or "\0" in item:
            raise SpecError(f"process.env: {item!r} is not KEY=VALUE")
        k, _, v = item.partition("=")
        env.append((k, v))
    cwd = _get(process, "cwd", str, "process", "/")
    if not cwd.startswith("/") or "\0" in cwd:
        raise SpecError(f"process.cwd: {cwd!r} is not an absolute path")
    terminal = _get(process, "terminal", bool, "process", False)
    user = _get(process, "user", dict, "process", {})
    uid = _get(user, "uid", int, "process.user", 0)
    gid = _get(user, "gid", int, "process.user", 0)
    groups = _get(user, "additionalGids", list, "process.user", [])
    umask = _get(user, "umask", int, "process.user", 0o022)
    for n in (uid, gid, *groups):
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**32 - 1:
            raise SpecError(f"process.user: {n!r} is not an id")
    if not 0 <= umask <= 0o777:
        raise SpecError(f"process.user.umask: {umask!r} is not a file mode mask")
    caps = _get(process, "capabilities", dict, "process", {})
    # isolate gives a process one set: the bounding set, which also holds
    # everything the other sets may hold
    names = _get(caps, "bounding", list, "process.capabilities",
                 _get(caps, "permitted", list, "process.capabilities", []))
    for other in ("effective", "permitted", "inheritable", "ambient"):
        extra = set(_get(caps, other, list, "process.capabilities", [])) - set(names)
        if extra:
            raise SpecError(f"process.capabilities.{other}: {sorted(extra)} are not in the "
                            "bounding set")
    from ._security import cap_number
    for n in names:
        try:
            cap_number(n)
        except (TypeError, ValueError) as e:
            raise SpecError(f"process.capabilities: {e}") from None
    rlimits = {}
    for i, r in enumerate(_get(process, "rlimits", list, "process", [])):
        where = f"process.rlimits[{i}]"
        kind = _get(r, "type", str, where)
        if not kind:
            raise SpecError(f"{where}.type: missing")
        rlimits[kind] = (_get(r, "soft", int, where, 0), _get(r, "hard", int, where, 0))
    nnp = _get(process, "noNewPrivileges", bool, "process", False)
    oom = _get(process, "oomScoreAdj", int, "process")
    if oom is not None and not -1000 <= oom <= 1000:
        raise SpecError(f"process.oomScoreAdj: {oom} is not from -1000 to 1000")
    for key in ("apparmorProfile", "selinuxLabel"):
        if _get(process, key, str, "process"):
            warnings.append(f"process.{key}: isolate has no {key[:-7].lower()} support here; "
                            "the process runs without it")
    return Process(args, env, cwd, terminal, umask, uid, gid, tuple(groups), list(names),
                   rlimits, nnp, oom)


def process(spec: dict, base: Config) -> Process:
    """`exec --process FILE`: the process, with base (the container's Config)
    made to run it: its ids, capabilities, rlimits and no_new_privs."""
    from ._config import check_ids
    from ._security import caps_for, may_raise_rlimits, rlimits_for
    if not isinstance(spec, dict):
        raise SpecError("process: a JSON object")
    p = _process(spec, [])
    user = User(p.uid, p.gid, p.groups)
    try:
        check_ids(user, base.userns, base.uid_map, base.gid_map)
        caps = caps_for(p.caps, ["ALL"])
        rlimits = rlimits_for(p.rlimits, bool(p.rlimits) and may_raise_rlimits(
            caps, base.userns, p.uid))
    except (ValueError, TypeError) as e:
        raise SpecError(f"process: {e}") from None
    p.config = dataclasses.replace(base, user=user, caps=caps, no_new_privs=p.no_new_privs,
                                   rlimits=rlimits)
    return p


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """What `isolate-runc spec` writes: runc's template (sh in ./rootfs)."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    ns = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "TERM=xterm"],
                    "cwd": "/",
                    "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "isolate",
        "mounts": mounts,
        "linux": {"namespaces": ns,
                  "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                                  "/proc/latency_stats", "/proc/timer_list",
                                  "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                                  "/proc/scsi"],
                  "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                    "/proc/sysrq-trigger"]},
    }
    if rootless:
        spec["linux"]["namespaces"] = [n for n in ns if n["type"] != "network"] + \
            [{"type": "user"}]
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        spec["mounts"] = [m for m in mounts if m["type"] != "cgroup"]
        spec["mounts"].append({"destination": "/sys/fs/cgroup", "type": "bind",
                               "source": "/sys/fs/cgroup",
                               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    return spec


def _id_map(linux: dict, key: str) -> list[tuple[int, int, int]] | None:
    entries = _get(linux, key, list, "linux")
    if entries is None:
        return None
    out = []
    for i, m in enumerate(entries):
        where = f"linux.{key}[{i}]"
        out.append((_get(m, "containerID", int, where, 0), _get(m, "hostID", int, where, 0),
                    _get(m, "size", int, where, 0)))
    return out


def _paths(linux: dict, key: str) -> tuple[str, ...] | None:
    paths = _get(linux, key, list, "linux")
    if paths is None:
        return None
    for p in paths:
        if not isinstance(p, str) or not p.startswith("/") or "\0" in p \
                or ".." in p.split("/"):
            raise SpecError(f"linux.{key}: {p!r} is not an absolute path without '..'")
    return tuple(os.path.normpath(p) for p in paths)


def _mounts(spec: dict, bundle: str) -> list[Mount]:
    out = []
    for i, m in enumerate(_get(spec, "mounts", list, "config", [])):
        where = f"mounts[{i}]"
        dest = _get(m, "destination", str, where)
        if not dest or not dest.startswith("/"):
            raise SpecError(f"{where}.destination: an absolute path")
        dest = os.path.normpath(dest)
        kind = _get(m, "type", str, where, "")
        options = _get(m, "options", list, where, [])
        flags = {o for o in options if isinstance(o, str) and "=" not in o}
        data = dict(o.split("=", 1) for o in options if isinstance(o, str) and "=" in o)
        source = _get(m, "source", str, where, "")
        is_bind = kind == "bind" or "bind" in flags or "rbind" in flags
        if dest in BUILTIN_MOUNTS and not is_bind and kind in BUILTIN_MOUNTS[dest]:
            continue        # made by isolate, as runc makes it
        unknown = flags - _FLAGS
        if unknown:
            raise SpecError(f"{where}: mount options {sorted(unknown)} are not supported")
        ro = "ro" in flags
        try:
            if is_bind:
                if not source:
                    raise SpecError(f"{where}.source: a bind needs one")
                if not source.startswith("/"):
                    source = os.path.join(bundle, source)
                out.append(Mount.bind(source, dest, readonly=ro, nosuid="nosuid" in flags,
                                      noexec="noexec" in flags))
            elif kind == "tmpfs":
                size = data.pop("size", None)
                mode = int(data.pop("mode", "1777"), 8)
                out.append(Mount.tmpfs(dest, size=size, mode=mode, readonly=ro,
                                       noexec="noexec" in flags))
            elif kind == "mqueue":
                out.append(Mount.mqueue(dest))
            elif kind in ("proc", "sysfs", "devpts", "cgroup", "cgroup2"):
                raise SpecError(f"{where}: a {kind} mount at {dest} is not supported (isolate "
                                f"mounts {kind} at its usual place only)")
            else:
                raise SpecError(f"{where}.type: {kind!r} mounts are not supported")
        except SpecError:
            raise
        except (ValueError, TypeError, OSError) as e:
            raise SpecError(f"{where}: {e}") from None
    return out


def _resources(res: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    memory = _get(res, "memory", dict, "linux.resources", {})
    limit = _get(memory, "limit", int, "linux.resources.memory")
    if limit is not None and limit > 0:
        out["memory"] = limit
    swap = _get(memory, "swap", int, "linux.resources.memory")
    if swap is not None and swap > 0 and limit is not None and limit > 0:
        out["memory_swap"] = max(swap, limit)
    pids = _get(_get(res, "pids", dict, "linux.resources", {}), "limit", int,
                "linux.resources.pids")
    if pids is not None and pids > 0:
        out["pids"] = pids
    cpu = _get(res, "cpu", dict, "linux.resources", {})
    quota = _get(cpu, "quota", int, "linux.resources.cpu")
    period = _get(cpu, "period", int, "linux.resources.cpu") or 100_000
    if quota is not None and quota > 0:
        out["cpus"] = min(max(quota / period, 0.01), float(os.cpu_count() or 1))
    shares = _get(cpu, "shares", int, "linux.resources.cpu")
    if shares:      # runc's conversion of v1 shares to a v2 weight
        out["cpu_weight"] = 1 + ((min(max(shares, 2), 262144) - 2) * 9999) // 262142
    if _get(cpu, "cpus", str, "linux.resources.cpu"):
        out["cpuset"] = cpu["cpus"]
    if _get(cpu, "mems", str, "linux.resources.cpu"):
        out["cpuset_mems"] = cpu["mems"]
    weight = _get(_get(res, "blockIO", dict, "linux.resources", {}), "weight", int,
                  "linux.resources.blockIO")
    if weight:      # v1's 10..1000 as v2's 1..10000, as runc converts it
        out["io_weight"] = 1 + (min(max(weight, 10), 1000) - 10) * 9999 // 990
    unified = _get(res, "unified", dict, "linux.resources", {})
    if unified:
        out["unified"] = _unified(unified)
    for key in ("hugepageLimits", "rdma", "network"):
        if res.get(key):
            raise SpecError(f"linux.resources.{key}: not supported yet")
    return out


def _unified(unified: dict) -> tuple[tuple[str, str], ...]:
    """linux.resources.unified: cgroup v2 files of the container's cgroup
    and their values, written after the other limits (as runc does); refused
    on cgroup v1, as runc refuses it."""
    from . import _cgroups
    if _cgroups.layout() != "v2":
        raise SpecError("linux.resources.unified: cgroup v2 files, and this host's cgroups "
                        "are v1 (or a hybrid)")
    for key, value in unified.items():
        if not key or "/" in key or key in (".", "..") or "\0" in key:
            raise SpecError(f"linux.resources.unified: {key!r} is not a file of a cgroup")
        if not isinstance(value, str):
            raise SpecError(f"linux.resources.unified.{key}: the value is a string")
    return tuple(unified.items())


def _sysctls(sysctl: dict, namespaces: set[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in sysctl.items():
        if not isinstance(value, str):
            raise SpecError(f"linux.sysctl.{key}: the value is a string")
        if key.startswith("net.") and "net" in namespaces:
            pass
        elif (key in _SYSCTL_IPC or key.startswith("fs.mqueue.")) and "ipc" in namespaces:
            pass
        elif key in ("kernel.hostname", "kernel.domainname") and "uts" in namespaces:
            pass
        else:
            raise SpecError(f"linux.sysctl.{key}: not a sysctl of the container's own "
                            "namespaces (net.*, IPC and UTS keys, with those namespaces)")
        if "/" in key or ".." in key.split(".") or not all(key.split(".")):
            raise SpecError(f"linux.sysctl: {key!r} is not a sysctl name")
        out.append((key, value))
    return tuple(out)


def _devices(devices: list) -> list[str]:
    """The host's nodes at each path (runc makes them; isolate binds the host's)."""
    out = []
    for i, d in enumerate(devices):
        where = f"linux.devices[{i}]"
        path = _get(d, "path", str, where)
        kind = _get(d, "type", str, where)
        major, minor = _get(d, "major", int, where), _get(d, "minor", int, where)
        if not path or kind not in ("c", "b", "u", "p"):
            raise SpecError(f"{where}: a path and a type of c, b, u or p")
        try:
            st = os.stat(path)
        except OSError:
            raise SpecError(f"{where}: {path} is no device of this host (isolate gives the "
                            "host's own nodes)") from None
        want = stat.S_ISBLK if kind == "b" else stat.S_ISCHR
        if not want(st.st_mode) or (major is not None and (os.major(st.st_rdev), os.minor(
                st.st_rdev)) != (major, minor)):
            raise SpecError(f"{where}: the host's {path} is not {kind} {major}:{minor}")
        out.append(path)
    return out

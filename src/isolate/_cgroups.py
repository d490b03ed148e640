"""Resource limits with cgroups, v1 and v2, detected at run time.

A container with limits gets its own cgroup, named isolate-OWNERPID-ID:
- cgroup v1 (and the hybrid layout, v1 controllers beside a v2 mount): one
  per controller, under the caller's own cgroup in each hierarchy;
- cgroup v2: one, under the nearest cgroup above the caller that holds no
  processes (the caller's own holds the caller: the no-internal-processes
  rule keeps controllers from its children). That is the parent of the
  caller's cgroup, the root, or the subtree systemd delegated (Delegate=yes);
  a controller not enabled there is enabled, or named in the error when the
  subtree does not offer it.

Processes join before anything of the user's runs; the cgroup is removed when
the container ends.

An owner that is SIGKILLed cannot remove them: its containers end (their init
sees the control socket hang up) but their cgroups would stay. So with its
first cgroup each owner process starts a reaper: a small `python -I -S -c`
(not a fork of the owner: nothing of its memory, fds or environment), started
through `sh -c '"$@" &'` in a session of its own (stdio /dev/null, cwd /), so
that it is nobody's child, has no terminal, and is not killed with the owner's
process group. It holds only a pidfd of the owner (opened by the owner for
the spawn, not kept there) and sleeps in poll() until the owner has ended,
however it ended. Then it removes the owner's isolate-OWNERPID-* cgroups in
the bases it was given: kill what is left (cgroup.kill on v2; freeze, kill,
thaw otherwise), rmdir once empty; and exits. After a normal end the owner has
removed them itself, and the reaper finds none and exits at once; what it
cannot remove in 30 s it leaves (a process stuck in the kernel). Its cost is
once per owner process, at the first start with limits (1 to 3 ms for the
spawn, sh included; the reaper's Python starts in the background and then
holds about 9 MB); later starts pay nothing, and an owner that makes no
cgroups starts none. The names it looks for are fixed when the owner ends,
so a later process that gets the same pid is left alone.
Without a reaper (it could not start, or was killed), a later start in any
process still sweeps what dead owners left under the bases it uses.

Rejected: v1 notify_on_release with a release_agent. The agent is one per
hierarchy, set in its root cgroup by root of the initial namespaces only, so
setting it would replace what the host runs there (or do nothing where the
host keeps it); it runs as root in the initial namespaces, which makes it a
known escape route; it removes empty cgroups but does not kill what is left
in them (containers without a PID namespace); and cgroup v2 has no agent at all.
"""
from __future__ import annotations

import _thread
import errno
import os
import sys
import time

from .errors import ContainerError

TYPE_CHECKING = False       # typing and subprocess cost milliseconds: isolate-runc's
if TYPE_CHECKING:           # delete imports this module, on every container's path
    from typing import Any

ROOT = "/sys/fs/cgroup"
PERIOD_US = 100_000
PREFIX = "isolate-"
#: option -> v1 controller (v2 names its controllers the same but for blkio: io)
CONTROLLERS = {"memory": "memory", "memory_swap": "memory", "pids": "pids", "cpus": "cpu",
               "cpu_weight": "cpu", "cpuset": "cpuset", "cpuset_mems": "cpuset",
               "io_weight": "blkio", "io_max": "blkio"}
V2_NAMES = {"blkio": "io"}
#: v1: made with any limit: what stats read (memory, PIDs and CPU, as v2 gives
#: them for every cgroup) and the freezer (pause, kill-all)
ALWAYS = ("cpuacct", "freezer", "memory", "pids")
_IO_V1 = {"rbps": "read_bps", "wbps": "write_bps", "riops": "read_iops", "wiops": "write_iops"}


class CgroupError(ContainerError):
    """A cgroup could not be made, limited, joined or removed."""

    def __init__(self, err: int, message: str, path: str | None = None):
        super().__init__(err, message, path, step="cgroup")


def layout() -> str | None:
    """"v2" (pure unified), "v1" (v1 controllers, hybrid included) or None."""
    if os.path.exists(f"{ROOT}/cgroup.controllers"):
        return "v2"
    if os.path.isdir(f"{ROOT}/memory"):
        return "v1"
    return None


def _own(controller: str) -> str:
    """This process's cgroup in the hierarchy of controller ("" for v2)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(",") if controller else hid == "0" and not names:
                return path
    return "/"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CgroupError(e.errno or errno.EIO, f"cgroup: writing {value!r} to {path}: "
                          f"{e.strerror}", path) from None


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except OSError as e:
        raise CgroupError(e.errno or errno.EIO, f"cgroup: mkdir {path}: {e.strerror}"
                          + (": the caller's cgroup is not delegated to it"
                             if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""),
                          path) from None


def _make_level(path: str, leaf: bool) -> bool:
    """One directory of a cgroup path of the caller's choosing: made (True),
    or already there (False), which the leaf, a container's own, must not be."""
    if not os.path.isdir(path):
        try:
            _mkdir(path)
            return True
        except CgroupError as e:
            if e.errno != errno.EEXIST:     # else another create made it meanwhile
                raise
    if leaf:
        raise CgroupError(errno.EEXIST, f"cgroup: {path} exists: another container has it",
                          path)
    return False


def _rmdir(path: str, deadline: float) -> None:
    """rmdir once the last process is gone (EBUSY until then)."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(e.errno or errno.EIO, f"cgroup: rmdir {path}: {e.strerror}",
                                  path) from None
            time.sleep(0.002)


def _kill_procs(path: str) -> None:
    for pid in (_read(f"{path}/cgroup.procs") or "").split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


#: base directory -> when this process last swept it
_swept: dict[str, float] = {}
SWEEP_EVERY = 1.0


def _sweep_dir(base: str, force: bool = False) -> None:
    """Remove cgroups under base whose owner process is gone (it crashed or
    was killed). Unless forced, a base is swept at most every SWEEP_EVERY
    seconds: with a thousand containers up, a sweep at each start would list
    them all each time."""
    now = time.monotonic()
    if not force and now - _swept.get(base, -SWEEP_EVERY) < SWEEP_EVERY:
        return
    _swept[base] = now
    try:
        names = os.listdir(base)
    except OSError:
        return
    me = str(os.getpid())
    alive = {me}        # each other owner is looked up once
    for name in names:
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX):].split("-", 1)[0]
        if owner in alive or not owner.isdigit():
            continue
        if os.path.exists(f"/proc/{owner}"):
            alive.add(owner)
            continue
        path = f"{base}/{name}"
        try:
            _kill_procs(path)
            if os.path.exists(f"{path}/cgroup.freeze"):
                _write(f"{path}/cgroup.freeze", "0")
            elif _read(f"{path}/freezer.state") == "FROZEN":
                _write(f"{path}/freezer.state", "THAWED")
            _rmdir(path, time.monotonic() + 0.5)
        except (OSError, CgroupError):
            pass


#: The reaper's program: argv OWNERPID PIDFD BASE...; see the module docstring.
REAPER = r"""
import os, select, sys, time
try:
    with open("/proc/self/comm", "w") as f:
        f.write("isolate-reaper")
except OSError:
    pass
owner, fd, bases = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
p = select.poll()
p.register(fd, select.POLLIN)
p.poll()
prefix = "isolate-" + owner + "-"

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""

def write(path, value):
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False

def tree(d):
    return [top for top, _, _ in os.walk(d, topdown=False)]

def kill(d):
    if write(d + "/cgroup.kill", "1"):
        return
    v1 = os.path.exists(d + "/freezer.state")
    frozen = write(d + "/freezer.state", "FROZEN") if v1 else write(d + "/cgroup.freeze", "1")
    end = time.monotonic() + 1
    while frozen and time.monotonic() < end and not (
            read(d + "/freezer.state").strip() == "FROZEN" if v1
            else "frozen 1" in read(d + "/cgroup.events")):
        time.sleep(0.002)
    for top in tree(d):
        for pid in read(top + "/cgroup.procs").split():
            try:
                os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
    if frozen:
        write(d + "/freezer.state", "THAWED") if v1 else write(d + "/cgroup.freeze", "0")

dirs = []
for base in bases:
    try:
        dirs += [base + "/" + n for n in os.listdir(base) if n.startswith(prefix)]
    except OSError:
        pass
end = time.monotonic() + 30
while dirs and time.monotonic() < end:
    for d in dirs:
        kill(d)
    again = time.monotonic() + 1
    while dirs and time.monotonic() < again:
        for d in dirs:
            for top in tree(d):
                try:
                    os.rmdir(top)
                except OSError:
                    pass
        dirs = [d for d in dirs if os.path.isdir(d)]
        if dirs:
            time.sleep(0.005)
"""

_reaper_lock = _thread.allocate_lock()
_reaper_pid = 0                 # the process the bases below are watched for
_reaper_bases: set[str] = set()


def _watch(needed: list[str]) -> None:
    """Have a reaper watch this process for its cgroups under needed (and
    under every base the layout has, so that one reaper normally does for
    the whole life of the process). Called before the first mkdir."""
    global _reaper_lock, _reaper_pid
    pid = os.getpid()
    if _reaper_pid != pid:              # a fork: its parent's reaper does not watch it
        _reaper_lock = _thread.allocate_lock()
        _reaper_pid = pid
        _reaper_bases.clear()
    if _reaper_bases.issuperset(needed):
        return
    with _reaper_lock:
        new = sorted({*needed, *bases()} - _reaper_bases)
        if not new:
            return
        _reaper_bases.update(new)       # tried once: a failure warns once
        try:
            _spawn_reaper(pid, new)
        except OSError as e:
            import warnings
            warnings.warn(f"isolate: no reaper for the cgroups of this process ({e}): if it "
                          "is killed, they stay until a later start sweeps them",
                          RuntimeWarning, stacklevel=4)


def _spawn_reaper(owner: int, where: list[str]) -> None:
    import subprocess
    pidfd = os.pidfd_open(owner)
    try:
        if not sys.executable:
            raise OSError(errno.ENOENT, "no Python executable (sys.executable is empty)")
        env = {k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if k in os.environ}
        # sh starts it in the background and exits: the reaper is then nobody's child
        sh = subprocess.Popen(["/bin/sh", "-c", '"$@" &', "isolate-reaper", sys.executable,
                               "-I", "-S", "-c", REAPER, str(owner), str(pidfd), *where],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, pass_fds=(pidfd,), cwd="/", env=env,
                              start_new_session=True)
        if sh.wait() != 0:
            raise OSError(errno.ECHILD, f"/bin/sh exited with {sh.returncode}")
    finally:
        os.close(pidfd)


class Cgroups:
    """The cgroups of one container: make() picks the layout's kind."""

    version = ""

    def __init__(self, limits: dict[str, Any], container_id: str):
        self.limits = dict(limits)
        self.name = f"{PREFIX}{os.getpid()}-{container_id}"
        #: v1: controller -> directory; v2: {"": directory}
        self.dirs: dict[str, str] = {}

    @staticmethod
    def make(limits: dict[str, Any], container_id: str) -> Cgroups:
        kind = layout()
        if kind == "v2":
            return V2(limits, container_id).create()
        if kind == "v1":
            return V1(limits, container_id).create()
        raise CgroupError(errno.ENOTSUP, "resource limits need cgroups, and none are mounted "
                          f"at {ROOT}")

    def create(self) -> Cgroups:
        raise NotImplementedError

    @staticmethod
    def at(limits: dict[str, Any], path: str) -> Cgroups:
        """Cgroups at a path of the caller's choosing (an OCI config's
        cgroupsPath: absolute from the hierarchy's root, else below the
        caller's own cgroup), made even without limits, with the
        controllers that stats, pause and kill read. They are nobody's to
        reap or sweep: whoever made them removes them (isolate-runc delete).
        Directories above the leaf that are missing are made, and left."""
        kind = layout()
        if kind not in ("v1", "v2"):
            raise CgroupError(errno.ENOTSUP, f"no cgroups are mounted at {ROOT}")
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise CgroupError(errno.EINVAL, f"cgroup path {path!r}: give a path like "
                              "/machine/ID, without '.' or '..'")
        cg: Cgroups = V2(limits, "") if kind == "v2" else V1(limits, "")
        cg.name = "/".join(parts)
        try:
            cg._make_at(parts, path.startswith("/"))
        except BaseException:
            cg.remove()
            raise
        return cg._apply()

    @staticmethod
    def attach(version: str, dirs: dict[str, str], limits: dict[str, Any]) -> Cgroups:
        """The cgroups made by at() in another process, from what it recorded."""
        cg: Cgroups = V2(limits, "") if version == "v2" else V1(limits, "")
        cg.dirs = dict(dirs)
        return cg

    def _make_at(self, parts: list[str], absolute: bool) -> None:
        raise NotImplementedError

    def _set(self, option: str, value: Any) -> None:
        raise NotImplementedError

    def _apply(self) -> Cgroups:
        """Write the limits into the cgroups just made; on failure they go."""
        try:
            for option, value in self.limits.items():
                self._set(option, value)
        except BaseException:
            self.remove()
            raise
        return self

    def update(self, limits: dict[str, Any]) -> None:
        """Change limits of the running container; a refused value leaves the
        old ones in place. Only controllers the container has can change."""
        missing = [o for o in limits if not self._has(o)]
        if missing:
            raise ValueError(f"this container was made without {', '.join(missing)} limits; "
                             "give one when creating it to change it later")
        old = dict(self.limits)
        try:
            for option, value in limits.items():
                self._set(option, value)
        except CgroupError:
            for option, value in old.items():
                try:
                    self._set(option, value)
                except CgroupError:
                    pass
            raise

    def _has(self, option: str) -> bool:
        return CONTROLLERS[option] in self.dirs

    def open(self) -> int:
        """An fd for clone3's CLONE_INTO_CGROUP, or -1 (v1 has none)."""
        return -1

    def procs(self) -> list[str]:
        """The files a process writes "0" to, to join."""
        return [f"{d}/cgroup.procs" for d in self.dirs.values()]

    def oom_kills(self) -> int:
        raise NotImplementedError

    def stats(self) -> dict[str, int | None]:
        raise NotImplementedError

    def freeze(self, frozen: bool, wait: float = 5.0) -> None:
        raise NotImplementedError

    def kill_all(self) -> None:
        raise NotImplementedError

    def remove(self, wait: float = 2.0) -> None:
        deadline = time.monotonic() + wait
        for key, d in list(self.dirs.items()):
            _rmdir(d, deadline)
            del self.dirs[key]

    def _wait_state(self, read: Any, want: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while read() != want:
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"cgroup: the container did not become {want}")
            time.sleep(0.001)


def _num(v: str | None) -> int | None:
    return None if v is None or v == "max" else int(v)


def _keyed(text: str | None, key: str) -> int | None:
    """The value of key in a flat keyed file like memory.events or cpu.stat."""
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return None


def _v1_limit(n: int | None) -> int | None:
    """v1's "no limit" is the largest page count in bytes, not "max"."""
    return None if n is None or n >= 1 << 62 else n


class V1(Cgroups):
    """One cgroup per controller, each under the caller's own."""

    version = "v1"

    @staticmethod
    def base(controller: str) -> str:
        return os.path.normpath(f"{ROOT}/{controller}/{_own(controller)}")

    def create(self) -> Cgroups:
        wanted = dict.fromkeys(CONTROLLERS[o] for o in self.limits)
        needed = [self.base(c) for c in (*wanted, *ALWAYS)]
        for base in needed:
            _sweep_dir(base)
        _watch(needed)
        try:
            for controller in dict.fromkeys((*wanted, *ALWAYS)):
                if controller in wanted or os.path.isdir(f"{ROOT}/{controller}"):
                    self._make(controller)
        except BaseException:
            self.remove()
            raise
        return self._apply()

    def _make_at(self, parts: list[str], absolute: bool) -> None:
        wanted = dict.fromkeys(CONTROLLERS[o] for o in self.limits)
        for controller in dict.fromkeys((*wanted, *ALWAYS)):
            if controller not in wanted and not os.path.isdir(f"{ROOT}/{controller}"):
                continue
            if not os.path.isdir(f"{ROOT}/{controller}"):
                raise CgroupError(errno.ENOENT, f"cgroup: the {controller} controller is not "
                                  "mounted", f"{ROOT}/{controller}")
            d = os.path.normpath(f"{ROOT}/{controller}/{'' if absolute else _own(controller)}")
            for i, part in enumerate(parts):
                parent, d = d, f"{d}/{part}"
                if not _make_level(d, i == len(parts) - 1):
                    continue
                if i == len(parts) - 1:
                    self.dirs[controller] = d
                if controller == "cpuset":
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        _write(f"{d}/{f}", _read(f"{parent}/{f}") or "")

    def _make(self, controller: str) -> None:
        base = self.base(controller)
        if not os.path.isdir(f"{ROOT}/{controller}"):
            raise CgroupError(errno.ENOENT, f"cgroup: the {controller} controller is not "
                              "mounted", f"{ROOT}/{controller}")
        path = f"{base}/{self.name}"
        _mkdir(path)
        self.dirs[controller] = path
        if controller == "cpuset":
            # an empty cpuset takes no processes: start from the parent's
            for f in ("cpuset.cpus", "cpuset.mems"):
                _write(f"{path}/{f}", _read(f"{base}/{f}") or "")

    def _set(self, option: str, value: Any) -> None:
        path = self.dirs[CONTROLLERS[option]]
        if option == "memory":
            _write(f"{path}/memory.limit_in_bytes", str(value))
        elif option == "pids":
            _write(f"{path}/pids.max", str(value))
        elif option == "memory_swap":
            # memory and swap together; the memory limit is set first (memsw >= memory)
            if not os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                raise CgroupError(errno.ENOTSUP, "cgroup: memory_swap needs swap accounting "
                                  "(kernel parameter swapaccount=1)")
            _write(f"{path}/memory.memsw.limit_in_bytes", str(value))
        elif option == "cpus":
            _write(f"{path}/cpu.cfs_period_us", str(PERIOD_US))
            _write(f"{path}/cpu.cfs_quota_us", str(max(1000, int(value * PERIOD_US))))
        elif option == "cpu_weight":
            # cgroup v2's weight (1..10000, default 100) as v1 shares (default 1024)
            _write(f"{path}/cpu.shares", str(max(2, int(value * 1024 / 100))))
        elif option == "cpuset":
            _write(f"{path}/cpuset.cpus", value)
        elif option == "cpuset_mems":
            _write(f"{path}/cpuset.mems", value)
        elif option == "io_weight":
            # v2's 1..10000 as v1's 10..1000 (runc's conversion, reversed)
            for name in ("blkio.bfq.weight", "blkio.weight"):
                if os.path.exists(f"{path}/{name}"):
                    _write(f"{path}/{name}", str(10 + (value - 1) * 990 // 9999))
                    break
            else:
                raise CgroupError(errno.ENOTSUP, "cgroup: io_weight needs an I/O scheduler "
                                  "with weights (BFQ); this kernel's blkio has none", path)
        elif option == "io_max":
            for dev, rates in value:
                for key, n in rates:
                    _write(f"{path}/blkio.throttle.{_IO_V1[key]}_device", f"{dev} {n}")
        self.limits[option] = value

    def stats(self) -> dict[str, int | None]:
        def num(controller: str, name: str) -> int | None:
            d = self.dirs.get(controller)
            return None if d is None else _num(_read(f"{d}/{name}"))
        return {
            "memory_current": num("memory", "memory.usage_in_bytes"),
            "memory_peak": num("memory", "memory.max_usage_in_bytes"),
            "memory_limit": _v1_limit(num("memory", "memory.limit_in_bytes")),
            "oom_kills": self.oom_kills() if "memory" in self.dirs else None,
            "pids_current": num("pids", "pids.current"),
            "pids_limit": num("pids", "pids.max"),
            "cpu_usage_ns": num("cpuacct", "cpuacct.usage"),
        }

    def oom_kills(self) -> int:
        d = self.dirs.get("memory")
        return 0 if d is None else _keyed(_read(f"{d}/memory.oom_control"), "oom_kill") or 0

    def freeze(self, frozen: bool, wait: float = 5.0) -> None:
        d = self.dirs.get("freezer")
        if d is None:
            raise CgroupError(errno.ENOTSUP, "cgroup: the freezer controller is not mounted")
        state = "FROZEN" if frozen else "THAWED"
        _write(f"{d}/freezer.state", state)
        self._wait_state(lambda: _read(f"{d}/freezer.state"), state, wait)

    def kill_all(self) -> None:
        """Kill every process in the container, forks in flight included:
        freeze, kill, thaw (v1 has no cgroup.kill)."""
        d = self.dirs.get("freezer") or next(iter(self.dirs.values()), None)
        if d is None:
            return
        frozen = "freezer" in self.dirs
        if frozen:
            self.freeze(True)
        try:
            _kill_procs(d)
        finally:
            if frozen:
                self.freeze(False)


class V2(Cgroups):
    """One cgroup in the unified hierarchy."""

    version = "v2"

    @staticmethod
    def base() -> str:
        """The nearest cgroup from the caller's up that holds no processes
        (or the root, which may): where controllers can reach children."""
        path = os.path.normpath(f"{ROOT}/{_own('')}")
        while path != ROOT and _read(f"{path}/cgroup.procs") != "":
            path = os.path.dirname(path)
        return path

    def _wanted(self) -> list[str]:
        """The controllers its limits need (a unified file's: its prefix,
        but cgroup.*, the core's)."""
        out = []
        for o, value in self.limits.items():
            if o == "unified":
                out += [k.split(".", 1)[0] for k, _ in value if k.split(".", 1)[0] != "cgroup"]
            else:
                out.append(V2_NAMES.get(CONTROLLERS[o], CONTROLLERS[o]))
        return list(dict.fromkeys(out))

    def create(self) -> Cgroups:
        base = self.base()
        _sweep_dir(base)
        _watch([base])
        self._enable(base, self._wanted())
        path = f"{base}/{self.name}"
        _mkdir(path)
        self.dirs[""] = path
        return self._apply()

    def _make_at(self, parts: list[str], absolute: bool) -> None:
        d = os.path.normpath(f"{ROOT}/{'' if absolute else _own('')}")
        for i, part in enumerate(parts):
            self._enable(d, self._wanted())
            d = f"{d}/{part}"
            _make_level(d, i == len(parts) - 1)
        self.dirs[""] = d

    #: what stats read, enabled too where offered: stats report memory, CPU
    #: and PIDs whatever the limit
    STATS = ("cpu", "memory", "pids")

    @classmethod
    def _enable(cls, base: str, wanted: list[str]) -> None:
        """The controllers wanted (else an error), and STATS where offered,
        enabled for base's children."""
        have = (_read(f"{base}/cgroup.subtree_control") or "").split()
        missing = [c for c in dict.fromkeys([*wanted, *cls.STATS]) if c not in have]
        if not missing:
            return
        offered = (_read(f"{base}/cgroup.controllers") or "").split()
        missing = [c for c in missing if c in offered or c in wanted]
        if not missing:
            return
        absent = [c for c in missing if c not in offered]
        if absent:
            raise CgroupError(errno.ENOTSUP, f"cgroup: the {', '.join(absent)} controller"
                              f"{'s are' if len(absent) > 1 else ' is'} not delegated to "
                              f"{base} (its cgroup.controllers: {' '.join(offered) or 'none'})",
                              base)
        try:
            with open(f"{base}/cgroup.subtree_control", "w") as f:
                f.write(" ".join("+" + c for c in missing))
        except OSError as e:
            hint = (": it holds processes of its own, and cgroup v2 gives controllers only "
                    "to the children of a cgroup without any (move them to a leaf cgroup)"
                    if e.errno == errno.EBUSY else "")
            raise CgroupError(e.errno or errno.EIO, f"cgroup: enabling {' '.join(missing)} in "
                              f"{base}: {e.strerror}{hint}", base) from None

    def _has(self, option: str) -> bool:
        # as on v1: what the container was made with (its controllers may be on anyway)
        if option == "unified":
            return True
        return CONTROLLERS[option] in {CONTROLLERS.get(o) for o in self.limits} and \
            (option != "memory_swap" or "memory" in self.limits)

    def _set(self, option: str, value: Any) -> None:
        path = self.dirs[""]
        if option == "memory":
            _write(f"{path}/memory.max", str(value))
            if "memory_swap" in self.limits:      # swap.max is what lies above memory
                self._swap(self.limits["memory_swap"] - value)
        elif option == "memory_swap":
            self._swap(value - self.limits["memory"])
        elif option == "pids":
            _write(f"{path}/pids.max", str(value))
        elif option == "cpus":
            _write(f"{path}/cpu.max", f"{max(1000, int(value * PERIOD_US))} {PERIOD_US}")
        elif option == "cpu_weight":
            _write(f"{path}/cpu.weight", str(value))
        elif option == "cpuset":
            _write(f"{path}/cpuset.cpus", value)
        elif option == "cpuset_mems":
            _write(f"{path}/cpuset.mems", value)
        elif option == "io_weight":
            name = "io.weight" if os.path.exists(f"{path}/io.weight") else "io.bfq.weight"
            _write(f"{path}/{name}", f"default {value}")
        elif option == "io_max":
            for dev, rates in value:
                _write(f"{path}/io.max", dev + "".join(f" {k}={n}" for k, n in rates))
        elif option == "unified":
            for key, text in value:
                if not os.path.exists(f"{path}/{key}"):
                    raise CgroupError(errno.ENOENT, f"cgroup: unified {key!r}: no such file in "
                                      f"{path} (a controller not enabled, or no such file)", path)
                _write(f"{path}/{key}", text)
        self.limits[option] = value

    def _swap(self, n: int) -> None:
        f = f"{self.dirs['']}/memory.swap.max"
        if n < 0:
            raise CgroupError(errno.EINVAL, "cgroup: memory_swap is below memory", f)
        if not os.path.exists(f):
            raise CgroupError(errno.ENOTSUP, "cgroup: memory_swap needs swap accounting "
                              "(CONFIG_MEMCG_SWAP, swapaccount=1)", f)
        _write(f, str(n))

    def _file(self, name: str) -> str | None:
        d = self.dirs.get("")
        return None if d is None else _read(f"{d}/{name}")

    def stats(self) -> dict[str, int | None]:
        # a file is missing where its controller is not enabled: None
        return {
            "memory_current": _num(self._file("memory.current")),
            "memory_peak": _num(self._file("memory.peak")),
            "memory_limit": _num(self._file("memory.max")),
            "oom_kills": _keyed(self._file("memory.events"), "oom_kill"),
            "pids_current": _num(self._file("pids.current")),
            "pids_limit": _num(self._file("pids.max")),
            "cpu_usage_ns": (_keyed(self._file("cpu.stat"), "usage_usec") or 0) * 1000,
        }

    def oom_kills(self) -> int:
        return _keyed(self._file("memory.events"), "oom_kill") or 0

    def freeze(self, frozen: bool, wait: float = 5.0) -> None:
        d = self.dirs[""]
        _write(f"{d}/cgroup.freeze", "1" if frozen else "0")
        want = "1" if frozen else "0"
        self._wait_state(lambda: str(_keyed(self._file("cgroup.events"), "frozen")), want, wait)

    def kill_all(self) -> None:
        """Kill every process in the container, forks in flight included."""
        d = self.dirs.get("")
        if d is None:
            return
        if os.path.exists(f"{d}/cgroup.kill"):         # Linux 5.14
            _write(f"{d}/cgroup.kill", "1")
            return
        self.freeze(True)
        try:
            _kill_procs(d)
        finally:
            self.freeze(False)

    def open(self) -> int:
        """An fd of the cgroup's directory, for clone3's CLONE_INTO_CGROUP."""
        return os.open(self.dirs[""], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def bases() -> list[str]:
    """Where this process's containers get their cgroups, in the layout found."""
    kind = layout()
    if kind == "v2":
        return [V2.base()]
    if kind == "v1":
        return [V1.base(c) for c in sorted({*CONTROLLERS.values(), *ALWAYS})
                if os.path.isdir(f"{ROOT}/{c}")]
    return []


def sweep() -> None:
    """Remove the cgroups of containers whose owner is gone."""
    for base in bases():
        _sweep_dir(base, force=True)

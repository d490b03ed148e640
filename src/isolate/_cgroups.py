"""Resource limits with cgroups: memory, pids, cpus.

A container with limits gets a cgroup per controller, nested under the
caller's own (so a delegated subtree works), named OWNERPID-ID; its
processes join before anything else runs and it is removed when the
container ends. Cgroups left by an owner that died are removed by the next
start. cgroup v1 (and the hybrid layout) is what this supports now; on a pure
v2 machine limits are refused with a clear error rather than ignored.
"""
from __future__ import annotations

import errno
import os
import time

from .errors import ContainerError

ROOT = "/sys/fs/cgroup"
PERIOD_US = 100_000
#: option -> v1 controller
CONTROLLERS = {"memory": "memory", "memory_swap": "memory", "pids": "pids", "cpus": "cpu",
               "cpu_weight": "cpu"}
#: made with any limit: accounting (stats) and the freezer (pause, kill-all)
ALWAYS = ("cpuacct", "freezer")


class CgroupError(ContainerError):
    """A cgroup could not be made, limited, joined or removed."""

    def __init__(self, err: int, message: str, path: str | None = None):
        super().__init__(err, message, path, step="cgroup")


def layout() -> str | None:
    if os.path.exists(f"{ROOT}/cgroup.controllers"):
        return "v2"
    if os.path.isdir(f"{ROOT}/memory"):
        return "v1"
    return None


def _own(controller: str) -> str:
    """This process's cgroup in a v1 hierarchy, from /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                return path
    return "/"


def _base(controller: str) -> str:
    return os.path.normpath(f"{ROOT}/{controller}/{_own(controller)}/isolate")


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CgroupError(e.errno or errno.EIO, f"cgroup: writing {value!r} to {path}: "
                          f"{e.strerror}", path) from None


class Cgroups:
    """The cgroups of one container."""

    def __init__(self, limits: dict[str, float], container_id: str):
        self.limits = dict(limits)
        self.name = f"{os.getpid()}-{container_id}"
        self.dirs: dict[str, str] = {}

    def create(self) -> Cgroups:
        kind = layout()
        if kind != "v1":
            raise CgroupError(errno.ENOTSUP, "resource limits need cgroup v1 controllers "
                              f"(found {kind or 'no cgroups'}); cgroup v2 support is not there yet")
        sweep()
        try:
            for controller in dict.fromkeys((*[CONTROLLERS[o] for o in self.limits], *ALWAYS)):
                if os.path.isdir(f"{ROOT}/{controller}") or controller not in ALWAYS:
                    self._make(controller)
            for option, value in self.limits.items():
                self._set(option, value)
        except BaseException:
            self.remove()
            raise
        return self

    def _make(self, controller: str) -> None:
        base = _base(controller)
        if not os.path.isdir(os.path.dirname(base)):
            raise CgroupError(errno.ENOENT, f"cgroup: the {controller} controller is not "
                              "mounted", base)
        os.makedirs(base, exist_ok=True)
        path = f"{base}/{self.name}"
        try:
            os.mkdir(path)
        except OSError as e:
            raise CgroupError(e.errno or errno.EIO, f"cgroup: mkdir {path}: {e.strerror}"
                              + (": the caller's cgroup is not delegated to it"
                                 if e.errno in (errno.EACCES, errno.EPERM) else ""),
                              path) from None
        self.dirs[controller] = path

    def _set(self, option: str, value: float) -> None:
        path = self.dirs[CONTROLLERS[option]]
        if option == "memory":
            _write(f"{path}/memory.limit_in_bytes", str(int(value)))
        elif option == "pids":
            _write(f"{path}/pids.max", str(int(value)))
        elif option == "memory_swap":
            # memory and swap together; the memory limit is set first (memsw >= memory)
            if not os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                raise CgroupError(errno.ENOTSUP, "cgroup: memory_swap needs swap accounting "
                                  "(kernel parameter swapaccount=1)")
            _write(f"{path}/memory.memsw.limit_in_bytes", str(int(value)))
        elif option == "cpus":
            _write(f"{path}/cpu.cfs_period_us", str(PERIOD_US))
            _write(f"{path}/cpu.cfs_quota_us", str(max(1000, int(value * PERIOD_US))))
        elif option == "cpu_weight":
            # cgroup v2's weight (1..10000, default 100) as v1 shares (default 1024)
            _write(f"{path}/cpu.shares", str(max(2, int(value * 1024 / 100))))
        self.limits[option] = value

    def update(self, limits: dict[str, float]) -> None:
        """Change limits of the running container; a refused value leaves the
        old ones in place. Only controllers the container has can change."""
        missing = [o for o in limits if CONTROLLERS[o] not in self.dirs]
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

    def _read(self, controller: str, name: str) -> str | None:
        d = self.dirs.get(controller)
        if d is None:
            return None
        try:
            with open(f"{d}/{name}") as f:
                return f.read().strip()
        except OSError:
            return None

    def stats(self) -> dict[str, int | None]:
        def num(controller: str, name: str) -> int | None:
            v = self._read(controller, name)
            return None if v is None or v == "max" else int(v)
        return {
            "memory_current": num("memory", "memory.usage_in_bytes"),
            "memory_peak": num("memory", "memory.max_usage_in_bytes"),
            "memory_limit": num("memory", "memory.limit_in_bytes"),
            "oom_kills": self.oom_kills() if "memory" in self.dirs else None,
            "pids_current": num("pids", "pids.current"),
            "pids_limit": num("pids", "pids.max"),
            "cpu_usage_ns": num("cpuacct", "cpuacct.usage"),
        }

    def freeze(self, frozen: bool, wait: float = 5.0) -> None:
        if "freezer" not in self.dirs:
            raise CgroupError(errno.ENOTSUP, "cgroup: the freezer controller is not mounted")
        state = "FROZEN" if frozen else "THAWED"
        _write(f"{self.dirs['freezer']}/freezer.state", state)
        deadline = time.monotonic() + wait
        while self._read("freezer", "freezer.state") != state:
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"cgroup: the container did not become {state}")
            time.sleep(0.001)

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
            with open(f"{d}/cgroup.procs") as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
        finally:
            if frozen:
                self.freeze(False)

    def procs(self) -> list[str]:
        """The files a process writes "0" to, to join."""
        return [f"{d}/cgroup.procs" for d in self.dirs.values()]

    def oom_kills(self) -> int:
        d = self.dirs.get("memory")
        if d is None:
            return 0
        try:
            with open(f"{d}/memory.oom_control") as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def remove(self, wait: float = 2.0) -> None:
        """rmdir each, once its last process is gone (EBUSY until then)."""
        deadline = time.monotonic() + wait
        for controller, d in list(self.dirs.items()):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(e.errno or errno.EIO,
                                          f"cgroup: rmdir {d}: {e.strerror}", d) from None
                    time.sleep(0.002)
            del self.dirs[controller]


def sweep() -> None:
    """Remove cgroups whose owner process is gone (it crashed or was killed)."""
    for controller in {*CONTROLLERS.values(), *ALWAYS}:
        base = _base(controller)
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            owner = name.split("-", 1)[0]
            if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
                continue
            path = f"{base}/{name}"
            try:
                with open(f"{path}/cgroup.procs") as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), 9)
                        except ProcessLookupError:
                            pass
                os.rmdir(path)
            except OSError:
                pass

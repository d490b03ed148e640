"""isolate-runc under the real engines: containerd (through ctr and its
io.containerd.runc.v2 shim, the path Kubernetes' CRI takes).

Each engine is a daemon of the test's own: its root, state and sockets in a
temporary directory, stopped and removed afterwards, with nothing left
(tasks, shims, mounts, cgroups, the runtime's state).
"""
from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from .images import make_image
from .rootfs import make_rootfs

IMAGE = "docker.io/library/busybox:latest"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engines run as root here")


def _runtime_binary() -> str:
    """The installed isolate-runc (beside this Python's executable, or on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), "isolate-runc")
    found = beside if os.access(beside, os.X_OK) else shutil.which("isolate-runc")
    assert found, "isolate-runc is not installed: pip install . (see README)"
    return found


def _wait_for(predicate, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _umount_below(path: str) -> None:
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for t in sorted((t for t in targets if t.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", t], check=False)


def _engine(cls, prefix: str, load):
    """A module's engine: started in a directory of its own under /tmp
    (short: socket paths), the test image loaded, and everything removed."""
    base = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        engine = cls(base)
        try:
            load(engine, make_image(make_rootfs(os.path.join(base, "image-root")),
                                    os.path.join(base, "busybox.tar")))
            yield engine
        finally:
            engine.stop()
    finally:
        _umount_below(base)
        shutil.rmtree(base, ignore_errors=True)


TTY_PROBE = "tty; test -t 0 && echo is-a-tty"


def _assert_tty(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run an engine's client on a terminal of ours: the container's
    process must see a terminal of its own as stdin, and we its output."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                start_new_session=True)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:         # EIO: every holder of the slave is gone
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(30) == 0, out
    finally:
        os.close(master)
    assert out.decode().replace("\r", "").splitlines()[:2] == ["/dev/pts/0", "is-a-tty"], out


class Containerd:
    """A containerd of the test's own, and ctr pointed at it."""

    def __init__(self, base: str):
        assert shutil.which("containerd") and shutil.which("ctr"), \
            "containerd is missing: apt-get install containerd (see README)"
        self.base = base
        self.namespace = f"itest-{os.getpid()}"      # also the parent of its cgroups
        self.runtime = _runtime_binary()
        config = os.path.join(base, "config.toml")
        with open(config, "w") as f:
            f.write(f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/c.sock"
[ttrpc]
  address = "{base}/c.sock.ttrpc"
[debug]
  address = "{base}/debug.sock"
""")
        self.log = open(os.path.join(base, "containerd.log"), "wb")
        self.proc = subprocess.Popen(["containerd", "--config", config], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(lambda: self.ctr("version", check=False).returncode == 0, what="containerd")
        except BaseException:
            self.stop()
            raise

    def ctr(self, *args: str, check: bool = True, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        r = subprocess.run(["ctr", "--address", f"{self.base}/c.sock", "-n", self.namespace,
                            *args], capture_output=True, text=True, timeout=timeout, **kwargs)
        if check:
            assert r.returncode == 0, f"ctr {' '.join(args)}: {r.stderr}"
        return r

    def run(self, name: str, *args: str, options: tuple[str, ...] = (), check: bool = False,
            **kwargs) -> subprocess.CompletedProcess:
        return self.ctr("run", "--rm", "--runc-binary", self.runtime, *options, IMAGE, name,
                        *args, check=check, **kwargs)

    def stop(self) -> None:
        for r in (self.ctr("task", "ls", "-q", check=False),):
            for task in r.stdout.split():
                self.ctr("task", "kill", "-s", "SIGKILL", task, check=False)
                self.ctr("task", "rm", "-f", task, check=False)
        for c in self.ctr("container", "ls", "-q", check=False).stdout.split():
            self.ctr("container", "rm", c, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        # shims outlive containerd by design; ours hold this daemon's address
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"containerd-shim" in cmd and self.base.encode() in cmd:
                os.kill(int(pid), signal.SIGKILL)
        _umount_below(self.base)
        for d in (f"/sys/fs/cgroup/{self.namespace}",
                  *(f"/sys/fs/cgroup/{c}/{self.namespace}" for c in os.listdir("/sys/fs/cgroup"))):
            try:
                os.rmdir(d)         # empty: each container's own went with it
            except OSError:
                pass
        shutil.rmtree(f"/run/containerd/runc/{self.namespace}", ignore_errors=True)
        shutil.rmtree(f"/run/containerd/io.containerd.runtime.v2.task/{self.namespace}",
                      ignore_errors=True)


@pytest.fixture(scope="module")
def containerd():
    yield from _engine(Containerd, "ctd-", lambda d, archive: d.ctr("image", "import", archive))


def test_ctr_run_exit_code_stdio_and_namespaces(containerd):
    r = containerd.run("t1", "sh", "-c", "read line; echo got=$line pid=$$; hostname; "
                       "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4", input="hello\n",
                       stdin=None)
    assert r.returncode == 4, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "got=hello pid=1"
    assert lines[1] == "t1"
    assert lines[2].startswith("sh -c read line")     # PID 1 is the process itself


def test_ctr_run_options(containerd, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "in").write_text("from the host\n")
    r = containerd.run("t2", "sh", "-c",
                       "id -u; pwd; echo $FOO; cat /data/in; touch /x 2>&1 | grep -c Read-only;"
                       " touch /data/y 2>&1 | grep -c Read-only",
                       options=("--cwd", "/tmp", "--env", "FOO=bar", "--read-only",
                                "--mount", f"type=bind,src={share},dst=/data,options=rbind:ro"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "/tmp", "bar", "from", "the", "host", "1", "1"]


def test_ctr_oom_kill(containerd):
    """A process over its memory limit is killed by the kernel: 137."""
    r = containerd.run("t3", "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); "
                       "echo survived", options=("--memory-limit", str(32 << 20)))
    assert r.returncode == 137 and "survived" not in r.stdout, (r.returncode, r.stderr)


def test_ctr_tty(containerd):
    """-t: the shim's console socket gets the pty; ctr's terminal shows it."""
    c = containerd
    _assert_tty(["ctr", "--address", f"{c.base}/c.sock", "-n", c.namespace, "run", "--rm", "-t",
                 "--runc-binary", c.runtime, IMAGE, "t4", "sh", "-c", TTY_PROBE])


def test_ctr_task_lifecycle_exec_pause_ps_metrics(containerd):
    """A detached task: exec, ps, metrics, pause/resume, kill, as an engine
    drives them; then a second container joins its network namespace, as a
    pod's containers join the sandbox's."""
    c = containerd
    c.ctr("run", "-d", "--runc-binary", c.runtime, "--memory-limit", str(128 << 20), IMAGE,
          "t5", "sh", "-c", "sleep 300 & wait")
    try:
        r = c.ctr("task", "exec", "--exec-id", "e1", "t5", "sh", "-c", "echo $$; hostname",
                  check=False)
        assert r.returncode == 0, r.stderr
        pid_inside, host = r.stdout.split()
        assert int(pid_inside) > 1 and host == "t5"
        r = c.ctr("task", "exec", "--exec-id", "e2", "t5", "sh", "-c", "exit 9", check=False)
        assert r.returncode == 9
        ps = c.ctr("task", "ps", "t5").stdout.split()
        assert len([p for p in ps[2:] if p.isdigit()]) >= 2      # sh and sleep
        metrics = c.ctr("task", "metrics", "--format", "json", "t5", check=False)
        assert metrics.returncode == 0, metrics.stderr
        # the limit, in the cgroup at the cgroupsPath containerd gave (/NAMESPACE/ID)
        v1 = f"/sys/fs/cgroup/memory/{c.namespace}/t5/memory.limit_in_bytes"
        with open(v1 if os.path.exists(v1) else f"/sys/fs/cgroup/{c.namespace}/t5/memory.max") as f:
            assert int(f.read()) == 128 << 20
        c.ctr("task", "pause", "t5")
        assert "PAUSED" in c.ctr("task", "ls").stdout
        c.ctr("task", "resume", "t5")
        assert "RUNNING" in c.ctr("task", "ls").stdout
        # a second container in t5's network namespace sees the same interfaces
        pid = [line.split()[1] for line in c.ctr("task", "ls").stdout.splitlines()[1:]
               if line.split()[0] == "t5"][0]
        r = c.run("t6", "sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts",
                  options=("--with-ns", f"network:/proc/{pid}/ns/net"))
        assert r.returncode == 0, r.stderr
        net, uts = r.stdout.split()
        assert net == os.readlink(f"/proc/{pid}/ns/net")        # joined
        assert uts != os.readlink(f"/proc/{pid}/ns/uts")        # its own
        # and one in t5's PID namespace sees t5's process as its PID 1
        r = c.run("t8", "sh", "-c", "readlink /proc/self/ns/pid; echo $$; cat /proc/1/cmdline",
                  options=("--with-ns", f"pid:/proc/{pid}/ns/pid"))
        assert r.returncode == 0, r.stderr
        ns, own, first = r.stdout.split("\n", 2)
        assert ns == os.readlink(f"/proc/{pid}/ns/pid") and int(own) > 1, r.stdout
        with open(f"/proc/{pid}/cmdline") as f:
            assert first == f.read()
        c.ctr("task", "kill", "-s", "SIGKILL", "t5")
        _wait_for(lambda: "STOPPED" in c.ctr("task", "ls").stdout, what="t5 to stop")
    finally:
        c.ctr("task", "rm", "-f", "t5", check=False)
        c.ctr("container", "rm", "t5", check=False)
    assert "t5" not in c.ctr("container", "ls", "-q").stdout.split()
    assert not os.listdir(f"/run/containerd/runc/{c.namespace}")   # the runtime's state


def test_ctr_net_host(containerd):
    with open("/proc/net/dev") as f:
        host = sorted(line.split(":")[0].strip() for line in f.read().splitlines()[2:])
    r = containerd.run("t7", "cat", "/proc/net/dev", options=("--net-host",))
    assert r.returncode == 0, r.stderr
    assert sorted(line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]) == host


class Dockerd:
    """A dockerd of the test's own (its own containerd inside), no bridge or
    iptables, with isolate-runc added as the runtime "isolate"."""

    def __init__(self, base: str):
        assert shutil.which("dockerd") and shutil.which("docker"), \
            "Docker is missing: apt-get install docker.io (see README)"
        self.base = base
        self.sock = f"unix://{base}/docker.sock"
        with open(f"{base}/daemon.json", "w") as f:
            f.write("{}")
        self.log = open(f"{base}/dockerd.log", "wb")
        self.cgroup_parents = [d for d in _cgroup_dirs("docker") if not os.path.isdir(d)]
        self.proc = subprocess.Popen(
            ["dockerd", "--config-file", f"{base}/daemon.json", "--data-root", f"{base}/data",
             "--exec-root", f"{base}/exec", "--pidfile", f"{base}/docker.pid", "-H", self.sock,
             "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--add-runtime", f"isolate={_runtime_binary()}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(lambda: self.docker("version", check=False).returncode == 0,
                      timeout=60, what="dockerd")
        except BaseException:
            self.stop()
            raise

    def docker(self, *args: str, check: bool = True, timeout: float = 60,
               **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        r = subprocess.run(["docker", "-H", self.sock, *args], capture_output=True, text=True,
                           timeout=timeout, **kwargs)
        if check:
            assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr}"
        return r

    def run(self, *args: str, options: tuple[str, ...] = (), **kwargs):
        return self.docker("run", "--rm", "--runtime", "isolate", "--network", "none",
                           *options, "busybox", *args, check=False, **kwargs)

    def stop(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        _umount_below(self.base)
        for d in self.cgroup_parents:       # what dockerd made for its containers
            try:
                os.rmdir(d)
            except OSError:
                pass


def _cgroup_dirs(name: str) -> list[str]:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return [f"/sys/fs/cgroup/{name}"]
    return [f"/sys/fs/cgroup/{c}/{name}" for c in os.listdir("/sys/fs/cgroup")
            if os.path.isdir(f"/sys/fs/cgroup/{c}") and not os.path.islink(f"/sys/fs/cgroup/{c}")]


@pytest.fixture(scope="module")
def dockerd():
    yield from _engine(Dockerd, "dk-", lambda d, archive: d.docker("load", "-i", archive))


def test_docker_run(dockerd, tmp_path):
    """docker run --runtime isolate: Docker's own seccomp profile (without
    no_new_privs), its exit code, limits, read-only root, volume, user."""
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("vol\n")
    os.chmod(tmp_path, 0o755)
    r = dockerd.run("sh", "-c", "echo $$; id -u; cat /v/f; touch /x 2>&1 | grep -c Read-only;"
                    " grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t';"
                    " cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"
                    " 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max;"
                    " exit 3",
                    options=("--memory", "64m", "--pids-limit", "10", "--read-only",
                             "-v", f"{vol}:/v:ro", "--user", "1000:1000"))
    assert r.returncode == 3, r.stderr
    assert r.stdout.split() == ["1", "1000", "vol", "1", "NoNewPrivs:0", "Seccomp:2",
                                str(64 << 20), "10"]


def test_docker_exec_stop_kill(dockerd):
    d = dockerd
    d.docker("run", "-d", "--name", "s1", "--runtime", "isolate", "--network", "none",
             "busybox", "sleep", "100")
    try:
        r = d.docker("exec", "s1", "sh", "-c", "echo $$; exit 6", check=False)
        assert r.returncode == 6 and int(r.stdout) > 1
        d.docker("stop", "-t", "1", "s1")       # sleep, as PID 1, ignores TERM: then KILL
        assert d.docker("inspect", "-f", "{{.State.ExitCode}}", "s1").stdout.strip() == "137"
    finally:
        d.docker("rm", "-f", "s1", check=False)
    d.docker("run", "-d", "--name", "s2", "--runtime", "isolate", "--network", "none",
             "busybox", "sh", "-c", "trap 'exit 42' TERM; sleep 100 & wait")
    try:
        d.docker("stop", "-t", "10", "s2")      # a handler: its own exit code
        assert d.docker("inspect", "-f", "{{.State.ExitCode}}", "s2").stdout.strip() == "42"
    finally:
        d.docker("rm", "-f", "s2", check=False)


def test_docker_it(dockerd):
    _assert_tty(["docker", "-H", dockerd.sock, "run", "--rm", "-it", "--runtime", "isolate",
                 "--network", "none", "busybox", "sh", "-c", TTY_PROBE])


def test_images_travel_between_docker_and_isolate(dockerd, tmp_path, monkeypatch):
    """docker save's archive runs in isolate; isolate's save (docker format,
    a whiteout in its second layer) is loaded and run by Docker with runc."""
    import tarfile

    import isolate
    from .images import build_image, entry, layer_tar
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / "store"))
    dockerd.docker("save", "-o", str(tmp_path / "saved.tar"), "busybox")
    [img] = isolate.load(tmp_path / "saved.tar")
    assert img.ref == "docker.io/library/busybox:latest"
    r = isolate.run(["sh", "-c", "ls /bin/busybox; cat /etc/hostname"], image=img,
                    capture_output=True, text=True)
    assert r.stdout.startswith("/bin/busybox\n"), r
    upper = layer_tar([entry("etc/.wh.group", b""), entry("etc/motd", b"isolate\n")])
    with tarfile.open(tmp_path / "saved.tar") as t:     # docker save's own first layer
        layer = next(t.extractfile(m).read() for m in t if m.name.startswith("blobs/sha256/")
                     and m.size > 100000 or m.name.endswith("layer.tar"))
    [mine] = isolate.load(build_image(str(tmp_path / "two.tar"), [layer, upper],
                                      name="localhost/two:1"))
    mine.save(tmp_path / "out.tar", format="docker")
    dockerd.docker("load", "-i", str(tmp_path / "out.tar"))
    r = dockerd.docker("run", "--rm", "--network", "none", "localhost/two:1", "sh", "-c",
                       "cat /etc/motd; ls /etc/group 2>&1; true")
    assert r.stdout.startswith("isolate\n") and "No such file" in r.stdout, r


class Podman:
    """podman (with conmon) on storage, run dirs and configuration of the
    test's own; isolate-runc as its --runtime."""

    def __init__(self, base: str):
        assert shutil.which("podman") and shutil.which("conmon"), \
            "podman is missing: apt-get install podman (see README)"
        import resource
        self.base = base
        nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        with open(f"{base}/containers.conf", "w") as f:
            # podman's default ulimits lie above this machine's hard limits
            f.write(f"""[containers]
default_ulimits = ["nofile=1024:1024", "nproc={nproc}:{nproc}"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
""")
        with open(f"{base}/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{base}/run"\n'
                    f'graphroot = "{base}/storage"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=f"{base}/containers.conf",
                        CONTAINERS_STORAGE_CONF=f"{base}/storage.conf")
        self.cgroup_parents = [d for d in _cgroup_dirs("libpod_parent") if not os.path.isdir(d)]
        self.runtime = _runtime_binary()

    def podman(self, *args: str, check: bool = True, timeout: float = 60,
               **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        r = subprocess.run(self.command(*args), capture_output=True, text=True,
                           timeout=timeout, env=self.env, **kwargs)
        if check:
            assert r.returncode == 0, f"podman {' '.join(args)}: {r.stderr}"
        return r

    def command(self, *args: str) -> list[str]:
        b = self.base
        return ["podman", "--root", f"{b}/storage", "--runroot", f"{b}/run", "--tmpdir",
                f"{b}/tmp", "--runtime", self.runtime, *args]

    def stop(self) -> None:
        self.podman("rm", "-af", check=False)
        self.podman("system", "reset", "--force", check=False)
        _umount_below(self.base)
        for d in self.cgroup_parents:
            try:
                for sub in sorted(os.listdir(d)):
                    if os.path.isdir(f"{d}/{sub}"):
                        os.rmdir(f"{d}/{sub}")
                os.rmdir(d)
            except OSError:
                pass


@pytest.fixture(scope="module")
def podman():
    yield from _engine(Podman, "pm-", lambda p, archive: p.podman("load", "-i", archive))


def test_podman_run_exec_stop(podman):
    p = podman
    r = p.podman("run", "--rm", "--network", "none", "--memory", "64m", "busybox", "sh", "-c",
                 "echo $$; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                 " || cat /sys/fs/cgroup/memory.max; exit 3", check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout.split() == ["1", str(64 << 20)]
    p.podman("run", "-d", "--name", "p1", "--network", "none", "busybox", "sleep", "100")
    try:
        r = p.podman("exec", "p1", "sh", "-c", "echo $$; exit 5", check=False)
        assert r.returncode == 5 and int(r.stdout) > 1, r.stderr
        p.podman("stop", "-t", "1", "p1")
        assert p.podman("inspect", "-f", "{{.State.ExitCode}}", "p1").stdout.strip() == "137"
    finally:
        p.podman("rm", "-f", "p1", check=False)


def test_podman_tty(podman):
    _assert_tty(podman.command("run", "--rm", "-it", "--network", "none", "busybox", "sh", "-c",
                               TTY_PROBE), env=podman.env)


def test_readme_kubernetes_config_is_containerds(tmp_path):
    """The runtime handler the README gives Kubernetes users is what this
    containerd reads: its CRI section, with isolate-runc as the shim's binary."""
    import re
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    block = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    config = tmp_path / "config.toml"
    config.write_text(f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
                      + block)
    r = subprocess.run(["containerd", "--config", str(config), "config", "dump"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    dumped = r.stdout
    section = dumped[dumped.index('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.isolate]'):]
    assert 'runtime_type = "io.containerd.runc.v2"' in section
    assert 'BinaryName = "/usr/local/bin/isolate-runc"' in section

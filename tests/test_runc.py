"""isolate-runc, the OCI runtime, driven from bundles as the engines drive it.

A small "shim" (a subreaper, as containerd's shim and conmon are) runs
create, start, waits for the container's init and deletes it, so that the
exit status and the reparenting are those an engine sees. What the contained
process sees is checked from inside.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from isolate._oci import default_spec

RUNC = [sys.executable, "-m", "isolate.runc"]

#: the shim: a subreaper that runs the runtime's commands like containerd's shim
SHIM = r"""
import ctypes, json, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)      # PR_SET_CHILD_SUBREAPER
runc, bundle, cid = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
pidfile = os.path.join(bundle, "init.pid")
r = subprocess.run(runc + ["create", "--bundle", bundle, "--pid-file", pidfile, cid])
if r.returncode:
    sys.exit(100)
pid = int(open(pidfile).read())
# no daemon of the runtime's: the init is this subreaper's, its parent gone
ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
print("PARENT", "shim" if ppid == os.getpid() else ppid, flush=True)
subprocess.run(runc + ["start", cid], check=True)
while True:
    p, status = os.wait()
    if p == pid:
        break
subprocess.run(runc + ["delete", cid], check=True)
print("EXIT", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.fixture()
def runtime(tmp_path):
    """(runc command, state root, cgroup parent): everything under this test's own names."""
    root = str(tmp_path / "state")
    parent = f"isolate-test-runc-{os.getpid()}-{tmp_path.name}"
    yield RUNC + ["--root", root], root, parent
    for base in _cgroup_bases(parent):
        try:
            os.rmdir(base)
        except FileNotFoundError:
            pass


def _cgroup_bases(parent: str) -> list[str]:
    from isolate import _cgroups
    if _cgroups.layout() == "v2":
        return [f"{_cgroups.ROOT}/{parent}"]
    return [f"{_cgroups.ROOT}/{c}/{parent}" for c in os.listdir(_cgroups.ROOT)
            if os.path.isdir(f"{_cgroups.ROOT}/{c}/{parent}")]


def _bundle(tmp_path, rootfs: str, args: list[str], parent: str, cid: str = "c1",
            **changes) -> str:
    bundle = tmp_path / f"bundle-{cid}"
    bundle.mkdir()
    spec = copy.deepcopy(default_spec())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"]["path"] = rootfs
    spec["linux"]["cgroupsPath"] = f"/{parent}/{cid}"
    for key, value in changes.items():
        target = spec
        *path, last = key.split(".")
        for k in path:
            target = target.setdefault(k, {})
        target[last] = value
    (bundle / "config.json").write_text(json.dumps(spec))
    return str(bundle)


def _shim(runc, bundle: str, cid: str = "c1", timeout: float = 30) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-c", SHIM, json.dumps(runc), bundle, cid],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    out, _, code = r.stdout.rpartition("EXIT ")
    return int(code), out, r.stderr


def _state(runc, cid: str) -> dict:
    r = subprocess.run(runc + ["state", cid], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _run(runc, *args, check=True) -> subprocess.CompletedProcess:
    """The runtime's command, its output through files: a container it
    leaves running holds what it was given as stdio, as runc's does."""
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        r = subprocess.run(runc + list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                           timeout=60)
        out.seek(0)
        err.seek(0)
        r.stdout, r.stderr = out.read().decode(), err.read().decode()
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _gone(root: str, parent: str, cid: str) -> None:
    assert not os.path.exists(os.path.join(root, cid)), "state dir left"
    for base in _cgroup_bases(parent):
        assert not os.path.exists(f"{base}/{cid}"), f"cgroup left: {base}/{cid}"


SEES = ("echo pid=$$ host=$(hostname) uid=$(id -u) gids=$(id -G) domain=$(cat /proc/sys/kernel/domainname);"
        " grep CapEff /proc/self/status;"
        " readlink /proc/1/exe; ls /proc/self/fd | tr '\\n' ' '; echo;"
        " grep -c ' /proc/timer_list ' /proc/self/mountinfo")


def test_lifecycle_from_inside(runtime, tmp_path, public_tmp):
    """create, start, the exit status through the subreaper, delete: the
    process is PID 1 of its own namespaces, with the config's ids and
    capabilities, only its stdio, and isolate's init gone from it."""
    from .rootfs import make_rootfs
    rootfs = make_rootfs(public_tmp)     # a root that uid 1000 may enter
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", SEES + "; exit 7"], parent,
                     hostname="oci-box", domainname="oci.example", **{"process.user": {"uid": 1000, "gid": 1000,
                                                             "additionalGids": [100]}})
    code, out, err = _shim(runc, bundle)
    assert code == 7, err
    lines = out.splitlines()
    assert lines.pop(0) == "PARENT shim"
    assert lines[0] == "pid=1 host=oci-box uid=1000 gids=1000 100 domain=oci.example"
    # CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE as runc's template gives
    # them (a non-root user's effective set is empty)
    assert lines[1].split()[1] in ("0000000000000000", "0000000020000420")
    assert lines[2] == "/bin/busybox"           # PID 1 is the command, not an init of ours
    assert lines[3].split() == ["0", "1", "2", "3"]     # 3: ls's own directory
    assert lines[4] == "1"                  # /proc/timer_list masked (a mount over it)
    _gone(root, parent, "c1")


def test_created_is_parked_until_start(runtime, tmp_path, rootfs):
    """create returns with the process made but not run (state "created");
    start runs it; a stopped one says so; delete removes everything."""
    runc, root, parent = runtime
    out = tmp_path / "out"
    out.mkdir()
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "echo ran > /out/f; sleep 30 & wait"], parent,
                     mounts=default_spec()["mounts"] + [
                         {"destination": "/out", "type": "bind", "source": str(out),
                          "options": ["rbind"]}])
    _run(runc, "create", "--bundle", bundle, "--pid-file", f"{bundle}/pid", "c1")
    try:
        st = _state(runc, "c1")
        assert st["status"] == "created" and st["id"] == "c1" and st["bundle"] == bundle
        with open(f"{bundle}/pid") as f:
            assert st["pid"] == int(f.read())
        time.sleep(0.3)
        assert not (out / "f").exists()         # parked
        lst = json.loads(_run(runc, "list", "--format", "json").stdout)
        assert [(c["id"], c["status"]) for c in lst] == [("c1", "created")]
        _run(runc, "start", "c1")
        deadline = time.monotonic() + 10
        while not (out / "f").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (out / "f").read_text() == "ran\n"
        assert _state(runc, "c1")["status"] == "running"
        r = _run(runc, "start", "c1", check=False)
        assert r.returncode == 1 and "already running" in r.stderr
        pids = json.loads(_run(runc, "ps", "--format", "json", "c1").stdout)
        assert st["pid"] in pids and len(pids) == 2         # sh and sleep
        r = _run(runc, "delete", "c1", check=False)
        assert r.returncode == 1 and "not stopped: running" in r.stderr
        _run(runc, "kill", "c1", "KILL")
        deadline = time.monotonic() + 10
        while _state(runc, "c1")["status"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(runc, "c1")["status"] == "stopped"
        r = _run(runc, "kill", "c1", "9", check=False)
        assert r.returncode == 1 and "not running" in r.stderr
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_pause_resume_kill_all_and_delete_force(runtime, tmp_path, rootfs):
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "sleep 100 & sleep 100 & wait"], parent)
    _run(runc, "run", "--detach", "--bundle", bundle, "c1")
    try:
        _run(runc, "pause", "c1")
        assert _state(runc, "c1")["status"] == "paused"
        _run(runc, "resume", "c1")
        assert _state(runc, "c1")["status"] == "running"
        stats = json.loads(_run(runc, "events", "--stats", "c1").stdout)
        assert stats["type"] == "stats" and stats["data"]["pids"]["current"] >= 3
        _run(runc, "kill", "--all", "c1", "TERM")      # the sleeps end, then sh
        deadline = time.monotonic() + 10
        while _state(runc, "c1")["status"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(runc, "c1")["status"] == "stopped"
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")
    # delete --force of a running one kills it first
    _run(runc, "run", "--detach", "--bundle", bundle, "c1")
    _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_kill_before_start_ends_it(runtime, tmp_path, rootfs):
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["true"], parent)
    _run(runc, "create", "--bundle", bundle, "c1")
    _run(runc, "kill", "c1", "TERM")
    deadline = time.monotonic() + 10
    while _state(runc, "c1")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _state(runc, "c1")["status"] == "stopped"
    r = _run(runc, "start", "c1", check=False)
    assert r.returncode == 1 and "stopped" in r.stderr
    _run(runc, "delete", "c1")
    _gone(root, parent, "c1")


def test_run_foreground_exit_code_and_limits(runtime, tmp_path, rootfs):
    """run: the exit status is the process's; memory and pids limits are
    the cgroup's, as the container sees them."""
    runc, root, parent = runtime
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
              "2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; "
              "sh -c 'sleep 5 & sleep 5 & sleep 5 & sleep 5 & wait' 2>/dev/null; "
              "echo inner=$?; exit 3")
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", script], parent, **{
        "linux.resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 4}}})
    r = _run(runc, "run", "--bundle", bundle, "c1", check=False)
    assert r.returncode == 3, r.stderr
    lines = r.stdout.split()
    assert lines[:2] == [str(64 << 20), "4"]
    assert lines[2] == "inner=2"      # two sh and two sleeps: the third sleep's fork failed
    _gone(root, parent, "c1")


def test_time_namespace_offsets(runtime, tmp_path, rootfs):
    runc, root, parent = runtime
    ns = default_spec()["linux"]["namespaces"] + [{"type": "time"}]
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "cut -d. -f1 /proc/uptime"], parent, **{
        "linux.namespaces": ns, "linux.timeOffsets": {"boottime": {"secs": 86400 * 365}}})
    r = _run(runc, "run", "--bundle", bundle, "c1")
    with open("/proc/uptime") as f:
        host = float(f.read().split()[0])
    assert 86400 * 365 + host - 5 < int(r.stdout) < 86400 * 365 + host + 60
    _gone(root, parent, "c1")


def test_root_in_place_and_readonly(runtime, tmp_path, fresh_rootfs):
    """The bundle's root is the container's, writable in place (the engine's
    snapshot takes the writes), or read-only."""
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, fresh_rootfs, ["sh", "-c", "echo hi > /etc/marker"], parent,
                     **{"root.readonly": False})
    assert _run(runc, "run", "--bundle", bundle, "c1").returncode == 0
    with open(f"{fresh_rootfs}/etc/marker") as f:
        assert f.read() == "hi\n"
    bundle = _bundle(tmp_path, fresh_rootfs, ["sh", "-c", "echo x > /etc/other"], parent,
                     cid="c2")
    r = _run(runc, "run", "--bundle", bundle, "c2", check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not os.path.exists(f"{fresh_rootfs}/etc/other")
    _gone(root, parent, "c2")


def test_console_socket_gets_the_terminal(runtime, tmp_path, rootfs):
    """terminal: true: the pty's master arrives on --console-socket over
    SCM_RIGHTS, as runc sends it; the process's stdio is the slave, its
    controlling terminal."""
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "tty; echo done"], parent,
                     **{"process.terminal": True})
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        _run(runc, "create", "--bundle", bundle, "--console-socket", path, "c1")
        conn, _ = server.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        assert len(fds) == 1
        master = fds[0]
        try:
            _run(runc, "start", "c1")
            data = b""
            while b"done" not in data:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(master)
        assert data.split(b"\r\n")[0] == b"/dev/pts/0"
    finally:
        server.close()
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_exec_joins_the_container(runtime, tmp_path, rootfs):
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["sleep", "60"], parent, hostname="joined")
    _run(runc, "run", "--detach", "--bundle", bundle, "c1")
    try:
        proc = tmp_path / "process.json"
        proc.write_text(json.dumps({"args": ["sh", "-c", "hostname; echo $$; exit 5"],
                                    "cwd": "/", "env": ["PATH=/bin"],
                                    "user": {"uid": 0, "gid": 0}}))
        r = _run(runc, "exec", "--process", str(proc), "c1", check=False)
        assert r.returncode == 5, r.stderr
        host, pid = r.stdout.split()
        assert host == "joined" and int(pid) > 1
        r = _run(runc, "exec", "c1", "nonexistent-command", check=False)
        assert r.returncode == 1 and "executable file not found" in r.stderr
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


@pytest.mark.parametrize("case", ["no-config", "bad-json", "no-root", "bad-namespace",
                                  "not-found", "bad-id", "duplicate", "bad-console",
                                  "bad-memory", "nul-in-args", "no-cwd"])
def test_bad_input_leaves_nothing(runtime, tmp_path, rootfs, case):
    """Each a clear error (exit 1, in the JSON log too) and nothing left:
    no state dir, cgroup or process."""
    runc, root, parent = runtime
    log = tmp_path / "log.json"
    runc = runc + ["--log", str(log), "--log-format", "json"]
    bundle = _bundle(tmp_path, rootfs, ["true"], parent)
    cid, extra = "c1", []
    with open(f"{bundle}/config.json") as f:
        spec = json.load(f)
    if case == "no-config":
        os.unlink(f"{bundle}/config.json")
        want = "config.json: no such file"
    elif case == "bad-json":
        with open(f"{bundle}/config.json", "w") as f:
            f.write("{")
        want = "config.json"
    elif case == "no-root":
        spec["root"]["path"] = str(tmp_path / "missing")
        want = "root.path"
    elif case == "bad-namespace":
        spec["linux"]["namespaces"].append({"type": "bogus"})
        want = "unknown namespace 'bogus'"
    elif case == "not-found":
        spec["process"]["args"] = ["no-such-program"]
        want = 'exec: "no-such-program": executable file not found'
    elif case == "bad-id":
        cid = "../escape"
        want = "invalid id format"
    elif case == "duplicate":
        os.makedirs(os.path.join(root, "c1"))
        want = "container with id exists: c1"
    elif case == "bad-console":
        spec["process"]["terminal"] = True
        extra = ["--console-socket", f"{bundle}/config.json"]
        want = "not a socket"
    elif case == "bad-memory":
        spec["linux"]["resources"] = {"memory": {"limit": 1000}}
        want = "memory"
    elif case == "no-cwd":          # fails the create, not the start
        spec["process"]["cwd"] = "/no/such/dir"
        want = "chdir /no/such/dir"
    elif case == "nul-in-args":     # C would cut it, and the rest move into the environment
        spec["process"]["args"] = ["sh", "-c", "echo $X", "a\0b", "X=injected"]
        want = "without NUL bytes"
    if case not in ("no-config", "bad-json"):
        with open(f"{bundle}/config.json", "w") as f:
            json.dump(spec, f)
    r = _run(runc, "create", "--bundle", bundle, *extra, cid, check=False)
    assert r.returncode == 1
    assert want in r.stderr, r.stderr
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and want in entry["msg"]
    if case == "duplicate":
        os.rmdir(os.path.join(root, "c1"))
    assert not os.path.exists(root) or os.listdir(root) == []
    _gone(root, parent, "c1")


def test_commands_on_unknown_ids(runtime):
    runc, root, parent = runtime
    for args in (["state", "nope"], ["start", "nope"], ["kill", "nope", "9"],
                 ["delete", "nope"]):
        r = _run(runc, *args, check=False)
        assert r.returncode == 1 and "container does not exist" in r.stderr, args
    assert _run(runc, "delete", "--force", "nope").returncode == 0     # the shim's cleanup
    r = _run(runc, "--version")
    assert r.stdout.startswith("isolate-runc version") and "spec: 1.0" in r.stdout


def test_attacks_from_inside_see_nothing_of_the_runtime(runtime, tmp_path, rootfs):
    """What a hostile PID 1 would go for: the runtime's state, its FIFO,
    an fd of the runtime's, the init program, a host path through /proc."""
    runc, root, parent = runtime
    script = (f"ls {root} 2>&1 | head -1; ls -l /proc/1/fd | grep -c -e exec.fifo -e socket;"
              " cat /proc/1/environ | tr '\\0' '\\n' | grep -c ISOLATE;"
              " ls /proc/1/root/ | grep -c state; readlink /proc/1/cwd")
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", script], parent, **{
        "process.env": ["PATH=/bin"]})
    code, out, err = _shim(runc, bundle)
    assert code == 0, err
    lines = out.splitlines()[1:]
    assert "No such file" in lines[0]
    assert lines[1:4] == ["0", "0", "0"]
    assert lines[4] == "/"
    _gone(root, parent, "c1")


HOOK = """#!/bin/sh
# a hook: its name and the state it was given, one line each
{{ echo "$1 $(cat)"; }} >> "{log}"
exit "${{2:-0}}"
"""


def _hooks(tmp_path, fail: str | None = None, hang: str | None = None) -> tuple[dict, str]:
    log = str(tmp_path / "hooks.log")
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK.format(log=log))
    hook.chmod(0o755)
    hooks = {}
    for name in ("prestart", "createRuntime", "poststart", "poststop"):
        entry = {"path": str(hook), "args": ["hook.sh", name, "3" if name == fail else "0"]}
        if name == hang:
            entry = {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}
        hooks[name] = [entry]
    return hooks, log


def test_hooks_run_in_order_with_the_state(runtime, tmp_path, rootfs):
    runc, root, parent = runtime
    hooks, log = _hooks(tmp_path)
    bundle = _bundle(tmp_path, rootfs, ["true"], parent, hooks=hooks)
    code, _, err = _shim(runc, bundle)
    assert code == 0, err
    with open(log) as f:
        lines = [line.split(" ", 1) for line in f.read().splitlines()]
    assert [name for name, _ in lines] == ["prestart", "createRuntime", "poststart", "poststop"]
    states = [json.loads(s) for _, s in lines]
    assert all(s["id"] == "c1" and s["bundle"] == bundle for s in states)
    assert states[0]["status"] == "created" and states[0]["pid"] > 0
    assert states[3]["status"] == "stopped"
    _gone(root, parent, "c1")


@pytest.mark.parametrize("fail,hang", [("createRuntime", None), (None, "prestart")])
def test_a_failing_or_hanging_hook_fails_create(runtime, tmp_path, rootfs, fail, hang):
    runc, root, parent = runtime
    hooks, _ = _hooks(tmp_path, fail=fail, hang=hang)
    bundle = _bundle(tmp_path, rootfs, ["true"], parent, hooks=hooks)
    r = _run(runc, "create", "--bundle", bundle, "c1", check=False)
    assert r.returncode == 1
    assert ("exit status 3" if fail else "timed out after 1 s") in r.stderr
    assert not os.path.exists(os.path.join(root, "c1"))
    _gone(root, parent, "c1")


def test_update_changes_the_limits_inside(runtime, tmp_path, rootfs):
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["sleep", "60"], parent, **{
        "linux.resources": {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}})
    _run(runc, "run", "--detach", "--bundle", bundle, "c1")
    try:
        res = tmp_path / "res.json"
        res.write_text(json.dumps({"memory": {"limit": 96 << 20}, "pids": {"limit": 20}}))
        _run(runc, "update", "--resources", str(res), "c1")
        proc = tmp_path / "p.json"
        proc.write_text(json.dumps({"args": ["sh", "-c", "cat /sys/fs/cgroup/memory/memory."
                                             "limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null"
                                             " || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"],
                                    "cwd": "/", "env": ["PATH=/bin"]}))
        r = _run(runc, "exec", "--process", str(proc), "c1")
        assert r.stdout.split() == [str(96 << 20), "20"]
        r = _run(runc, "update", "--memory", "1000", "c1", check=False)
        assert r.returncode == 1 and "memory" in r.stderr
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_sysctls_are_the_containers_own(runtime, tmp_path, rootfs):
    """A network sysctl lands in the container's network namespace, never
    the host's (whose namespace the runtime starts in)."""
    runc, root, parent = runtime
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        host_before = f.read()
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "cat /proc/sys/net/unix/max_dgram_qlen "
                                        "/proc/sys/kernel/msgmax"], parent, **{
        "linux.sysctl": {"net.unix.max_dgram_qlen": "777", "kernel.msgmax": "12345"}})
    r = _run(runc, "run", "--bundle", bundle, "c1")
    assert r.stdout.split() == ["777", "12345"]
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        assert f.read() == host_before
    _gone(root, parent, "c1")


def test_a_pid_namespace_is_joined_by_path(runtime, tmp_path, rootfs):
    """linux.namespaces pid with a path (a Kubernetes pod that shares its
    processes, `docker run --pid container:X`): the container's process is
    in that namespace, beside its first process, not PID 1 of one of its
    own."""
    runc, root, parent = runtime
    first = _bundle(tmp_path, rootfs, ["sleep", "60"], parent)
    _run(runc, "run", "--detach", "--bundle", first, "c1")
    try:
        pid = _state(runc, "c1")["pid"]
        spec = default_spec()
        ns = [n for n in spec["linux"]["namespaces"] if n["type"] != "pid"]
        ns.append({"type": "pid", "path": f"/proc/{pid}/ns/pid"})
        second = _bundle(tmp_path, rootfs, ["sh", "-c", "echo $$; cat /proc/1/cmdline"], parent,
                         cid="c2", **{"linux.namespaces": ns})
        r = _run(runc, "run", "--bundle", second, "c2")
        own, first_cmdline = r.stdout.split("\n", 1)
        assert int(own) > 1 and first_cmdline.startswith("sleep\0"), r.stdout
        _gone(root, parent, "c2")
        # a path that is no PID namespace: refused, naming it, nothing left
        ns[-1] = {"type": "pid", "path": f"/proc/{pid}/ns/net"}
        third = _bundle(tmp_path, rootfs, ["true"], parent, cid="c3", **{"linux.namespaces": ns})
        r = _run(runc, "run", "--bundle", third, "c3", check=False)
        assert r.returncode == 1 and f"/proc/{pid}/ns/net" in r.stderr, r.stderr
        _gone(root, parent, "c3")
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_a_personality_is_the_containers(runtime, tmp_path, rootfs):
    """linux.personality: LINUX32 has the container's `uname -m` say i686 on
    an x86-64 host (its own domain, not the runtime's); an unknown domain is
    refused, naming the field, leaving nothing behind."""
    runc, root, parent = runtime
    if os.uname().machine != "x86_64":
        pytest.skip("LINUX32's name for the machine is x86's")
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "uname -m; sleep 60"], parent, **{
        "linux.personality": {"domain": "LINUX32"}})
    _run(runc, "run", "--detach", "--bundle", bundle, "c1")
    try:
        # one exec'd in it too (as runc's exec gives it)
        assert _run(runc, "exec", "c1", "uname", "-m").stdout.split() == ["i686"]
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")
    bundle = _bundle(tmp_path, rootfs, ["uname", "-m"], parent, cid="c4", **{
        "linux.personality": {"domain": "LINUX32"}})
    assert _run(runc, "run", "--bundle", bundle, "c4").stdout.split() == ["i686"]
    _gone(root, parent, "c4")
    bundle = _bundle(tmp_path, rootfs, ["uname", "-m"], parent, cid="c2", **{
        "linux.personality": {"domain": "LINUX64"}})
    r = _run(runc, "run", "--bundle", bundle, "c2", check=False)
    assert r.returncode == 1 and "linux.personality.domain" in r.stderr, r.stderr
    _gone(root, parent, "c2")


def test_masked_and_readonly_paths_apply_under_mounts(runtime, tmp_path, rootfs):
    """maskedPaths and readonlyPaths under a bind of the config's own are
    masked and read-only (they are applied after the mounts, as runc does)."""
    runc, root, parent = runtime
    vol = tmp_path / "vol"
    (vol / "ro").mkdir(parents=True)
    (vol / "secret").write_text("TOPSECRET\n")
    spec = default_spec()
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "cat /mnt/secret; echo; touch /mnt/ro/x 2>&1"
                                        " | grep -c Read-only"], parent, **{
        "mounts": spec["mounts"] + [{"destination": "/mnt", "type": "bind", "source": str(vol),
                                     "options": ["rbind"]}],
        "linux.maskedPaths": spec["linux"]["maskedPaths"] + ["/mnt/secret"],
        "linux.readonlyPaths": spec["linux"]["readonlyPaths"] + ["/mnt/ro"]})
    r = _run(runc, "run", "--bundle", bundle, "c1")
    assert r.stdout.split() == ["1"]        # the secret reads empty; the write is refused
    assert not (vol / "ro" / "x").exists()
    _gone(root, parent, "c1")


def test_a_create_killed_midway_is_deleted(runtime, tmp_path, rootfs):
    """create SIGKILLed while a hook runs (the container made, its state
    written): delete --force removes the container, its cgroup and state."""
    runc, root, parent = runtime
    bundle = _bundle(tmp_path, rootfs, ["true"], parent, hooks={
        "createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"]}]})
    import tempfile
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(runc + ["create", "--bundle", bundle, "c1"], stdout=out, stderr=out,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = subprocess.run(runc + ["state", "c1"], capture_output=True, text=True)
            if st.returncode == 0 and json.loads(st.stdout)["pid"]:
                break
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert _state(runc, "c1")["status"] == "created"
    _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_exec_uses_the_config_the_container_was_made_from(runtime, tmp_path, rootfs):
    """A container that writes its bundle's config.json (its root is the
    bundle) changes nothing of what exec joins; a plain exec runs as the
    container's own process does (its user, no_new_privs)."""
    runc, root, parent = runtime
    bundle = tmp_path / "bundle-self"
    shutil.copytree(rootfs, bundle, symlinks=True)
    spec = default_spec()
    spec["process"].update(terminal=False, args=["sleep", "60"], user={"uid": 1000, "gid": 1000})
    spec["root"] = {"path": ".", "readonly": False}
    spec["linux"]["cgroupsPath"] = f"/{parent}/c1"
    (bundle / "config.json").write_text(json.dumps(spec))
    os.chmod(bundle, 0o755)
    _run(runc, "run", "--detach", "--bundle", str(bundle), "c1")
    try:
        spec["linux"]["namespaces"] = [{"type": "mount"}]      # as the container could
        (bundle / "config.json").write_text(json.dumps(spec))
        r = _run(runc, "exec", "c1", "sh", "-c", "readlink /proc/self/ns/net; id -u; "
                 "grep NoNewPrivs /proc/self/status | cut -f2")
        net, uid, nnp = r.stdout.split()
        assert net != os.readlink("/proc/self/ns/net")
        assert (uid, nnp) == ("1000", "1")
    finally:
        _run(runc, "delete", "--force", "c1")
    _gone(root, parent, "c1")


def test_preserve_fds_reach_the_process(runtime, tmp_path, rootfs):
    """--preserve-fds N: the caller's fds 3.. are the process's (socket
    activation); none other is."""
    runc, root, parent = runtime
    out = tmp_path / "out"
    bundle = _bundle(tmp_path, rootfs, ["sh", "-c", "echo from-run >&3; ls /proc/self/fd | wc -l"],
                     parent)
    import shlex
    r = subprocess.run(["sh", "-c", f'exec "$@" 3>{shlex.quote(str(out))}', "sh", *runc, "run",
                        "--preserve-fds", "1", "--bundle", bundle, "c1"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "from-run\n"
    assert r.stdout.split() == ["5"]        # 0, 1, 2, 3 and ls's own directory
    _gone(root, parent, "c1")
    # more than the caller passed: never one of the runtime's own fds
    r = subprocess.run(["sh", "-c", f'exec "$@" 3>{shlex.quote(str(out))}', "sh", *runc, "run",
                        "--preserve-fds", "3", "--bundle", bundle, "c1"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "fd 4 is not open" in r.stderr
    _gone(root, parent, "c1")


def test_masks_resolve_inside_the_root(runtime, tmp_path, fresh_rootfs):
    """A masked path reached through a symlink of the image is resolved as
    the container's own lookup would, inside its root: masked there, never
    followed to a path of the host's."""
    runc, root, parent = runtime
    os.makedirs(f"{fresh_rootfs}/srv")
    with open(f"{fresh_rootfs}/srv/secret", "w") as f:
        f.write("TOPSECRET\n")
    os.symlink("/srv", f"{fresh_rootfs}/link")
    spec = default_spec()
    bundle = _bundle(tmp_path, fresh_rootfs, ["sh", "-c", "grep -c /srv/secret /proc/self/mountinfo; cat /srv/secret; echo end"], parent,
                     **{"root.readonly": False,
                        "linux.maskedPaths": spec["linux"]["maskedPaths"] + ["/link/secret"]})
    r = _run(runc, "run", "--bundle", bundle, "c1")
    assert r.stdout.split() == ["1", "end"]     # a mount over /srv/secret, which reads empty
    _gone(root, parent, "c1")


def test_the_runtimes_json_is_the_json_packages():
    """isolate-runc reads and writes JSON without the json package (whose
    import costs milliseconds of every call an engine makes): the same text
    out, the same values in, and ValueError for what json refuses."""
    from isolate import _fastjson
    values = [{"ociVersion": "1.0.2", "id": "c1", "pid": 42, "annotations": {}, "list": [],
               "nested": [1, -2.5, 1e300, None, True, False, {"é\"\n\u2603\x00": "\U0001f600"}]},
              [], {}, "", 0, -1, 3.25, None, [[[]]], [{"a": [{}]}]]
    for v in values:
        for indent in (None, 2, "\t"):
            assert _fastjson.dumps(v, indent=indent) == json.dumps(v, indent=indent)
        assert _fastjson.loads(json.dumps(v)) == v
        assert _fastjson.loads(" \n" + json.dumps(v, indent=2) + "\n") == v
    assert _fastjson.loads(b'{"a": 1}') == {"a": 1}
    deep: list = []
    for _ in range(1200):       # deeper than Python's stack: as json does
        deep = [deep]
    try:
        expected = json.dumps(deep)     # from Python 3.12 on, its C encoder goes deeper
    except RecursionError:
        with pytest.raises(RecursionError):
            _fastjson.dumps(deep)
    else:
        assert _fastjson.dumps(deep) == expected
    for bad in ("", " ", "{", "[1,]", "1 2", "nul", '{"a" 1}', "'a'"):
        with pytest.raises(ValueError):
            _fastjson.loads(bad)
    with pytest.raises(TypeError):
        _fastjson.dumps({1: 2})
    with pytest.raises(TypeError):
        _fastjson.dumps(object())


def test_the_runtimes_hot_commands_import_little(runtime):
    """state, start, kill and delete run on every container's path, three or
    four times: they import neither json, re, enum, functools, typing nor
    subprocess (milliseconds each), nor the parts of isolate that make
    containers."""
    runc, root, parent = runtime
    code = ("import sys\nsys.path.insert(0, sys.argv[2])\nbefore = set(sys.modules)\n"
            "from isolate import runc\n"
            "for argv in (['state', 'x'], ['start', 'x'], ['kill', 'x', 'KILL'], ['delete', 'x']):\n"
            "    try:\n        runc.main(['--root', sys.argv[1]] + argv)\n"
            "    except SystemExit:\n        pass\n"
            "import isolate._cgroups\n"      # what delete of a container adds
            "heavy = ('json', 're', 'enum', 'functools', 'typing', 'subprocess',\n"
            "         'isolate._core', 'isolate._oci')\n"
            "print(sorted(m for m in heavy if m in set(sys.modules) - before))")
    import isolate
    where = os.path.dirname(os.path.dirname(isolate.__file__))
    # -S: without site, whose .pth files may import any of these themselves
    r = subprocess.run([sys.executable, "-S", "-c", code, root, where], capture_output=True,
                       text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr

"""The core as an unprivileged caller: a user namespace is made for it.

The test runs a small program as uid 65534 (setpriv) with a copy of the
installed package, since the caller's own interpreter may sit where that user
cannot read.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import isolate

from .rootfs import make_rootfs

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

PROBE = """
import isolate, json, os, signal, socket, subprocess, sys
out = {}
r = isolate.run(["sh", "-c", "id -u; cat /proc/self/uid_map; ls /sys/class/net; "
                 "tr '\\\\0' ' ' < /proc/1/cmdline; touch /etc/x 2>/dev/null || echo ro"],
                capture_output=True, text=True)
out["host_root"] = [r.returncode, r.stdout.split(), r.stderr]
shared = sys.argv[2]
with isolate.Container(rootfs=sys.argv[1], hostname="rl",
                       mounts=[isolate.Mount.bind(shared, "/data", readonly=True),
                               isolate.Mount.tmpfs("/scratch", size="1M")]) as c:
    r = c.run(["sh", "-c", "id -u; hostname; touch /x && echo wrote; ls /sys/class/net; "
               "ls -d /proc/[0-9]* | wc -l; cat /data/hello; touch /data/y 2>/dev/null || echo ro; "
               "grep CapEff /proc/self/status | cut -f2; grep NoNewPrivs /proc/self/status | cut -f2"],
              capture_output=True, text=True)
    out["container"] = [r.returncode, r.stdout.split(), r.stderr]
    try:
        c.run(["no-such-command"])
    except FileNotFoundError as e:
        out["missing"] = e.filename
    out["codes"] = [c.run(["sh", "-c", "exit 3"]).returncode,
                    c.run(["sh", "-c", "kill -9 $$"]).returncode]
    try:
        c.run(["sleep", "30"], timeout=0.3)
    except subprocess.TimeoutExpired:
        out["timeout"] = True
    out["call"] = c.call(lambda: (os.getpid(), socket.gethostname(), os.getuid()))
with isolate.Container(rootfs=sys.argv[1], readonly=True) as c:
    out["readonly"] = c.run(["touch", "/z"], capture_output=True, text=True).returncode
with isolate.Pool(size=1, rootfs=sys.argv[1]) as p:
    out["pool"] = p.call(lambda: (os.getpid(), os.getuid()))
print(json.dumps(out))
"""


def _python_for_nobody() -> str:
    """An interpreter of this version that uid 65534 can run, or skip saying why."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"]
    # it must also start itself again (a Pool starts its zygote from sys.executable)
    check = ("import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True); "
             "print(sys.version_info[:2])")
    for py in candidates:
        r = subprocess.run([*NOBODY, py, "-c", check], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == str(tuple(sys.version_info[:2])):
            return py
    pytest.skip(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that uid 65534 can run "
                f"(tried {', '.join(candidates)})")


def _userns_allowed() -> None:
    r = subprocess.run([*NOBODY, "unshare", "--user", "--map-root-user", "true"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are disabled here: {r.stderr.strip()}")


def stage(dest: str) -> tuple[str, str]:
    """Copies of isolate and cloudpickle, a busybox rootfs and a shared
    directory, all readable by uid 65534; returns (rootfs, shared)."""
    import cloudpickle
    for mod in (isolate, cloudpickle):
        shutil.copytree(os.path.dirname(mod.__file__), os.path.join(dest, mod.__name__),
                        ignore=shutil.ignore_patterns("__pycache__"))
    root = make_rootfs(os.path.join(dest, "rootfs"))
    shared = os.path.join(dest, "shared")
    os.mkdir(shared)
    for base, dirs, files in os.walk(dest):
        for name in dirs + files:
            p = os.path.join(base, name)
            if not os.path.islink(p):
                searchable = name in dirs or os.access(p, os.X_OK)
                os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | (stat.S_IXOTH if searchable else 0))
    os.chmod(shared, 0o777)
    return root, shared


@pytest.fixture()
def world_readable():
    d = tempfile.mkdtemp(prefix="isolate-rootless-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def test_unprivileged_caller_gets_a_user_namespace(world_readable):
    py = _python_for_nobody()
    _userns_allowed()
    root, shared = stage(world_readable)
    with open(os.path.join(shared, "hello"), "w") as f:
        f.write("hi\n")
    r = subprocess.run([*NOBODY, py, "-c", PROBE, root, shared], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": world_readable})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)

    code, words, err = out["host_root"]
    assert code == 0, err
    assert words[0] == "0"                          # root inside...
    assert words[1:4] == ["0", "65534", "1"]        # ...that is uid 65534 outside
    assert words[4] == "lo"                         # own network namespace
    assert words[5] == "isolate-init"               # own PID namespace
    assert words[-1] == "ro"                        # the host's root stays read-only

    code, words, err = out["container"]
    assert code == 0, err
    assert words[:4] == ["0", "rl", "wrote", "lo"]
    assert int(words[4]) <= 5
    assert words[5:] == ["hi", "ro", "00000000a80425fb", "1"]
    assert out["missing"] == "no-such-command"
    assert out["codes"] == [3, -9]
    assert out["timeout"] is True
    pid, host, uid = out["call"]
    assert 1 < pid < 20 and host == "rl" and uid == 0
    assert out["readonly"] != 0
    assert out["pool"] == [2, 0]     # the worker (PID 2: its init is PID 1), as uid 0
    assert not os.path.exists(os.path.join(root, "x"))


PROBE_MAPS = """
import isolate, json, os, sys
with isolate.Container(rootfs=sys.argv[1], mounts=[isolate.Mount.bind(sys.argv[2], "/shared")]) as c:
    r = c.run(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u"],
              capture_output=True, text=True)
    c.run(["touch", "/shared/by-user"], user="1000:1000", check=True)
print(json.dumps([r.returncode, r.stdout.split(), r.stderr]))
"""


def test_unprivileged_caller_with_subuid_ranges(world_readable):
    """newuidmap/newgidmap map /etc/subuid ranges; the files are bind-mounted
    in a private mount namespace, the host's stay as they are."""
    py = _python_for_nobody()
    _userns_allowed()
    if shutil.which("newuidmap") is None or shutil.which("unshare") is None:
        pytest.skip("newuidmap (Debian: uidmap) or unshare is not installed")
    root, shared = stage(world_readable)
    for f in ("subuid", "subgid"):
        with open(os.path.join(world_readable, f), "w") as fh:
            fh.write("nobody:200000:65536\n")
    script = (f"mount --bind {world_readable}/subuid /etc/subuid && "
              f"mount --bind {world_readable}/subgid /etc/subgid && exec " + " ".join(NOBODY) +
              ' "$0" -c "$1" "$2" "$3"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        py, PROBE_MAPS, root, shared], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": world_readable})
    assert r.returncode == 0, r.stderr
    code, words, err = json.loads(r.stdout)
    assert code == 0, err
    assert words == ["0", "65534", "1", "1", "200000", "65536",
                     "0", "65534", "1", "1", "200000", "65536", "0"]
    assert os.stat(os.path.join(shared, "by-user")).st_uid == 200999


RUNC_PROBE = """
import json, os, subprocess, sys
dest, bundle = sys.argv[1], sys.argv[2]
runc = [sys.executable, "-c", "import sys; sys.path.insert(0, %r); from isolate.runc import main; "
        "main()" % dest, "--root", os.path.join(dest, "state")]
subprocess.run(runc + ["spec", "--rootless", "--bundle", bundle], check=True)
with open(os.path.join(bundle, "config.json")) as f:
    spec = json.load(f)
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map; echo $$; exit 4"]
spec["root"]["path"] = os.path.join(dest, "rootfs")
with open(os.path.join(bundle, "config.json"), "w") as f:
    json.dump(spec, f)
r = subprocess.run(runc + ["run", "--bundle", bundle, "rl1"], capture_output=True, text=True)
left = os.listdir(os.path.join(dest, "state"))
print(json.dumps([r.returncode, r.stdout.split(), r.stderr, left]))
"""


def test_unprivileged_isolate_runc_runs_a_rootless_bundle(world_readable):
    """`isolate-runc spec --rootless` run by uid 65534: a user namespace
    mapping the caller's own id, no cgroups (none delegated), exit status."""
    py = _python_for_nobody()
    _userns_allowed()
    stage(world_readable)
    bundle = os.path.join(world_readable, "bundle")
    os.mkdir(bundle)
    os.chmod(bundle, 0o777)
    os.chmod(world_readable, 0o777)
    r = subprocess.run([*NOBODY, py, "-c", RUNC_PROBE, world_readable, bundle],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    code, words, err, left = json.loads(r.stdout)
    assert code == 4, err
    assert words == ["0", "0", "65534", "1", "1"]
    assert left == []


PROBE_IMAGE = """
import isolate, json, os, sys
[img] = isolate.load(sys.argv[1])
out = {"home": img.store}
r = isolate.run(["sh", "-c", "id -u; ls /etc/group 2>&1; ls -A /data; cat /data/new; "
                 "stat -c '%a %u' /suid /owned; ls /srv/sdz 2>&1"], image=img,
                capture_output=True, text=True)
out["run"] = [r.returncode, r.stdout.split("\\n"), r.stderr]
with isolate.Container(image=img) as c:
    c.run(["sh", "-c", "echo committed > /etc/marker; rm /etc/passwd"], check=True)
    new = c.commit("localhost/rootless:2")
r = isolate.run(["sh", "-c", "cat /etc/marker; ls /etc/passwd 2>&1; stat -c %u /etc/marker"],
                image=new, capture_output=True, text=True)
out["commit"] = [r.returncode, r.stdout.split("\\n"), r.stderr]
print(json.dumps(out))
"""


def test_unprivileged_caller_loads_runs_and_commits_an_image(world_readable, rootfs):
    """As uid 65534: a store under its own XDG data directory, layers
    unpacked without privileges (whiteouts as 0/0 nodes, opaque directories
    by user.overlay.opaque, device nodes skipped, setuid bits cleared, files
    the caller's, root inside), a container of them, and a commit."""
    from .images import build_image, entry, layer_tar, rootfs_layer
    import tarfile
    py = _python_for_nobody()
    _userns_allowed()
    stage_dir = os.path.join(world_readable, "stage")
    os.mkdir(stage_dir)
    stage(stage_dir)
    upper = layer_tar([
        entry("etc/.wh.group", b""),
        entry("data", kind=tarfile.DIRTYPE), entry("data/.wh..wh..opq", b""),
        entry("data/new", b"new\n"),
        entry("suid", b"#!/bin/sh\n", mode=0o4755),
        entry("owned", b"x", uid=1000, gid=1000),
        entry("srv/sdz", kind=tarfile.BLKTYPE, link="8:0"),
    ])
    lower = layer_tar([entry("data", kind=tarfile.DIRTYPE), entry("data/old", b"old\n")])
    archive = build_image(os.path.join(world_readable, "img.tar"),
                          [rootfs_layer(rootfs), lower, upper], name="localhost/rootless:1")
    os.chmod(archive, 0o644)
    data = os.path.join(world_readable, "xdg")
    os.mkdir(data)
    os.chown(data, 65534, 65534)
    env = {k: v for k, v in os.environ.items() if k != "ISOLATE_HOME"}
    r = subprocess.run([*NOBODY, py, "-c", PROBE_IMAGE, archive], capture_output=True,
                       text=True, timeout=120,
                       env={**env, "PYTHONPATH": stage_dir, "XDG_DATA_HOME": data,
                            "HOME": data})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["home"] == os.path.join(data, "isolate")
    code, lines, err = out["run"]
    assert lines[0] == "0", (code, err)                     # root inside
    assert "No such file" in lines[1]                       # the whiteout
    assert lines[2:4] == ["new", "new"]                     # the opaque directory
    assert lines[4:6] == ["755 0", "644 0"]                 # setuid cleared; the caller's
    assert "No such file" in lines[6]                       # the device node skipped
    code, lines, err = out["commit"]
    assert code == 0, err
    assert lines[0] == "committed" and "No such file" in lines[1] and lines[2] == "0"


NETWORK_PROBE = """
import isolate, json, subprocess, sys, time, urllib.request
from isolate import _config
rootfs = sys.argv[1]
out = {}
cfg = _config.make_config(network="bridge")
out["tool"] = cfg.network
r = isolate.run(["sh", "-c", "id -u; ip -4 -o addr show eth0; ip route | grep default"],
                network="bridge", capture_output=True, text=True)
out["run"] = [r.returncode, r.stdout.split(), r.stderr]
with isolate.Container(rootfs, network="bridge", ports={18181: 80},
                       mounts=[isolate.Mount.tmpfs("/www")]) as c:
    out["ip"] = c.ip
    p = c.spawn(["sh", "-c", "echo served > /www/index.html; exec httpd -f -p 80 -h /www"])
    end = time.monotonic() + 10
    while True:
        try:
            out["fetched"] = urllib.request.urlopen("http://127.0.0.1:18181/", timeout=2).read().decode()
            break
        except OSError as e:
            if time.monotonic() > end:
                out["fetched"] = repr(e)
                break
            time.sleep(0.05)
    p.kill()
    p.wait()
try:
    isolate.Container(network="somenet")
except isolate.NetworkError as e:
    out["named"] = str(e)
try:
    isolate.Pool(network="bridge")
except isolate.NetworkError as e:
    out["pool"] = str(e)
print(json.dumps(out))
"""

def test_an_unprivileged_caller_gets_a_user_mode_network(world_readable):
    tool = "slirp4netns"
    py = _python_for_nobody()
    _userns_allowed()
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    root, _ = stage(world_readable)
    cmd = [*NOBODY, py, "-c", NETWORK_PROBE, root]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": world_readable})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tool"] == tool
    code, words, err = out["run"]
    assert code == 0, err
    assert words[0] == "0"
    assert words[2:4] == ["eth0", "inet"] and words[4] == "10.0.2.100/24"
    assert words[words.index("default") + 2] == "10.0.2.2"
    assert out["ip"] == "10.0.2.100"
    assert out["fetched"] == "served\n"
    assert "needs root" in out["named"] and "slirp4netns" in out["named"]
    assert "a Pool cannot use network='slirp4netns'" in out["pool"]
    deadline = time.monotonic() + 5     # and the stack is gone with its container
    while subprocess.run(["pgrep", "-x", tool], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"{tool} outlived its container"
        time.sleep(0.05)

"""Hardening seen from inside: capabilities, no_new_privs, masked paths, rlimits."""
from __future__ import annotations

import os

import pytest

import isolate
from isolate import Container, Pool

DEFAULT = "00000000a80425fb"


def status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def caps_of(text: str) -> tuple[str, ...]:
    s = status(text)
    return tuple(s[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                         "NoNewPrivs"))


EXPECT = ("0000000000000000", DEFAULT, DEFAULT, DEFAULT, "0000000000000000", "1")


def read_status():
    with open("/proc/self/status") as f:
        return f.read()


def test_default_caps_for_every_kind_of_process(rootfs):
    r = isolate.run(["cat", "/proc/self/status"], rootfs=rootfs, capture_output=True, text=True)
    assert caps_of(r.stdout) == EXPECT
    with Container(rootfs=rootfs) as c:
        assert caps_of(c.run(["cat", "/proc/self/status"], capture_output=True,
                             text=True).stdout) == EXPECT
        assert caps_of(c.run(["cat", "/proc/1/status"], capture_output=True,
                             text=True).stdout) == EXPECT            # the init too
        assert caps_of(c.call(read_status)) == EXPECT
    with Pool(size=1, rootfs=rootfs) as p:
        assert caps_of(p.call(read_status)) == EXPECT


def test_unprivileged_user_has_no_effective_caps(rootfs):
    r = isolate.run(["cat", "/proc/self/status"], rootfs=rootfs, user=1000,
                    capture_output=True, text=True)
    inh, prm, eff, bnd, amb, nnp = caps_of(r.stdout)
    assert (prm, eff, bnd, nnp) == ("0000000000000000", "0000000000000000", DEFAULT, "1")


def test_cap_add_and_drop(rootfs):
    def eff(**opts):
        r = isolate.run(["cat", "/proc/self/status"], rootfs=rootfs, capture_output=True,
                        text=True, **opts)
        return int(status(r.stdout)["CapEff"], 16)
    assert eff(cap_add=["NET_ADMIN"]) == 0xa80425fb | (1 << 12)
    assert eff(cap_add=["cap_sys_admin"], cap_drop=["CAP_CHOWN"]) == (0xa80425fb | (1 << 21)) & ~1
    assert eff(cap_drop=["ALL"]) == 0
    with open("/proc/self/status") as f:
        assert eff(privileged=True) == int(status(f.read())["CapEff"], 16)


def test_unknown_capability_is_refused():
    with pytest.raises(ValueError, match="NOT_A_CAP"):
        Container(cap_add=["NOT_A_CAP"])
    with pytest.raises(TypeError):
        Container(cap_drop="CHOWN")


def test_no_mount_without_sys_admin(rootfs):
    with Container(rootfs=rootfs) as c:
        r = c.run(["sh", "-c", "mkdir -p /mnt/x; mount -t tmpfs none /mnt/x"],
                  capture_output=True, text=True)
        assert r.returncode != 0
        assert "denied" in r.stderr or "not permitted" in r.stderr


@pytest.mark.parametrize("path", ["/proc/interrupts", "/proc/timer_list", "/proc/sched_debug",
                                  "/proc/keys", "/proc/acpi", "/sys/firmware"])
def test_masked_paths_read_empty_and_refuse_writes(rootfs, path):
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this kernel")
    script = (f"if [ -d {path} ]; then ls -A {path} | wc -l; touch {path}/x 2>/dev/null && echo wrote; "
              f"else wc -c < {path}; (echo 1 > {path}) 2>/dev/null && echo wrote; fi; true")
    r = isolate.run(["sh", "-c", script], rootfs=rootfs, capture_output=True, text=True)
    assert r.stdout.split() == ["0"], (path, r.stdout, r.stderr)


def test_readonly_proc_paths(rootfs):
    r = isolate.run(["sh", "-c", "echo x > /proc/sys/kernel/hostname; echo rc=$?; "
                                 "echo 1 > /proc/sysrq-trigger; echo rc=$?"],
                    rootfs=rootfs, capture_output=True, text=True, cap_add=["SYS_ADMIN"])
    assert r.stdout.split() == ["rc=1", "rc=1"]
    assert "Read-only file system" in r.stderr


def test_privileged_has_no_masks(rootfs):
    if not os.path.exists("/proc/interrupts"):
        pytest.skip("/proc/interrupts does not exist here")
    r = isolate.run(["wc", "-c", "/proc/interrupts"], rootfs=rootfs, privileged=True,
                    capture_output=True, text=True)
    assert int(r.stdout.split()[0]) > 0


def test_rlimits(rootfs):
    r = isolate.run(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"], rootfs=rootfs,
                    rlimits={"nofile": (256, 512), "core": 0}, capture_output=True, text=True)
    assert r.stdout.split() == ["256", "512", "0"]
    with Container(rootfs=rootfs, rlimits={"nofile": (100, 100)}) as c:
        import resource
        assert c.call(resource.getrlimit, resource.RLIMIT_NOFILE) == (100, 100)


@pytest.mark.parametrize("rlimits, exc", [
    ({"nofile": (2048, 1024)}, ValueError),
    ({"no_such_limit": (1, 1)}, ValueError),
    ({"nofile": (-5, 5)}, ValueError),
    ({"nofile": "many"}, TypeError),
    ([("nofile", (1, 1))], TypeError),
])
def test_bad_rlimits(rlimits, exc):
    with pytest.raises(exc):
        Container(rlimits=rlimits)


# x86-64 syscall numbers; the probe runs inside the container through ctypes
SYSCALLS = {"keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
            "userfaultfd": 323, "io_uring_setup": 425, "kexec_load": 246, "init_module": 175,
            "reboot": 169, "swapon": 167, "acct": 163, "clock_settime": 227,
            "open_by_handle_at": 304, "mount": 165, "umount2": 166, "pivot_root": 155,
            "unshare": 272, "setns": 308}


def probe(calls):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    for name, (nr, args) in calls.items():
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        out[name] = (r, ctypes.get_errno())
    return out


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe's numbers are x86-64's")
def test_seccomp_refuses_with_eperm_and_process_lives_on(rootfs):
    import errno
    calls = {name: (nr, [0, 0, 0, 0]) for name, nr in SYSCALLS.items()}
    calls["unshare"] = (272, [0x20000000])                          # CLONE_NEWNET
    calls["clone_newuser"] = (56, [0x10000000 | 17, 0, 0, 0, 0])     # CLONE_NEWUSER|SIGCHLD
    calls["clone3"] = (435, [0, 0])
    calls["personality_aslr_off"] = (135, [0x0040000])
    calls["personality_query"] = (135, [0xffffffff])
    with Container(rootfs=rootfs) as c:
        seen = c.call(probe, calls)
        assert c.run(["true"]).returncode == 0          # ordinary programs still run
    for name in SYSCALLS:
        assert seen[name] == (-1, errno.EPERM), (name, seen[name])
    assert seen["clone_newuser"] == (-1, errno.EPERM)
    assert seen["clone3"] == (-1, errno.ENOSYS)
    assert seen["personality_aslr_off"] == (-1, errno.EPERM)
    assert seen["personality_query"][0] >= 0


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe's numbers are x86-64's")
def test_seccomp_none_and_sys_admin(rootfs):
    import errno
    calls = {"keyctl": (250, [0, 0, 0, 0]), "unshare": (272, [0x04000000])}   # CLONE_NEWUTS
    with Container(rootfs=rootfs, seccomp=None) as c:
        seen = c.call(probe, calls)
    assert seen["keyctl"][1] != errno.EPERM
    with Container(rootfs=rootfs, cap_add=["SYS_ADMIN"]) as c:
        seen = c.call(probe, calls)
    assert seen["keyctl"] == (-1, errno.EPERM)          # still refused
    assert seen["unshare"][0] == 0                      # allowed with CAP_SYS_ADMIN


def test_seccomp_option_is_checked():
    with pytest.raises(ValueError, match="seccomp"):
        Container(seccomp="strict")


def test_call_process_binary_is_out_of_reach(rootfs):
    """A call() process runs the host's Python; the rest of the container must
    not open it through /proc/PID/exe (runc CVE-2019-5736). Only reads are
    tried here."""
    import time

    def wait_here():
        with open("/tmp/pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(30)

    with Container(rootfs=rootfs) as c:
        fut = c.submit(wait_here)
        deadline = time.monotonic() + 10
        pid = ""
        while not pid and time.monotonic() < deadline:
            pid = c.run(["cat", "/tmp/pid"], capture_output=True, text=True).stdout.strip()
            time.sleep(0.05)
        r = c.run(["sh", "-c", f"head -c 4 /proc/{pid}/exe | od -c | head -1; readlink /proc/{pid}/exe"],
                  capture_output=True, text=True)
        fut.cancel()
    assert pid
    assert "ELF" not in r.stdout
    assert "Permission denied" in r.stderr


def test_cwd_outside_the_root_is_refused(tmp_path, fresh_rootfs):
    with pytest.raises(ValueError, match="/proc"):
        Container(rootfs=fresh_rootfs, cwd="/proc/self/fd/3")
    # the same through a symlink in the image and an inherited host directory fd
    host_dir = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.symlink(f"/proc/self/fd/{host_dir}", os.path.join(fresh_rootfs, "evil"))
        with Container(rootfs=fresh_rootfs) as c:
            with pytest.raises(isolate.ContainerError) as e:
                c.run(["ls"], cwd="/evil", pass_fds=[host_dir])
        assert e.value.step == "chdir"
    finally:
        os.close(host_dir)


def test_user_namespace_with_id_ranges(public_tmp):
    import pathlib

    from .rootfs import make_rootfs
    rootfs = make_rootfs(os.path.join(public_tmp, "rootfs"))
    shared = pathlib.Path(public_tmp) / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with Container(rootfs=rootfs, uid_map=[(0, 100000, 65536)], gid_map=[(0, 100000, 65536)],
                   mounts=[isolate.Mount.bind(str(shared), "/shared")]) as c:
        r = c.run(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                               "touch /shared/by-root"], capture_output=True, text=True)
        c.run(["touch", "/shared/by-user"], user="1000:1000", check=True)
        init_uid = os.stat(f"/proc/{c.pid}").st_uid
    assert r.stdout.split() == ["0", "100000", "65536", "0", "100000", "65536", "0"]
    assert init_uid == 100000                       # container root is unprivileged outside
    assert os.stat(shared / "by-root").st_uid == 100000
    assert os.stat(shared / "by-user").st_uid == 101000


@pytest.mark.parametrize("opts, exc, words", [
    ({"uid_map": [(0, 100000, 10), (5, 200000, 10)], "gid_map": [(0, 100000, 10)]}, ValueError, "overlap"),
    ({"uid_map": [(0, 100000, 10), (20, 100005, 10)], "gid_map": [(0, 100000, 10)]}, ValueError, "overlap"),
    ({"uid_map": [(0, 100000, 10)]}, ValueError, "together"),
    ({"uid_map": [(0, 100000, 0)], "gid_map": [(0, 100000, 1)]}, ValueError, "empty"),
    ({"uid_map": "0 100000 10", "gid_map": [(0, 1, 1)]}, TypeError, "uid_map"),
    ({"uid_map": [(0, 100000, 10)], "gid_map": [(0, 100000, 10)], "user": "50:0"}, ValueError, "outside"),
    ({"uid_map": [(0, 100000, 10)], "gid_map": [(0, 100000, 10)], "namespaces": ["pid"]}, ValueError, "'user'"),
])
def test_bad_id_maps(opts, exc, words):
    with pytest.raises(exc, match=words):
        Container(**opts)


def test_disabled_user_namespaces_say_which_setting(rootfs):
    path = "/proc/sys/user/max_user_namespaces"
    with open(path) as f:
        saved = f.read()
    if not os.access(path, os.W_OK):
        pytest.skip(f"{path} cannot be changed here to see the error")
    try:
        with open(path, "w") as f:
            f.write("0")
        with pytest.raises(isolate.NamespaceError) as e:
            Container(rootfs=rootfs, namespaces={"user", "mount", "pid"}).start()
        assert "user.max_user_namespaces" in str(e.value)
    finally:
        with open(path, "w") as f:
            f.write(saved)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe's numbers are x86-64's")
def test_seccomp_profile_in_oci_json(tmp_path, rootfs):
    import errno
    import json
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["keyctl", "add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 0x0040000, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["bpf"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    calls = {"keyctl": (250, [0, 0, 0, 0]), "aslr_off": (135, [0x0040000]),
             "linux": (135, [0]), "bpf": (321, [0, 0, 0])}
    for source in (profile, str(path)):
        with Container(rootfs=rootfs, seccomp=source) as c:
            seen = c.call(probe, calls)
        assert seen["keyctl"] == (-1, errno.EACCES)
        assert seen["aslr_off"] == (-1, errno.EPERM)
        assert seen["linux"][0] >= 0
        assert seen["bpf"] == (-1, errno.EPERM)


@pytest.mark.parametrize("profile, words", [
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "unknown action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}, "names no"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0}]}]}, "args"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "keyctl"}, "list"),
    ("/no/such/profile.json", "profile"),
])
def test_malformed_seccomp_profile(profile, words):
    with pytest.raises(ValueError, match=words):
        Container(seccomp=profile)


def test_init_binary_cannot_be_written(rootfs):
    """The init runs from a sealed memfd: nothing inside can change what the
    next container's PID 1 runs."""
    with Container(rootfs=rootfs, cap_add=["SYS_PTRACE"]) as c:
        r = c.run(["sh", "-c", "echo x >> /proc/1/exe; echo rc=$?"], capture_output=True,
                  text=True)
    assert r.stdout.strip() == "rc=1"
    assert r.stderr


@pytest.mark.parametrize("name", ["proc", "sys", "dev"])
def test_symlinked_special_dirs_are_refused(tmp_path, name):
    root = tmp_path / "root"
    for d in ("proc", "sys", "dev"):
        if d != name:
            (root / d).mkdir(parents=True)
    os.symlink("/", root / name)
    with pytest.raises(ValueError, match=f"/{name} is a symlink"):
        Container(rootfs=str(root))


def test_userns_true_for_root(rootfs):
    with open("/etc/subuid") as f:
        if f.read().strip():
            pytest.skip("/etc/subuid has entries here; this checks the fallback")
    with Container(rootfs=rootfs, userns=True) as c:
        out = c.run(["sh", "-c", "cat /proc/self/uid_map; readlink /proc/self/ns/user"],
                    capture_output=True, text=True).stdout.split()
    assert out[:3] == ["0", str(os.geteuid()), "1"]
    assert out[3] != os.readlink("/proc/self/ns/user")

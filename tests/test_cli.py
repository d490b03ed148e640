"""The isolate command, run as a process: exit codes, output, options, errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


def isolate(*args, **kw):
    return subprocess.run([sys.executable, "-m", "isolate", *args], capture_output=True,
                          text=True, timeout=60, **kw)


def test_run_output_and_exit_code(rootfs):
    r = isolate("run", "--rootfs", rootfs, "--hostname", "cli", "--", "sh", "-c",
                "hostname; ls /sys/class/net; echo err >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout.split() == ["cli", "lo"]
    assert r.stderr == "err\n"


def test_signal_gives_128_plus_n(rootfs):
    assert isolate("run", "--rootfs", rootfs, "--", "sh", "-c", "kill -9 $$").returncode == 137


def test_missing_and_unrunnable_command(rootfs):
    r = isolate("run", "--rootfs", rootfs, "--", "no-such-command")
    assert r.returncode == 127
    assert "no-such-command: command not found" in r.stderr
    r = isolate("run", "--rootfs", rootfs, "--", "/etc/passwd")
    assert r.returncode == 126


def test_setup_error_is_125_and_one_line(rootfs, tmp_path):
    (tmp_path / "f").write_text("x")        # a file cannot be bound over a directory
    r = isolate("run", "--rootfs", rootfs, "--readonly", "--mount", f"{tmp_path / 'f'}:/etc",
                "--", "true")
    assert r.returncode == 125
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bind mount /etc" in lines[0]


@pytest.mark.parametrize("args", [
    ["run", "--rootfs", "/no/such/dir", "--", "true"],
    ["run", "--network", "no such network", "--", "true"],
    ["run", "--mount", "nonsense", "--", "true"],
    ["run", "--tmpfs", "/x:12Q", "--", "true"],
    ["run", "--cap-add", "NOT_A_CAP", "--", "true"],
    ["run", "--cpus", "99999", "--", "true"],
    ["run", "--memory", "lots", "--", "true"],
    ["run", "--no-such-option", "--", "true"],
    ["run"],
    ["frobnicate"],
])
def test_bad_usage_is_125(args):
    r = isolate(*args)
    assert r.returncode == 125, r.stderr
    assert r.stderr


def test_options_mean_what_the_keywords_mean(tmp_path, rootfs):
    (tmp_path / "f").write_text("hello\n")
    os.chmod(tmp_path, 0o755)           # user 1000 reads it inside
    r = isolate("run", "--rootfs", rootfs, "--mount", f"{tmp_path}:/data:ro", "--tmpfs",
                "/scratch:1M", "-e", "A=1", "-e", "PATH=/bin", "-u", "1000:100", "-w", "/data",
                "--", "sh", "-c", "cat f; echo $A $(id -u) $(id -g) $(pwd); "
                "touch x 2>/dev/null || echo ro; grep -c ' /scratch ' /proc/mounts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["hello", "1 1000 100 /data", "ro", "1"]
    r = isolate("run", "--rootfs", rootfs, "--cap-drop", "ALL", "--", "grep", "CapEff",
                "/proc/self/status")
    assert r.stdout.split() == ["CapEff:", "0000000000000000"]


def test_stdin_passes_through(rootfs):
    r = isolate("run", "--rootfs", rootfs, "--", "tr", "a-z", "A-Z", input="shout\n")
    assert r.stdout == "SHOUT\n"


def test_help_lists_every_option():
    r = isolate("run", "--help")
    assert r.returncode == 0
    for opt in ("--rootfs", "--readonly", "--memory", "--cpus", "--pids", "--network", "--mount", "--tmpfs", "--env", "--user",
                "--hostname", "--workdir", "--cap-add", "--cap-drop", "--privileged",
                "--seccomp"):
        assert opt in r.stdout


def test_version():
    r = isolate("version")
    assert r.returncode == 0
    assert r.stdout.startswith("isolate ")
    assert "cgroups:" in r.stdout and "kernel: Linux" in r.stdout


def test_limits(rootfs):
    from isolate import _cgroups
    if _cgroups.layout() is None:
        pytest.skip("no cgroups here")
    r = isolate("run", "--rootfs", rootfs, "--memory", "50M", "--", "sh", "-c",
                "head -c 100000000 /dev/zero | tail > /dev/null")
    assert r.returncode == 137                  # the OOM killer's SIGKILL, as 128+9
    r = isolate("run", "--rootfs", rootfs, "--pids", "16", "--cpus", "0.5", "--cpuset", "0", "--",
                "grep", "Cpus_allowed_list", "/proc/self/status")
    assert r.returncode == 0 and r.stdout.split()[-1] == "0"


def _read_until(fd, marker, timeout=10.0):
    import select
    import time
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {marker!r} in {out!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"end of output before {marker!r}: {out!r}")
        out += chunk
    return out


def test_interactive_tty(rootfs):
    """-it through a real pty: a /dev/pts of the container's own, a resize
    that reaches the shell inside, ^C to the foreground job, job control."""
    import fcntl
    import pty
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PS1"] = "$ "
        os.execv(sys.executable, [sys.executable, "-m", "isolate", "run", "-it", "--rootfs",
                                  rootfs, "--env", "PS1=# ", "--env", "PATH=/bin", "--", "sh"])
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        _read_until(fd, b"# ")
        os.write(fd, b"tty; stty size\n")
        out = _read_until(fd, b"# ")
        assert b"/dev/pts/0" in out
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 42, 123, 0, 0))
        os.kill(pid, 28)            # SIGWINCH, as the terminal would send it
        import time
        time.sleep(0.3)
        os.write(fd, b"stty size\n")
        assert b"42 123" in _read_until(fd, b"42 123")
        os.write(fd, b"sleep 100\n")
        time.sleep(0.5)
        os.write(fd, b"\x03")       # ^C: the sleep dies, the shell lives on
        os.write(fd, b"echo status=$?\n")
        assert b"status=130" in _read_until(fd, b"status=130")
        os.write(fd, b"sleep 100 &\njobs\n")
        assert b"sleep 100" in _read_until(fd, b"Running")
        os.write(fd, b"exit 3\n")        # the background sleep holds the terminal still
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_devices_and_storage_size(rootfs):
    r = isolate("run", "--rootfs", rootfs, "--device", "/dev/zero:/dev/z", "--storage-size", "8M",
                "--", "sh", "-c", "head -c 3 /dev/z | wc -c; df -k /tmp | tail -1")
    assert r.returncode == 0, r.stderr
    count, df = r.stdout.splitlines()
    assert count.strip() == "3"
    assert int(df.split()[1]) == 8192
    r = isolate("run", "--device", "/etc/passwd", "--", "true")
    assert r.returncode == 125 and "device" in r.stderr

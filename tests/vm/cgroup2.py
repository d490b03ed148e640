"""Run tests in a small QEMU guest with pure cgroup v2 and every controller.

    python3 tests/vm/cgroup2.py [PYTEST ARGS...]      (default: tests/test_limits.py)

The guest is Debian's kernel (linux-image-amd64) under qemu-system-x86's
software emulation (TCG: no KVM needed), booted from a tiny initramfs of
busybox and the 9p modules. The host's root is shared read-only as the
guest's root, the project read-write at its own path, so the guest runs
the same Python (this one) and the same installed isolate. In the guest, cgroup2 is
mounted at /sys/fs/cgroup and pytest runs there; this script prints the
guest's console and exits with pytest's exit code.
"""
from __future__ import annotations

import glob
import io
import os
import queue
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = ("9p", "9pnet_virtio", "virtio_pci", "loop")
EXIT_MARK = "isolate-vm-exit="
STALL = 240         # seconds without output (but the kernel's log): the guest is stopped
KERNEL_LINE = re.compile(rb"^\[ *\d+\.\d+\][^\n]*$", re.M)
ATTEMPTS = 2        # boots, when one stalls

INIT = """#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules); do $B insmod /lib/$m.ko || echo "insmod $m failed"; done
$B mkdir -p /root
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /root
$B mount -t tmpfs tmpfs /root/tmp
$B mkdir -p /root{project}
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 project /root{project}
$B mount -t 9p -o trans=virtio,version=9p2000.L ctl /root/run
$B mount --move /dev /root/dev
$B umount /proc
exec $B switch_root /root /bin/sh /run/stage2
"""

STAGE2 = """
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ip link set lo up 2>/dev/null
echo "guest: $(uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
cd {project}
PYTHONDONTWRITEBYTECODE=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \\
    {python} -m pytest -p no:cacheprovider --color=no -o faulthandler_timeout=120 {args}
echo {mark}$?
busybox poweroff -f
"""


def kernel() -> tuple[str, str]:
    """The newest Debian kernel in /boot and its modules directory."""
    found = sorted(glob.glob("/boot/vmlinuz-*"))
    for image in reversed(found):
        version = image.split("vmlinuz-", 1)[1]
        if os.path.exists(f"/lib/modules/{version}/modules.dep"):
            return image, f"/lib/modules/{version}"
    raise SystemExit("no kernel with modules in /boot: apt-get install linux-image-amd64")


def module_order(moddir: str, wanted: tuple[str, ...]) -> list[str]:
    """Module files of wanted and what they need, dependencies first."""
    deps: dict[str, list[str]] = {}
    with open(f"{moddir}/modules.dep") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
    by_name = {os.path.basename(p)[:-3].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def load(path: str) -> None:
        for d in deps[path]:
            load(d)
        if path not in order:
            order.append(path)
    for name in wanted:
        if name in by_name:           # else built in
            load(by_name[name])
    return order


def cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data) entries."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out.write(b"070701" + b"".join(b"%08X" % v for v in fields))
        out.write(name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def initramfs(moddir: str) -> bytes:
    busybox = shutil.which("busybox") or "/bin/busybox"
    with open(busybox, "rb") as f:
        bb = f.read()
    entries = [(d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "dev", "proc", "lib", "root")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, bb))
    names = []
    for path in module_order(moddir, MODULES):
        name = os.path.basename(path)[:-3]
        with open(f"{moddir}/{path}", "rb") as f:
            entries.append((f"lib/{name}.ko", stat.S_IFREG | 0o644, f.read()))
        names.append(name)
    entries.append(("modules", stat.S_IFREG | 0o644, " ".join(names).encode()))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.format(project=PROJECT).encode()))
    return cpio(entries)


def main(argv: list[str]) -> int:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise SystemExit("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    image, moddir = kernel()
    args = " ".join(map(_quote, argv or ["-q", "tests/test_limits.py"]))
    with tempfile.TemporaryDirectory(prefix="isolate-vm-") as ctl:
        with open(f"{ctl}/initrd", "wb") as f:
            f.write(initramfs(moddir))
        with open(f"{ctl}/stage2", "w") as f:
            f.write(STAGE2.format(project=PROJECT, args=args, mark=EXIT_MARK,
                                  python=sys.executable))
        cmd = [qemu, "-accel", "tcg", "-m", "2048", "-smp", "2", "-nographic", "-no-reboot",
               "-nodefaults", "-serial", "stdio", "-kernel", image, "-initrd", f"{ctl}/initrd",
               "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
               "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
               "-virtfs", f"local,path={PROJECT},mount_tag=project,security_model=none",
               "-virtfs", f"local,path={ctl},mount_tag=ctl,security_model=none"]
        for attempt in range(ATTEMPTS):
            code, stalled = boot(cmd)
            if not stalled:
                break
            print(f"\nthe guest printed nothing for {STALL} s (its emulated CPUs starved on a "
                  f"busy host, or a test hung: see any traceback above); "
                  + ("booting it again" if attempt + 1 < ATTEMPTS else "giving up"))
    if code is None:
        print("the guest ended without a pytest exit code")
        return 1
    return code


def boot(cmd: list[str]) -> tuple[int | None, bool]:
    """Run the guest, printing its console: (pytest's exit code, or None;
    whether it was stopped for printing nothing for STALL seconds)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    chunks: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            chunks.put(chunk)
        chunks.put(None)
    threading.Thread(target=read, daemon=True).start()
    console = b""
    progress = time.monotonic()     # the last output but the kernel's own log lines
    while True:
        try:
            chunk = chunks.get(timeout=max(0.0, progress + STALL - time.monotonic()))
        except queue.Empty:
            chunk = b""
        if chunk is None:
            break
        if time.monotonic() - progress > STALL:
            proc.kill()
            proc.wait()
            return None, True
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
        console = console[-4096:] + chunk
        # a guest whose CPUs starve keeps printing the kernel's stall reports
        if KERNEL_LINE.sub(b"", chunk).strip():
            progress = time.monotonic()
    proc.wait()
    marks = re.findall(rb"^" + EXIT_MARK.encode() + rb"(\d+)", console, re.M)
    return (int(marks[-1]) if marks else None), False


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

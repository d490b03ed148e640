"""A busybox root filesystem for tests and benchmarks, built from Debian's busybox-static."""
from __future__ import annotations

import os
import shutil
import subprocess

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def make_rootfs(root: str) -> str:
    """Fill root with /bin (every busybox applet), /etc/passwd and /etc/group; returns root."""
    if not os.path.exists(BUSYBOX):
        raise RuntimeError("busybox is missing: apt-get install busybox-static (see README)")
    with open(BUSYBOX, "rb") as f:
        head = f.read(4096)
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        raise RuntimeError(f"{BUSYBOX} is dynamically linked: install busybox-static")
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "home/user", "data"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", a))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\nusers:x:100:\nuser:x:1000:\n")
    with open(os.path.join(root, "etc", "hostname"), "w") as f:
        f.write("image\n")
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    return root

"""The founding experiment of containers, redone: boot 15 instances one after
another, each running a small service that answers on its own loopback, and
record the time until each answers and the host memory added.

    python3 bench/boot15.py [--n 15] [--kinds isolate,crun,runc,vm] [--rootfs DIR]

Kinds: isolate containers, crun and runc (OCI bundles of the same busybox
root), and QEMU virtual machines (Debian's kernel, a busybox initramfs; TCG,
QEMU's software emulation: /dev/kvm on this VM is paravirtual, and unusable
for speed). The service is busybox `nc -ll -p 8000 -e echo ready`; an instance
is ready when `nc 127.0.0.1 8000` run in its network namespace reads "ready"
(a VM checks itself and prints a marker on its console). Instances stay up
until the last is ready; the memory is MemAvailable's drop since the start.

With --network (kinds isolate-net, crun-net, runc-net), each instance serves
HTTP (busybox httpd) on its own address of one bridge, an isolate.Network: an
isolate container publishes its port 80 on host port 18500+i and is ready
when the host fetches its page from 127.0.0.1 there; crun and runc, which
publish nothing themselves (an engine does that), join the same bridge
through a network namespace and veth the benchmark makes (`ip netns`), and
are fetched at their address, and so are QEMU guests, whose virtio NIC is
a tap device on the bridge (the initramfs carries the kernel's virtio_net
module and what it needs).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
SERVICE = ["nc", "-ll", "-p", "8000", "-e", "echo", "ready"]
MARKER = "BOOT15-READY"


def available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def cgroup_memory_kib(pid: int) -> float:
    """What the memory cgroup of process pid accounts for, in KiB (cgroup v1
    memory.usage_in_bytes, v2 memory.current): the container's own, where
    its runtime gave it one."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            with open(f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes") as f:
                return int(f.read()) / 1024
    for hid, _, path in lines:
        if hid == "0":
            with open(f"/sys/fs/cgroup{path}/memory.current") as f:
                return int(f.read()) / 1024
    raise LookupError(f"process {pid} has no memory cgroup")


def _poll(check: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the instance's service never answered")
        time.sleep(0.002)


class Isolate:
    name = "isolate"

    def __init__(self, rootfs: str, workdir: str):
        from isolate import Container
        self.Container = Container
        self.rootfs = rootfs
        self.held: list[Any] = []

    def start(self, i: int) -> None:
        c = self.Container(rootfs=self.rootfs).start()
        self.held.append(c)
        c.spawn(SERVICE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = ["nc", "-w", "1", "127.0.0.1", "8000"]
        _poll(lambda: c.run(probe, stdin=subprocess.DEVNULL, capture_output=True).stdout
              == b"ready\n")

    def stop(self) -> None:
        for c in self.held:
            c.close()


HTTP = ["sh", "-c", "mkdir -p /tmp/www && echo ready > /tmp/www/index.html && "
        "exec httpd -f -p 80 -h /tmp/www"]
SUBNET, PORT0 = "10.89.150.0/24", 18500


def _serves(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.read() == b"ready\n"
    except OSError:
        return False


class IsolateNet:
    name = "isolate (network, published port)"

    def __init__(self, rootfs: str, workdir: str, net: Any):
        from isolate import Container
        self.Container = Container
        self.rootfs, self.net = rootfs, net
        self.held: list[Any] = []

    def start(self, i: int) -> None:
        c = self.Container(rootfs=self.rootfs, network=self.net, hostname=f"web{i}",
                           ports={PORT0 + i: 80}).start()
        self.held.append(c)
        c.spawn(HTTP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _poll(lambda: _serves(f"http://127.0.0.1:{PORT0 + i}/"))

    def stop(self) -> None:
        for c in self.held:
            c.close()


class OCI:
    def __init__(self, tool: str, rootfs: str, workdir: str, args: list[str] = SERVICE):
        self.name = tool
        self.tool = shutil.which(tool)
        if self.tool is None:
            raise LookupError(f"{tool} is not installed (apt-get install {tool})")
        self.bundle = os.path.join(workdir, f"bundle-{tool}")
        shutil.copytree(rootfs, f"{self.bundle}/rootfs", symlinks=True)
        subprocess.run([self.tool, "spec"], cwd=self.bundle, check=True)
        with open(f"{self.bundle}/config.json") as f:
            spec = json.load(f)
        spec["process"]["args"] = args
        spec["process"]["terminal"] = False
        spec["root"]["readonly"] = False
        with open(f"{self.bundle}/config.json", "w") as f:
            json.dump(spec, f)
        # crun refuses this hybrid cgroup layout unless the v2 mount is hidden from it
        self.wrap: list[str] = []
        if tool == "crun" and os.path.ismount("/sys/fs/cgroup/unified"):
            self.wrap = ["unshare", "-m", "sh", "-c",
                         'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@"']
        self.names: list[str] = []
        self.pids: list[int] = []

    def launch(self, i: int) -> str:
        """Start instance i detached; its name (its pid goes to self.pids)."""
        name = f"boot15-{os.getpid()}-{i}"
        self.names.append(name)
        pidfile = f"{self.bundle}.{i}.pid"
        subprocess.run([*self.wrap, self.tool, "run", "-d", "--pid-file", pidfile, "-b",
                        self.bundle, name],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(pidfile) as f:
            self.pids.append(int(f.read()))
        os.unlink(pidfile)
        return name

    def start(self, i: int) -> None:
        name = self.launch(i)
        state = json.loads(subprocess.run([*self.wrap, self.tool, "state", name],
                                          capture_output=True, check=True).stdout)
        probe = ["nsenter", "-t", str(state["pid"]), "-n", "busybox", "nc", "-w", "1",
                 "127.0.0.1", "8000"]
        _poll(lambda: subprocess.run(probe, stdin=subprocess.DEVNULL,
                                     capture_output=True).stdout == b"ready\n")

    def stop(self) -> None:
        """Delete every instance, several at a time (one by one, a thousand
        take minutes)."""
        import concurrent.futures

        def delete(name: str) -> None:
            subprocess.run([*self.wrap, self.tool, "delete", "-f", name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(delete, self.names))


class OCINet(OCI):
    """crun or runc on the network's bridge: each instance in a network
    namespace the benchmark makes (held by a sleeping process of its own), with
    a veth whose other end is a port of the bridge (the config has no network
    namespace of its own: the runtime runs in that one)."""

    def __init__(self, tool: str, rootfs: str, workdir: str, net: Any):
        super().__init__(tool, rootfs, workdir, HTTP)
        self.name = f"{tool} (network, by address)"
        self.net = net
        with open(f"{self.bundle}/config.json") as f:
            spec = json.load(f)
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                       if ns["type"] != "network"]
        with open(f"{self.bundle}/config.json", "w") as f:
            json.dump(spec, f)
        self.holders: list[subprocess.Popen] = []

    def start(self, i: int) -> None:
        holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.holders.append(holder)
        pid, address = holder.pid, self.net.subnet[100 + i]
        _poll(lambda: os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"))
        inside = f"nsenter -t {pid} -n"
        sh = (f"ip link add b15h{i} type veth peer name eth0 netns {pid} && "
              f"ip link set b15h{i} master {self.net.bridge} up && "
              f"{inside} ip addr add {address}/{self.net.subnet.prefixlen} dev eth0 && "
              f"{inside} ip link set eth0 up && {inside} ip link set lo up && "
              f"{inside} ip route add default via {self.net.gateway}")
        subprocess.run(["sh", "-c", sh], check=True)
        wrap, self.wrap = self.wrap, ["nsenter", "-t", str(pid), "-n", *self.wrap]
        try:
            self.launch(i)
        finally:
            self.wrap = wrap
        _poll(lambda: _serves(f"http://{address}/"))

    def stop(self) -> None:
        super().stop()
        for holder in self.holders:     # the namespace, and its veth, go with it
            holder.kill()
            holder.wait()


VM_INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
{' '.join(SERVICE)} &
until [ "$(nc -w 1 127.0.0.1 8000 </dev/null 2>/dev/null)" = ready ]; do usleep 20000; done
echo {MARKER}
exec sleep 100000
"""


VM_NET_INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/$m.ko; done
arg() {{ sed -n "s/.*boot15\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }}
ip link set lo up
ip addr add $(arg ip) dev eth0
ip link set eth0 up
ip route add default via $(arg gw)
mkdir -p /tmp/www && echo ready > /tmp/www/index.html
httpd -p 80 -h /tmp/www
echo {MARKER}
exec sleep 100000
"""


class VM:
    name = "qemu-vm (TCG)"
    init = VM_INIT
    modules: tuple[str, ...] = ()

    def __init__(self, rootfs: str, workdir: str):
        self.qemu = shutil.which("qemu-system-x86_64")
        kernels = [k for k in sorted(glob.glob("/boot/vmlinuz-*"))
                   if os.path.exists(f"/lib/modules/{k.split('vmlinuz-', 1)[1]}/modules.dep")]
        if self.qemu is None or not kernels:
            raise LookupError("qemu-system-x86_64 or a kernel is missing "
                              "(apt-get install qemu-system-x86 linux-image-amd64)")
        self.kernel = kernels[-1]
        moddir = f"/lib/modules/{self.kernel.split('vmlinuz-', 1)[1]}"
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "vm"))
        from cgroup2 import cpio, module_order  # the v2 test guest's newc writer
        with open(shutil.which("busybox") or "/bin/busybox", "rb") as f:
            bb = f.read()
        entries = [(d, 0o40755, b"") for d in ("bin", "dev", "proc", "sys", "tmp", "lib")]
        entries += [("bin/busybox", 0o100755, bb), ("init", 0o100755, self.init.encode())]
        names = []
        for path in module_order(moddir, self.modules):
            name = os.path.basename(path)[:-3]
            with open(f"{moddir}/{path}", "rb") as f:
                entries.append((f"lib/{name}.ko", 0o100644, f.read()))
            names.append(name)
        entries.append(("modules", 0o100644, " ".join(names).encode()))
        self.initrd = os.path.join(workdir, f"boot15-initrd-{type(self).__name__}")
        with open(self.initrd, "wb") as f:
            f.write(cpio(entries))
        self.procs: list[subprocess.Popen] = []

    def qemu_args(self, i: int) -> list[str]:
        return ["-append", "console=ttyS0 quiet panic=-1"]

    def start(self, i: int) -> None:
        p = subprocess.Popen([self.qemu, "-accel", "tcg,tb-size=32", "-m", "128", "-smp", "1",
                              "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
                              "-kernel", self.kernel, "-initrd", self.initrd,
                              *self.qemu_args(i)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        self.procs.append(p)
        assert p.stdout is not None
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 180
        seen = ""
        while MARKER not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"VM {i} did not answer within 180 s: ...{seen[-500:]}")
            data = os.read(p.stdout.fileno(), 65536).decode(errors="replace")
            if not data:
                raise RuntimeError(f"VM {i} ended before its service answered: ...{seen[-500:]}")
            seen = seen[-1000:] + data

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


class VMNet(VM):
    """QEMU guests on the network's bridge: each one's virtio NIC is a tap
    device the benchmark makes and attaches to the bridge, its address comes
    on its kernel command line, and it serves HTTP with busybox httpd; it is
    fetched at its address, as crun and runc are. The Debian kernel's network
    drivers are modules: the initramfs carries them."""
    name = "qemu-vm (TCG, network, by address)"
    init = VM_NET_INIT
    modules = ("virtio_pci", "virtio_net")

    def __init__(self, rootfs: str, workdir: str, net: Any):
        super().__init__(rootfs, workdir)
        self.net = net
        self.taps: list[str] = []

    def address(self, i: int) -> Any:
        return self.net.subnet[200 + i]

    def qemu_args(self, i: int) -> list[str]:
        tap = f"b15v{os.getpid() % 10000}x{i}"
        subprocess.run(["sh", "-c", f"ip tuntap add dev {tap} mode tap && "
                                    f"ip link set {tap} master {self.net.bridge} up"], check=True)
        self.taps.append(tap)
        return ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:89:{i // 256:02x}:{i % 256:02x}",
                "-append", f"console=ttyS0 quiet panic=-1 "
                           f"boot15.ip={self.address(i)}/{self.net.subnet.prefixlen} "
                           f"boot15.gw={self.net.gateway}"]

    def start(self, i: int) -> None:
        super().start(i)
        _poll(lambda: _serves(f"http://{self.address(i)}/"))

    def stop(self) -> None:
        super().stop()
        for tap in self.taps:
            subprocess.run(["ip", "link", "del", tap], stderr=subprocess.DEVNULL)


def run(kinds: list[str], n: int, rootfs: str) -> list[dict[str, Any]]:
    """Per kind: the seconds until each instance answered, and MiB added."""
    results = []
    net = None
    if any(kind.endswith("-net") for kind in kinds):
        import isolate
        net = isolate.Network(f"boot15-{os.getpid()}", subnet=SUBNET)
    with tempfile.TemporaryDirectory(prefix="boot15-") as work:
        for kind in kinds:
            try:
                maker = {"isolate": lambda: Isolate(rootfs, work),
                         "crun": lambda: OCI("crun", rootfs, work),
                         "runc": lambda: OCI("runc", rootfs, work),
                         "vm": lambda: VM(rootfs, work),
                         "isolate-net": lambda: IsolateNet(rootfs, work, net),
                         "crun-net": lambda: OCINet("crun", rootfs, work, net),
                         "runc-net": lambda: OCINet("runc", rootfs, work, net),
                         "vm-net": lambda: VMNet(rootfs, work, net)}[kind]()
            except LookupError as e:
                results.append({"kind": kind, "skipped": str(e)})
                continue
            base = available_kib()
            t0 = time.monotonic()
            ready, memory = [], []
            try:
                for i in range(n):
                    maker.start(i)
                    ready.append(time.monotonic() - t0)
                    memory.append((base - available_kib()) / 1024)
                time.sleep(0.5)
                final = (base - available_kib()) / 1024
            finally:
                maker.stop()
            results.append({"kind": maker.name, "ready_s": ready, "mib": memory,
                            "final_mib": final})
    if net is not None:
        net.close()
    return results


def table(results: list[dict[str, Any]], n: int, network: bool = False) -> str:
    what = ("each serving HTTP on its own address of one network" if network
            else "each serving on its loopback")
    lines = [f"### {n} instances booted one after another, {what}", "",
             "| kind | all ready, s | per instance, s | host MiB per instance |",
             "|---|---:|---:|---:|"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['kind']} | skipped: {r['skipped']} | | |")
            continue
        total = r["ready_s"][-1]
        lines.append(f"| {r['kind']} | {total:.2f} | {total / n:.3f} | {r['final_mib'] / n:.1f} |")
    lines += ["", "Time until each instance answered (s, from the first start):", ""]
    for r in results:
        if "ready_s" in r:
            lines.append(f"- {r['kind']}: " + ", ".join(f"{t:.2f}" for t in r["ready_s"]))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--kinds", default="isolate,crun,runc,vm")
    ap.add_argument("--rootfs", default=None, help="a busybox root (default: made here)")
    ap.add_argument("--network", action="store_true",
                    help="the network variant: kinds isolate-net,crun-net,runc-net,vm-net")
    args = ap.parse_args()
    if args.network and args.kinds == ap.get_default("kinds"):
        args.kinds = "isolate-net,crun-net,runc-net,vm-net"
    rootfs = args.rootfs
    with tempfile.TemporaryDirectory(prefix="boot15-root-") as d:
        if rootfs is None:
            from tests.rootfs import make_rootfs
            rootfs = make_rootfs(d)
        print(table(run(args.kinds.split(","), args.n, rootfs), args.n, args.network))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark fixtures: the busybox rootfs, OCI bundles for runc and crun, the C floor.

Run everything with:  python3 -m pytest bench/ --results bench/RESULTS.md
The tools compared against are installed first where missing (apt-get, as
root; --no-install to leave the machine as it is); a row whose tool is still
missing is skipped, saying which.
"""
from __future__ import annotations

import ctypes
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tests.rootfs import make_rootfs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_addoption(parser):
    g = parser.getgroup("isolate benchmarks")
    g.addoption("--rounds", type=int, default=300, help="timed rounds per benchmark")
    g.addoption("--quick", action="store_true",
                help="a smoke run for CI: 30 rounds, small counts, the biggest rows left out")
    g.addoption("--results", default=None, help="write the summary table to this markdown file")
    g.addoption("--no-install", action="store_true",
                help="do not install the tools compared against (their rows are skipped)")


#: what the benchmarks compare against: a command (or a file pattern), and the
#: Debian package that brings it
COMPARED = (("bwrap", "bubblewrap"), ("crun", "crun"), ("runc", "runc"),
            ("unshare", "util-linux"), ("nsenter", "util-linux"),
            ("qemu-system-x86_64", "qemu-system-x86"), ("/boot/vmlinuz-*", "linux-image-amd64"),
            ("skopeo", "skopeo"), ("umoci", "umoci"), ("docker-registry", "docker-registry"))


def missing_packages() -> list[str]:
    found = (glob.glob(what) if what.startswith("/") else shutil.which(what)
             for what, _ in COMPARED)
    return sorted({pkg for (_, pkg), ok in zip(COMPARED, found) if not ok})


def _install(packages: list[str]) -> str:
    """apt-get install packages; what happened, in a line for the results."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"not installed (needs root and apt-get): {', '.join(packages)}"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:       # perhaps stale package lists
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not install {', '.join(packages)}: {e}"
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        return f"could not install {', '.join(packages)}: {last[0]}"
    return f"installed for this run: {', '.join(packages)}"


def pytest_configure(config):
    """A network namespace of the benchmark's own, as the tests have: its
    bridges, veths, firewall tables and daemons stay there."""
    from tests.conftest import _own_network_namespace
    _own_network_namespace()


def pytest_sessionstart(session):
    session.config._isolate_installed = ""
    missing = missing_packages()
    if missing and not session.config.getoption("--no-install"):
        session.config._isolate_installed = _install(missing)


@pytest.fixture(scope="session")
def quick(request) -> bool:
    """--quick: a smoke run (the test suite runs it) that goes through every
    row in seconds: few rounds, small counts."""
    return bool(request.config.getoption("--quick"))


def _busy_fraction(interval: float) -> float:
    """How busy the CPUs were over interval seconds (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]      # all, idle + iowait
    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


@pytest.fixture(autouse=True, scope="module")
def settled(quick) -> None:
    """Before each benchmark module, wait (10 s at most) for the machine to be
    quiet: what the previous one left to the kernel (network namespaces and
    cgroups torn down in the background, RCU callbacks) would otherwise be
    timed as this one's. The QEMU and density rows leave seconds of it."""
    if quick:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _busy_fraction(0.25) > 0.05:
        pass


@pytest.fixture(scope="session")
def rounds(request, quick) -> int:
    return 30 if quick else request.config.getoption("--rounds")


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory) -> str:
    return make_rootfs(str(tmp_path_factory.mktemp("busybox")))


@pytest.fixture(scope="session")
def floor(tmp_path_factory):
    """bench/floor.c as a shared library: floor_run(rootfs, net) -> exit status."""
    cc = shutil.which("cc") or pytest.skip("no C compiler for bench/floor.c")
    lib = str(tmp_path_factory.mktemp("floor") / "libfloor.so")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", lib, os.path.join(HERE, "floor.c")],
                   check=True)
    so = ctypes.CDLL(lib)
    # the same seccomp filter as isolate.run's default container
    from isolate import _config
    bpf = _config.make_config().seccomp
    if bpf is not None:
        so.floor_seccomp.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        so.floor_seccomp(bpf, len(bpf))
        so._bpf = bpf          # keep it alive
    f = so.floor_run
    f.argtypes = [ctypes.c_char_p, ctypes.c_int]
    f._lib = so
    return f


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, rootfs) -> str:
    """An OCI bundle running /bin/true with the namespaces isolate uses."""
    runc = shutil.which("runc") or shutil.which("crun")
    if runc is None:
        pytest.skip("neither runc nor crun is installed (apt-get install runc crun)")
    d = tmp_path_factory.mktemp("bundle")
    shutil.copytree(rootfs, d / "rootfs", symlinks=True)
    subprocess.run([runc, "spec"], cwd=d, check=True)
    spec = json.loads((d / "config.json").read_text())
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    spec["root"]["readonly"] = False
    ns = spec["linux"]["namespaces"]
    if not any(n["type"] == "cgroup" for n in ns):
        ns.append({"type": "cgroup"})
    (d / "config.json").write_text(json.dumps(spec))
    return str(d)


def _fork_and_wait() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


@pytest.fixture(scope="session")
def bare_fork():
    """os.fork + _exit + waitpid: what a fork-based runtime pays, the yardstick of call()."""
    return _fork_and_wait


@pytest.fixture()
def big_parent():
    """This process holding 1 GiB of touched memory for the duration of a test."""
    block = bytearray(1 << 30)
    for i in range(0, len(block), 4096):
        block[i] = 1
    yield block
    del block


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def _versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for tool, flag in (("bwrap", "--version"), ("crun", "--version"), ("runc", "--version"),
                       ("unshare", "--version")):
        if shutil.which(tool):
            v = subprocess.run([tool, flag], capture_output=True, text=True).stdout.splitlines()
            out.append(v[0] if v else tool)
    return "; ".join(out)


#: (description, numerator, denominator or None, limit, "max" or "min"): the figures
#: the issues ask for; a denominator of None compares the median itself (ms). The
#: ratios to the C floor, bwrap and os.fork come from the paired rows (test_paired.py),
#: whose two sides run back to back in every round.
TARGETS = [
    ("isolate.run(privileged=True) / bwrap --unshare-all", ("startup", "isolate_run_privileged"),
     ("startup", "bwrap"), 0.5, "max"),
    ("isolate.run from a 1 GiB parent / small parent", ("parent-memory", "big_parent_1gib"),
     ("parent-memory", "small_parent"), 1.2, "max"),
    ("Pool.call, ms", ("call", "pool_call"), None, 0.25, "max"),
    ("Pool.call / isolate.run", ("call", "pool_call"), ("call", "isolate_run_ref"), 0.2, "max"),
    ("Pool.call from a 1 GiB parent / small parent", ("call", "pool_call_big_parent_1gib"),
     ("call", "pool_call"), 1.2, "max"),
    ("Container.call / isolate.run", ("call", "container_call"), ("call", "isolate_run_ref"),
     1.0, "max"),
    ("Pool.run / subprocess.run (moonshot)", ("commands", "pool_run"),
     ("commands", "subprocess_run"), 1.1, "max"),
    ("ctr run --rm through containerd: isolate-runc / runc", ("containerd", "ctr_run_isolate_runc"),
     ("containerd", "ctr_run_runc"), 1.0, "max"),
    ("RUNTIME run of a bundle: isolate-runc / runc", ("oci-run", "oci_run_isolate_runc"),
     ("oci-run", "oci_run_runc"), 1.0, "max"),
    ("RUNTIME run of a bundle: isolate-runc / crun (stretch)", ("oci-run", "oci_run_isolate_runc"),
     ("oci-run", "oci_run_crun"), 1.0, "max"),
    ("runtime command line start-up: isolate-runc / runc", ("oci-cli", "cli_state_isolate_runc"),
     ("oci-cli", "cli_state_runc"), 1.0, "max"),
    ("pull of ~100 MB: isolate / skopeo copy + umoci unpack", ("image-pull", "pull_isolate"),
     ("image-pull", "pull_skopeo_umoci"), 1.0, "max"),
    ("pull of ~100 MB: isolate / docker pull", ("image-pull", "pull_isolate"),
     ("image-pull", "pull_docker"), 1.0, "max"),
]


def _targets(groups, extra) -> list[str]:
    rows = []
    for text, (g1, n1), den, limit, kind in TARGETS:
        a = groups.get(g1, {}).get(n1)
        b = 1.0 if den is None else groups.get(den[0], {}).get(den[1])
        if a is None or b is None:
            continue
        value = a / b
        ok = value <= limit if kind == "max" else value >= limit
        sign = "<=" if kind == "max" else ">="
        rows.append(f"| {text} | {value:.2f} | {sign} {limit} | {'met' if ok else 'NOT met'} |")
    for text, value, limit, kind in extra:
        ok = value <= limit if kind == "max" else value >= limit
        shown = f"{value:.2f}" if kind == "max" or value < 10 else f"{value:.0f}"
        rows.append(f"| {text} | {shown} | {'<=' if kind == 'max' else '>='} {limit} | "
                    f"{'met' if ok else 'NOT met'} |")
    if not rows:
        return []
    return ["### targets", "", "| figure | this run | target | |", "|---|---:|---:|---|",
            *rows, ""]


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, float]] = {}
    spread: dict[str, tuple[float, float]] = {}
    extra = []
    streams: dict[str, float] = {}
    for b in session.benchmarks:
        if not b.stats.data:        # failed: no figures
            continue
        if "paired" in b.extra_info:
            p = b.extra_info["paired"]
            (na, ma), (nb, mb) = [(k, v) for k, v in p.items() if k != "ratio"]
            limit = {("isolate_run", "floor_c"): 1.25, ("container_call", "os_fork"): 1.5,
                     ("isolate_run", "bwrap"): 0.5,
                     ("image_5_layers", "rootfs_dir"): 1.1}.get((na, nb))
            if limit is not None:
                extra.append((f"paired: {na} / {nb} (medians {ma:.3f} / {mb:.3f} ms)",
                              p["ratio"], limit, "max"))
            if (na, nb) in (("network_bridge", "network_none"),
                            ("network_bridge_paced", "network_none_paced")):
                extra.append((f"paired: {na} - {nb}, ms (medians {ma:.3f} / {mb:.3f} ms)",
                              ma - mb, 1.0, "max"))
        if "mb_per_s" in b.extra_info:
            streams[b.name.removeprefix("test_stream_")] = b.extra_info["mb_per_s"]
        if "calls" in b.extra_info:
            extra.append(("Pool.map: fresh containers per second",
                          b.extra_info["calls"] / b.stats.median, 500, "min"))
        if "isolated_over_plain" in b.extra_info:
            extra.append(("Dask: isolated tasks per second / plain", b.extra_info["isolated_over_plain"],
                          0.8, "min"))
        if "commands" in b.extra_info:
            extra.append(("Pool.run from 4 threads: fresh containers per second",
                          b.extra_info["commands"] / b.stats.median, 500, "min"))
        name = b.name.split("[")[0].removeprefix("test_") + (
            "[" + b.name.split("[", 1)[1] if "[" in b.name else "")
        data = sorted(b.stats.data)
        groups.setdefault(b.group or "", {})[name] = b.stats.median * 1e3
        spread[name] = (data[int(len(data) * 0.9) - 1] * 1e3, data[int(len(data) * 0.99) - 1] * 1e3)
    if "isolate_network" in streams and "plain_veth" in streams:
        a, b = streams["isolate_network"], streams["plain_veth"]
        extra.append((f"TCP stream: two containers on one network / two namespaces on a veth "
                      f"({a:.0f} / {b:.0f} MB/s)", a / b, 0.9, "min"))
    lines = []
    density = sorted((b.extra_info.get("kind", "isolate"), b.extra_info["containers"], b.stats.median,
                      b.extra_info["kib_per_container"], b.extra_info.get("cgroup_kib_per_container"))
                     for b in session.benchmarks if b.stats.data and "containers" in b.extra_info)
    groups.pop("density", None)
    groups.pop("containerd-density", None)
    groups.pop("boot15", None)
    groups.pop("dask", None)
    groups.pop("pytest-isolate", None)
    for b in session.benchmarks:
        if b.stats.data and "table" in b.extra_info:
            lines += [b.extra_info["table"]]
    scaling = sorted((b.extra_info.get("kind", "isolate"), b.params["threads"],
                      b.extra_info["throughput_calls"] / b.stats.median)
                     for b in session.benchmarks if b.stats.data and "throughput_calls" in b.extra_info)
    groups.pop("scaling-threads", None)
    by_memory: dict[str, dict[int, float]] = {}
    for b in session.benchmarks:
        if b.stats.data and "caller_mib" in b.extra_info:
            by_memory.setdefault(b.extra_info["kind"], {})[b.extra_info["caller_mib"]] = \
                b.stats.median * 1e3
    if by_memory:
        groups.pop("scaling-memory", None)
        sizes = sorted({m for row in by_memory.values() for m in row})
        lines += ["### scaling: latency against the caller's memory (RSS)", "",
                  "| from a caller of | " + " | ".join(f"{m} MiB, ms" for m in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        lines += [f"| {kind} | " + " | ".join(f"{row[m]:.3f}" if m in row else "-" for m in sizes)
                  + " |" for kind, row in sorted(by_memory.items())]
        lines.append("")
    if scaling:
        one = {kind: rate for kind, t, rate in scaling if t == 1}
        lines += ["### scaling: throughput against concurrent starters (2 cores)", "",
                  "| runtime | threads | containers per second | / 1 thread |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {kind} | {t} | {rate:.0f} | {rate / one.get(kind, rate):.2f} |"
                  for kind, t, rate in scaling]
        lines.append("")
    if density:
        lines += ["### density (busybox root, all sleeping at once)", "",
                  "| runtime | containers | start all, s | ms per container | host MiB per container "
                  "| cgroup MiB per container |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {kind} | {n} | {t:.3f} | {t / n * 1e3:.2f} | {kib / 1024:.2f} | "
                  f"{'-' if cg is None else f'{cg / 1024:.2f}'} |"
                  for kind, n, t, kib, cg in density]
        lines += ["", "Host MiB: MemAvailable's drop with all n up (noisy below about 100). "
                  "cgroup MiB: what each container's memory cgroup accounts for (its processes' "
                  "pages, its tmpfs and overlay pages, the kernel memory charged to it), the "
                  "mean over the n containers; the namespaces' kernel objects are charged to "
                  "whoever made them, for isolate the caller.", ""]
    for group, rows in groups.items():
        ref = rows.get("floor_c") or rows.get("small_parent") or min(rows.values())
        refname = "floor_c" if "floor_c" in rows else "small_parent" if "small_parent" in rows else "fastest"
        lines += [f"### {group}", "",
                  f"| benchmark | median ms | p90 ms | p99 ms | / {refname} | / bwrap |",
                  "|---|---:|---:|---:|---:|---:|"]
        bwrap = rows.get("bwrap")
        for name, med in sorted(rows.items(), key=lambda kv: kv[1]):
            p90, p99 = spread[name]
            vs_bwrap = f"{med / bwrap:.2f}" if bwrap else "-"
            lines.append(f"| {name} | {med:.3f} | {p90:.3f} | {p99:.3f} | {med / ref:.2f} | {vs_bwrap} |")
        lines.append("")
    lines += _targets(groups, extra)
    table = "\n".join(lines)
    terminalreporter.write_sep("=", "isolate: medians and ratios")
    if config._isolate_installed:
        terminalreporter.write_line(f"Tools: {config._isolate_installed}")
    terminalreporter.write_line(table)
    path = config.getoption("--results")
    if path:
        cmd = "python3 -m pytest " + " ".join(config.invocation_params.args)
        with open(path, "w") as f:
            f.write("# Benchmark results\n\n")
            f.write(f"Made {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{cmd}`\n\n")
            f.write(f"Machine: {_machine()}\n\nVersions: {_versions()}\n\n")
            if config._isolate_installed:
                f.write(f"Tools: {config._isolate_installed}\n\n")
            f.write("Times are per container running `/bin/true`, started from one warm Python "
                    "process; ratios are of medians taken in the same run. The C floor "
                    "(bench/floor.c) makes the syscalls of isolate.run's default container, "
                    "hardening included (masked /proc paths, capabilities, no_new_privs); "
                    "bwrap does no such masking, so isolate_run_privileged is the like-for-like "
                    "row against it.\n\n")
            f.write(table)
            f.write("\n")
            import plots
            made = plots.write(session.benchmarks, os.path.join(os.path.dirname(path) or ".",
                                                                "plots"))
            if made:
                f.write("### plots\n\n" + "".join(f"![{m}](plots/{m})\n" for m in made))

"""PNG plots of a benchmark session (matplotlib), written beside RESULTS.md:
the start-up latency distributions, the scaling curves and the 15-instance
boot timeline and memory."""
from __future__ import annotations

import os
from typing import Any


def write(benchmarks: list[Any], directory: str) -> list[str]:
    """The plots made (file names), none where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(directory, exist_ok=True)
    made = []
    done = [b for b in benchmarks if b.stats.data]

    startup = sorted((b for b in done if b.group == "startup"), key=lambda b: b.stats.median)
    if startup:
        fig, ax = plt.subplots(figsize=(9, 5))
        data = [[t * 1e3 for t in b.stats.data] for b in startup]
        names = [b.name.removeprefix("test_") for b in startup]
        try:        # matplotlib 3.10 and later
            ax.boxplot(data, orientation="horizontal", tick_labels=names, showfliers=False)
        except TypeError:
            ax.boxplot(data, vert=False, labels=names, showfliers=False)
        ax.set_xscale("log")
        ax.set_xlabel("ms per container running /bin/true (log scale)")
        ax.set_title("Start-up latency, side by side in one run")
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "startup.png"), dpi=100)
        plt.close(fig)
        made.append("startup.png")

    threads: dict[str, list[tuple[int, float]]] = {}
    for b in done:
        if "throughput_calls" in b.extra_info:
            threads.setdefault(b.extra_info.get("kind", "isolate"), []).append(
                (b.params["threads"], b.extra_info["throughput_calls"] / b.stats.median))
    density: dict[str, list[tuple[int, float]]] = {}
    for b in done:
        if "containers" in b.extra_info:
            density.setdefault(b.extra_info.get("kind", "isolate"), []).append(
                (b.extra_info["containers"], b.stats.median / b.extra_info["containers"] * 1e3))
    memory: dict[str, list[tuple[int, float]]] = {}
    for b in done:
        if "caller_mib" in b.extra_info:
            memory.setdefault(b.extra_info.get("kind", "isolate.run"), []).append(
                (b.extra_info["caller_mib"], b.stats.median * 1e3))
    if threads or density or memory:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for kind, points in sorted(threads.items()):
            points.sort()
            axes[0].plot([t for t, _ in points], [r for _, r in points], marker="o", label=kind)
        if threads:
            axes[0].set_yscale("log")
            axes[0].set_xlabel("threads starting containers")
            axes[0].set_ylabel("containers per second (log)")
            axes[0].set_title("Throughput (2 cores)")
            axes[0].legend()
        for kind, points in sorted(density.items()):
            points.sort()
            axes[1].plot([n for n, _ in points], [ms for _, ms in points], marker="o", label=kind)
        if density:
            axes[1].legend()
            axes[1].set_xscale("log")
            axes[1].set_xlabel("containers up at once")
            axes[1].set_ylabel("ms per container started")
            axes[1].set_title("Density: start time per container")
        for kind, points in sorted(memory.items()):
            points.sort()
            axes[2].plot([m for m, _ in points], [ms for _, ms in points], marker="o", label=kind)
        if memory:
            axes[2].legend()
            axes[2].set_xscale("log")
            axes[2].set_yscale("log")
            axes[2].set_xlabel("caller's memory, MiB (log)")
            axes[2].set_ylabel("ms per start (log)")
            axes[2].set_title("Latency against the caller's memory")
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "scaling.png"), dpi=100)
        plt.close(fig)
        made.append("scaling.png")

    boot = next((b.extra_info["boot15"] for b in done if "boot15" in b.extra_info), None)
    if boot:
        ran = [r for r in boot if "ready_s" in r]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for r in ran:
            axes[0].plot(range(1, len(r["ready_s"]) + 1), r["ready_s"], marker="o", label=r["kind"])
            axes[1].plot(range(1, len(r["mib"]) + 1), r["mib"], marker="o", label=r["kind"])
        axes[0].set_yscale("log")
        axes[0].set_xlabel("instance")
        axes[0].set_ylabel("s until it answered (from the first start)")
        axes[0].set_title("Booting instances one after another")
        axes[1].set_xlabel("instances up")
        axes[1].set_ylabel("host memory added, MiB")
        axes[1].set_title("Host memory")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "boot15.png"), dpi=100)
        plt.close(fig)
        made.append("boot15.png")
    return made

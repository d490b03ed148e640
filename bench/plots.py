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

    def series(key: str, default: str, point) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for b in done:
            if key in b.extra_info:
                out.setdefault(b.extra_info.get("kind", default), []).append(point(b))
        return out

    panels = [
        (series("throughput_calls", "isolate",
                lambda b: (b.params["threads"], b.extra_info["throughput_calls"] / b.stats.median)),
         "threads starting containers", "containers per second (log)", "Throughput (2 cores)",
         False, True),
        (series("containers", "isolate",
                lambda b: (b.extra_info["containers"],
                           b.stats.median / b.extra_info["containers"] * 1e3)),
         "containers up at once (log)", "ms per container started",
         "Density: start time per container", True, False),
        (series("caller_mib", "isolate.run",
                lambda b: (b.extra_info["caller_mib"], b.stats.median * 1e3)),
         "caller's memory, MiB (log)", "ms per start (log)", "Latency against the caller's memory",
         True, True),
    ]
    if any(data for data, *_ in panels):
        fig, axes = plt.subplots(1, len(panels), figsize=(15, 4))
        for ax, (data, xlabel, ylabel, title, logx, logy) in zip(axes, panels):
            if not data:
                continue
            for kind, points in sorted(data.items()):
                points.sort()
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=kind)
            if logx:
                ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.legend()
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

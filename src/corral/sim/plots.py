"""PNG plots of a run: latency CDF per access path, availability over time, failover timeline.

Drawn from a `Summariser`, so measured traces get the same plots as simulated ones. Uses
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from corral.model import Summariser, TunnelOpened, fault_windows

MAX_TIMELINE_CLUSTERS = 20


def write_plots(summariser: Summariser, out: Path, *, title: str) -> list[Path]:
    """Write the three plots into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        _latency_cdf(summariser, out / "latency_cdf.png", title),
        _availability(summariser, out / "availability.png", title),
        _failover(summariser, out / "failover.png", title),
    ]


def _shade_faults(ax: Axes, summariser: Summariser) -> None:
    windows = fault_windows(summariser.faults, end=summariser.last_t)
    spans = sorted(
        (start, end, f"{fault} {target}")
        for (fault, target), found in windows.items()
        for start, end in found
    )
    for index, (start, end, label) in enumerate(spans):
        ax.axvspan(start, end, color=f"C{(index + 3) % 10}", alpha=0.15, label=label)


def _latency_cdf(summariser: Summariser, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sorted(summariser.latencies):
        values = np.sort(np.asarray(summariser.latencies[name]))
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=f"{name} (n={len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency of served requests (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{title}: latency CDF per access path")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _availability(summariser: Summariser, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    for name in sorted(summariser.bins):
        times, fractions = summariser.availability_timeline(name)
        ax.step(times, fractions, where="post", label=name)
    _shade_faults(ax, summariser)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"served fraction per {summariser.bin_seconds:g} s")
    ax.set_title(f"{title}: availability over time")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _failover(summariser: Summariser, path: Path, title: str) -> Path:
    """Tunnel sessions per cluster (cluster agent and node agents) with failovers marked."""
    touched = [f.cluster for f in summariser.failovers]
    touched += [fault.target.split("/")[0] for fault in summariser.faults]
    clusters = list(dict.fromkeys(touched + [t.cluster for t in summariser.tunnels]))[:MAX_TIMELINE_CLUSTERS]
    end = max(summariser.last_t, 1.0)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * max(len(clusters), 1) * 2))
    rows: list[str] = []
    for cluster in clusters:
        for kind in ("cluster-agent", "node-agent"):
            opened: dict[str, float] = {}
            spans: list[tuple[float, float]] = []
            for item in summariser.tunnels:
                if item.cluster != cluster or not item.agent.startswith(kind):
                    continue
                if isinstance(item, TunnelOpened):
                    opened[item.agent] = item.t
                elif item.agent in opened:
                    spans.append((opened.pop(item.agent), item.t))
            spans += [(start, end) for start in opened.values()]
            if not spans and kind == "node-agent":
                continue
            y = len(rows)
            rows.append(f"{cluster} {kind}")
            ax.broken_barh([(a, b - a) for a, b in spans], (y - 0.35, 0.7), alpha=0.5, color="C0")
    for failover in summariser.failovers:
        if failover.cluster in clusters:
            ys = [i for i, row in enumerate(rows) if row.startswith(f"{failover.cluster} ")]
            ax.plot([failover.t] * len(ys), ys, "r|", markersize=14)
    _shade_faults(ax, summariser)
    ax.set_yticks(range(len(rows)), rows, fontsize="small")
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s); bars: open tunnel sessions, red: failover completed")
    ax.set_title(f"{title}: tunnels and failovers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

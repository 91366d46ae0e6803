"""The report's figures, drawn from traces with matplotlib (Agg): latency per access path, measured
against simulated when both traces exist, and each cluster's tunnel sessions over time with faults and
failovers (the failover timeline). PNG files, so HTML and Markdown show the same pictures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from corral.model import FaultInjected, Summariser, TunnelClosed, TunnelOpened, fault_windows

logger = logging.getLogger(__name__)

PATHS = ("direct", "proxy", "ace")
MAX_TIMELINE_ROWS = 24


def latency_figure(runs: Mapping[str, Summariser], out: Path) -> Path | None:
    """Latency CDF per access path, one line style per run (measured solid, simulated dashed)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    if not any(s.latencies for s in runs.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = {"measured": "-", "simulated": "--"}
    for run, summariser in runs.items():
        for index, path in enumerate(p for p in PATHS if p in summariser.latencies):
            values = sorted(summariser.latencies[path])
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(
                [v * 1000 for v in values],
                fractions,
                where="post",
                linestyle=styles.get(run, ":"),
                color=f"C{PATHS.index(path) if path in PATHS else index}",
                label=f"{path} ({run}, n={len(values)})",
            )
    ax.set_xscale("log")
    ax.set_xlabel("latency of served requests (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency per access path")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def timeline_figure(summariser: Summariser, out: Path, *, title: str) -> Path | None:
    """Each agent's tunnel sessions as bars over time, faults shaded, failovers marked."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    sessions = _sessions(summariser.tunnels, end=summariser.last_t)
    if not sessions and not summariser.failovers:
        return None
    rows = sorted(sessions)[:MAX_TIMELINE_ROWS]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * max(len(rows), 1)))
    for row, key in enumerate(rows):
        ax.broken_barh([(s, e - s) for s, e in sessions[key]], (row - 0.35, 0.7), color="C2")
    windows = fault_windows(
        [f for f in summariser.faults if isinstance(f, FaultInjected)], end=summariser.last_t
    )
    for index, ((fault, target), spans) in enumerate(sorted(windows.items())):
        for start, end in spans:
            ax.axvspan(start, end, color=f"C{(index + 3) % 10}", alpha=0.18, label=f"{fault} {target}")
    for failover in summariser.failovers:
        ax.axvline(failover.t, color="C3", linestyle="--", linewidth=1)
        ax.annotate(
            f"{failover.cluster} {failover.duration_seconds:.1f}s",
            (failover.t, len(rows) - 0.5),
            fontsize=7,
            rotation=90,
            va="top",
        )
    ax.set_yticks(range(len(rows)), [f"{c} {a}" for c, a in rows], fontsize=7)
    ax.set_xlabel("time since the scenario started (s)")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _sessions(
    events: Sequence[TunnelOpened | TunnelClosed], *, end: float
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(cluster, agent) -> intervals with a session open; one still open lasts until ``end``."""
    opened: dict[tuple[str, str], list[float]] = {}
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for event in sorted(events, key=lambda e: e.t):
        key = (event.cluster, event.agent)
        if isinstance(event, TunnelOpened):
            opened.setdefault(key, []).append(event.t)
            spans.setdefault(key, [])
        elif opened.get(key):
            spans.setdefault(key, []).append((opened[key].pop(0), event.t))
    for key, starts in opened.items():
        spans.setdefault(key, []).extend((start, end) for start in starts)
    return spans

"""PNG plots of a run: latency CDF per access path, availability over time (per path, per region),
the fleet's clusters (distribution and the worst ones over time), and the agents' tunnels.

Drawn from a `Summariser`, so measured traces get the same plots as simulated ones. Availability
is binned by when requests *started*, and a bin in which no request started is drawn as an outage
(at 0, hatched), never carried over from the bin before: a plot must not read 1.0 while nothing
got through. Each plot's title names the run (scenario and seed). Uses matplotlib's Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from corral.model import AvailabilityBin, FaultInjected, Summariser, TunnelOpened, fault_windows

MAX_TIMELINE_CLUSTERS = 12
"""Clusters in the tunnel timeline: those with failovers or agent faults first."""
WORST_CLUSTERS = 25
"""Rows of the worst-clusters heatmap."""
AGENT_FAULTS = ("kill-cluster-agent", "kill-node-agent")
DPI = 110
OUTAGE_COLOR = "#d62728"
FAULT_COLORS = {
    "kill-cluster-agent": "#9467bd",
    "kill-node-agent": "#8c564b",
    "server-down": "#7f7f7f",
    "partition": "#e377c2",
    "latency": "#bcbd22",
}
"""One colour per kind of fault, the same in every plot; kinds not listed get grey-blue."""


def write_plots(summariser: Summariser, out: Path, *, title: str) -> list[Path]:
    """Write every plot into `out`; returns their paths. `title` names the run (scenario, seed)."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        _latency_cdf(summariser, out / "latency_cdf.png", title),
        _availability(summariser, out / "availability.png", title),
        _regions(summariser, out / "regions.png", title),
        _clusters(summariser, out / "clusters.png", title),
        _failover(summariser, out / "failover.png", title),
    ]


# -- the data behind the plots (tested on their own) -----------------------------------------------


def outage_spans(series: Sequence[AvailabilityBin]) -> list[tuple[float, float]]:
    """Runs of consecutive bins in which no request started, as (start, end) times."""
    spans: list[tuple[float, float]] = []
    for item in series:
        if item.requests:
            continue
        end = item.start + item.seconds
        if spans and spans[-1][1] >= item.start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((item.start, end))
    return spans


def plotted_fractions(series: Sequence[AvailabilityBin]) -> list[float]:
    """What the availability plot draws per bin: the served fraction, and 0 for an empty bin."""
    return [0.0 if item.fraction is None else item.fraction for item in series]


@dataclass(frozen=True, slots=True)
class ClusterRank:
    """A cluster's place among the worst: requests that failed, out of how many."""

    cluster: str
    failed: int
    requests: int

    @property
    def availability(self) -> float:
        return 1.0 - self.failed / self.requests if self.requests else 0.0


def worst_clusters(summariser: Summariser, path: str, count: int = WORST_CLUSTERS) -> list[ClusterRank]:
    """The clusters with the most failed requests on `path` (then the lowest availability, then by name)."""
    ranks = [
        ClusterRank(name, requests - served, requests)
        for name, (served, requests) in summariser.cluster_availability(path).items()
        if requests > served
    ]
    ranks.sort(key=lambda r: (-r.failed, r.availability, r.cluster))
    return ranks[:count]


def timeline_clusters(summariser: Summariser, limit: int = MAX_TIMELINE_CLUSTERS) -> list[str]:
    """Clusters for the tunnel timeline: only clusters that have agents (tunnel events).

    Those that failed over or whose agents a fault hit come first, in order of time; fault targets
    that are not clusters (the server, a link) never get a row of their own.
    """
    with_agents = dict.fromkeys(item.cluster for item in summariser.tunnels)
    touched = [f.cluster for f in summariser.failovers]
    touched += [_fault_cluster(fault) for fault in summariser.faults if fault.fault in AGENT_FAULTS]
    ordered = [c for c in dict.fromkeys(touched) if c in with_agents]
    ordered += [c for c in with_agents if c not in ordered]
    return ordered[:limit]


def _fault_cluster(fault: FaultInjected) -> str:
    return fault.target.split("/")[0]


# -- drawing ------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _shade_faults(ax: Axes, summariser: Summariser, *, kinds: Sequence[str] | None = None) -> None:
    """Background bands for fault windows, one colour and one legend entry per kind of fault."""
    windows = fault_windows(summariser.faults, end=summariser.last_t)
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for (fault, _), found in windows.items():
        if kinds is None or fault in kinds:
            by_kind.setdefault(fault, []).extend(found)
    for fault, spans in sorted(by_kind.items()):
        targets = sum(1 for (kind, _) in windows if kind == fault)
        label = f"{fault} ({targets} target{'s' if targets > 1 else ''})"
        color = FAULT_COLORS.get(fault, "#6b8ba4")
        for number, (start, end) in enumerate(sorted(spans)):
            ax.axvspan(start, end, color=color, alpha=0.18, label=label if number == 0 else None)


def _draw_series(
    ax: Axes, series: Sequence[AvailabilityBin], *, label: str, color: str, width: float = 1.2
) -> None:
    if not series:
        return
    edges = [item.start for item in series] + [series[-1].start + series[-1].seconds]
    ax.stairs(
        plotted_fractions(series), edges, baseline=None, label=label, color=color, linewidth=max(width, 0.8)
    )


def _mark_outages(ax: Axes, series: Sequence[AvailabilityBin], *, label: str | None) -> None:
    for number, (start, end) in enumerate(outage_spans(series)):
        ax.axvspan(
            start,
            end,
            ymax=0.08,
            facecolor="none",
            edgecolor=OUTAGE_COLOR,
            hatch="////",
            linewidth=0,
            label=label if number == 0 else None,
        )


def _latency_cdf(summariser: Summariser, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in sorted(summariser.latencies):
        values = np.sort(np.asarray(summariser.latencies[name]))
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=f"{name} (n={len(values):,})")
    ax.set_xscale("log")
    ax.set_xlabel("latency of served requests (s, log scale)")
    ax.set_ylabel("fraction of served requests")
    ax.set_title(f"{title}\nlatency CDF per access path", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _availability(summariser: Summariser, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for index, name in enumerate(sorted(summariser.bins)):
        series = summariser.availability_series(name)
        served = sum(item.served for item in series)
        total = sum(item.requests for item in series)
        _draw_series(
            ax,
            series,
            label=f"{name}: {served / total:.4f} of {total:,}",
            color=f"C{index}",
            width=2.4 - index,
        )
        _mark_outages(ax, series, label=f"{name}: no request started (outage)")
    _shade_faults(ax, summariser)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("request start time (s)")
    ax.set_ylabel(f"served fraction per {summariser.bin_seconds:g} s")
    ax.set_title(f"{title}\navailability by request start time", fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _regions(summariser: Summariser, path: Path, title: str) -> Path:
    """One panel per access path, one line per region of the clusters."""
    paths = sorted(summariser.bins)
    regions = summariser.regions
    fig, axes = plt.subplots(
        max(len(paths), 1), 1, figsize=(10, 0.6 + 2.4 * max(len(paths), 1)), sharex=True, squeeze=False
    )
    for ax, name in zip(axes[:, 0], paths, strict=False):
        for index, region in enumerate(regions):
            series = summariser.availability_series(name, region=region)
            total = sum(item.requests for item in series)
            if not total:
                continue
            served = sum(item.served for item in series)
            _draw_series(
                ax,
                series,
                label=f"{region}: {served / total:.4f}",
                color=f"C{index}",
                width=2.8 - 0.6 * index,
            )
        _shade_faults(ax, summariser, kinds=("server-down", "partition", "latency"))
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(f"{name}\nserved fraction")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", title="cluster region")
    axes[-1, 0].set_xlabel(f"request start time (s), {summariser.bin_seconds:g} s bins; empty bins at 0")
    fig.suptitle(f"{title}\navailability per region of the target cluster", fontsize="medium")
    fig.tight_layout()
    return _save(fig, path)


_HEAT = ListedColormap(plt.get_cmap("RdYlGn")(np.linspace(0.0, 1.0, 256))).with_extremes(bad="#dddddd")


def _clusters(summariser: Summariser, path: Path, title: str) -> Path:
    """Left: how many clusters reached each availability; right: the worst clusters over time.

    Drawn for the access path with the most failed requests (the proxy when there are none).
    """
    paths = sorted(summariser.totals, key=lambda p: (p != "proxy", p))
    failed = {p: summariser.totals[p] - len(summariser.latencies.get(p, ())) for p in paths}
    chosen = max(paths, key=lambda p: failed[p], default="proxy")
    per_cluster = summariser.cluster_availability(chosen)
    worst = worst_clusters(summariser, chosen)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, max(4.0, 1.2 + 0.26 * len(worst))), gridspec_kw={"width_ratios": [1, 2.6]}
    )
    edges = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0]
    names = ["< 0.5", "0.5-0.9", "0.9-0.99", "0.99-0.999", "0.999-<1", "1.0"]
    counts = [0] * len(names)
    for served, requests in per_cluster.values():
        value = served / requests
        slot = len(names) - 1 if value == 1.0 else next(i for i in range(5) if value < edges[i + 1])
        counts[slot] += 1
    bars = left.barh(names, counts, color=[_HEAT(e) for e in (0.0, 0.3, 0.6, 0.8, 0.9, 1.0)])
    left.bar_label(bars, [f"{c:,}" for c in counts], padding=3, fontsize="small")
    left.set_xlabel(f"clusters ({len(per_cluster):,} with requests)")
    left.set_ylabel(f"availability of the cluster ({chosen})")
    left.set_xlim(0, max(*counts, 1) * 1.25)
    left.set_title("distribution over the fleet", fontsize="small")
    if worst:
        series = [summariser.cluster_series(chosen, rank.cluster) for rank in worst]
        width = max(len(s) for s in series)
        grid = np.full((len(worst), width), np.nan)
        for row, items in enumerate(series):
            for column, item in enumerate(items):
                if item.fraction is not None:
                    grid[row, column] = item.fraction
        bin_seconds = summariser.cluster_bin_seconds
        image = right.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            cmap=_HEAT,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            extent=(0.0, width * bin_seconds, len(worst) - 0.5, -0.5),
        )
        regions = summariser.cluster_regions
        labels = [
            f"{r.cluster} ({regions.get(r.cluster, '?')}) {r.failed:,}/{r.requests:,} failed" for r in worst
        ]
        right.set_yticks(range(len(worst)), labels, fontsize="x-small")
        right.set_xlabel(f"request start time (s), {bin_seconds:g} s bins; grey: no request in the bin")
        fig.colorbar(image, ax=right, label="served fraction", fraction=0.04, pad=0.02)
        right.set_title(f"the {len(worst)} clusters with the most failed requests", fontsize="small")
    else:
        right.text(0.5, 0.5, "no cluster had a failed request", ha="center", va="center")
        right.set_axis_off()
    fig.suptitle(f"{title}\nper-cluster availability, {chosen} path", fontsize="medium")
    fig.tight_layout()
    return _save(fig, path)


def _failover(summariser: Summariser, path: Path, title: str) -> Path:
    """Tunnel sessions of the agents of a few clusters, with agent faults and failovers marked."""
    clusters = timeline_clusters(summariser)
    end = max(summariser.last_t, 1.0)
    rows: list[tuple[str, str]] = []  # (cluster, "cluster-agent" or "node-agent")
    spans_of: dict[tuple[str, str], list[tuple[float, float]]] = {}
    wanted = set(clusters)
    opened: dict[tuple[str, str], float] = {}
    for item in summariser.tunnels:
        if item.cluster not in wanted:
            continue
        kind = "cluster-agent" if item.agent.startswith("cluster-agent") else "node-agent"
        key = (item.cluster, item.agent)
        spans = spans_of.setdefault((item.cluster, kind), [])
        if isinstance(item, TunnelOpened):
            opened[key] = item.t
        elif key in opened:
            spans.append((opened.pop(key), item.t))
    for (cluster, agent), start in opened.items():
        kind = "cluster-agent" if agent.startswith("cluster-agent") else "node-agent"
        spans_of.setdefault((cluster, kind), []).append((start, end))
    for cluster in clusters:
        rows += [(cluster, kind) for kind in ("cluster-agent", "node-agent") if (cluster, kind) in spans_of]
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.32 * max(len(rows), 1)))
    windows = fault_windows(summariser.faults, end=summariser.last_t)
    for y, (cluster, kind) in enumerate(rows):
        bars = [(a, b - a) for a, b in spans_of[(cluster, kind)]]
        ax.broken_barh(bars, (y - 0.3, 0.6), color="C0" if kind == "cluster-agent" else "C2", alpha=0.6)
        for (fault, target), found in windows.items():
            hits = (fault == "kill-cluster-agent" and target == cluster and kind == "cluster-agent") or (
                fault == "kill-node-agent" and target.split("/")[0] == cluster and kind == "node-agent"
            )
            for start, stop in found if hits else []:
                ax.add_patch(
                    mpl.patches.Rectangle(
                        (start, y - 0.45), stop - start, 0.9, color=OUTAGE_COLOR, alpha=0.25
                    )
                )
    by_row = {row: y for y, row in enumerate(rows)}
    for failover in summariser.failovers:
        y_of = by_row.get((failover.cluster, "cluster-agent"))
        if y_of is not None:
            ax.plot([failover.t], [y_of], marker="|", color="black", markersize=16, markeredgewidth=2)
    _shade_faults(ax, summariser, kinds=("server-down", "partition", "latency"))
    ax.set_yticks(range(len(rows)), [f"{c} {k}s" if k == "node-agent" else f"{c} {k}" for c, k in rows])
    ax.tick_params(axis="y", labelsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s); bars: open tunnel sessions, red: agent fault on that row, |: failover completed")
    shown = f"{len(clusters)} of {len({t.cluster for t in summariser.tunnels}):,} clusters"
    ax.set_title(f"{title}\nagent tunnels and failovers ({shown})", fontsize="medium")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    return _save(fig, path)

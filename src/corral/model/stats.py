"""Statistics of traces, defined once for every part of corral: quantiles, success and availability,
fault windows, availability over time (per path, region and cluster), the per-access-path summary
of a run, and the spread of a figure over several seeds.

The SimPy model, the trace checks and the benchmarks all count with these functions, so a p95 or
an availability means the same thing whichever part printed it. Pure Python (no numpy): the shared
model stays importable without the simulation's packages.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.model.trace import (
    Event,
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    TunnelClosed,
    TunnelOpened,
)

QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
"""The quantiles a summary reports, by name; the names are those of a scenario's expectations."""
DIGITS = 6
"""Decimal places of the figures in a summary (microseconds for latencies)."""
FAILOVERS_LISTED = 50
"""A summary lists the first failovers one by one, up to this many."""
CLUSTER_BIN_SECONDS = 60.0
"""Width of the per-cluster time bins (coarser than the per-path ones: a fleet has many clusters)."""

Interval = tuple[float, float]


def succeeded(status: int) -> bool:
    """A request counts as served when it got a 2xx or 3xx answer (0 means no answer at all)."""
    return 200 <= status < 400


def availability(served: int, total: int) -> float:
    """The fraction of requests served; a path without requests has no availability."""
    if total <= 0 or not 0 <= served <= total:
        raise ValueError(f"availability of {served} served out of {total} requests is undefined")
    return served / total


def quantile(values: Sequence[float], percent: float, *, presorted: bool = False) -> float:
    """The `percent` quantile of `values`, interpolated linearly between the closest ranks.

    This is Hyndman and Fan's definition 7, the default of numpy and R, computed with numpy's
    arithmetic (the same float for the same input). Pass ``presorted=True`` for values already
    in ascending order, to skip the sort when several quantiles of one sample are taken.
    """
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"quantile: percent must be within [0, 100], got {percent}")
    ordered = values if presorted else sorted(values)
    last = len(ordered) - 1
    position = last * (percent / 100.0)
    low = min(math.floor(position), last)
    high = min(low + 1, last)
    weight = position - low
    a, b = ordered[low], ordered[high]
    if weight >= 0.5:  # numpy interpolates from the nearer end, which keeps the result monotonic
        return b - (b - a) * (1.0 - weight)
    return a + (b - a) * weight


@dataclass(frozen=True, slots=True)
class AvailabilityBin:
    """Requests that started in ``[start, start + seconds)``, and how many of them were served."""

    start: float
    seconds: float
    served: int
    requests: int

    @property
    def fraction(self) -> float | None:
        """The served fraction; ``None`` for a bin in which no request started."""
        return availability(self.served, self.requests) if self.requests else None


def availability_series(
    cells: Mapping[int, Sequence[int]],
    *,
    bin_seconds: float,
    first: int | None = None,
    last: int | None = None,
) -> list[AvailabilityBin]:
    """Every bin from `first` to `last` (default: the first and last with requests), empty ones included.

    `cells` maps a bin number (request start time // `bin_seconds`) to ``(served, requests)``. A
    bin left out of `cells` comes back with no requests, so a reader can tell "nothing started
    here" (often: nothing could) from "everything was served", which a series of non-empty bins
    alone cannot show.
    """
    if not cells and (first is None or last is None):
        return []
    low = min(cells) if first is None else first
    high = max(cells) if last is None else last
    series = []
    for number in range(low, high + 1):
        served, requests = cells.get(number, (0, 0))[:2]
        series.append(AvailabilityBin(number * bin_seconds, bin_seconds, served, requests))
    return series


def fault_windows(events: Iterable[Event], *, end: float) -> dict[tuple[str, str], list[Interval]]:
    """(fault, target) -> the intervals during which it was applied, from `FaultInjected` events.

    Overlapping faults on one target count as one window, from the first start to the last lift;
    a fault still applied at the end of the trace lasts until ``end``.
    """
    depth: dict[tuple[str, str], int] = {}
    started: dict[tuple[str, str], float] = {}
    windows: dict[tuple[str, str], list[Interval]] = {}
    for item in events:
        if not isinstance(item, FaultInjected):
            continue
        key = (item.fault, item.target)
        if not item.lifted:
            depth[key] = depth.get(key, 0) + 1
            started.setdefault(key, item.t)
        elif depth.get(key, 0) > 0:
            depth[key] -= 1
            if depth[key] == 0:
                windows.setdefault(key, []).append((started.pop(key), item.t))
    for key, start in started.items():
        windows.setdefault(key, []).append((start, end))
    return windows


class _PathCounts:
    """One access path's counters, reached with one lookup per request (the per-path ones are the
    summariser's own objects), and its clusters' counts, laid out so that a request touches memory
    that the requests just before it touched too.

    A fleet has thousands of clusters: an array of counts per cluster puts each request on a
    different, cold piece of memory. Here each coarse time bin is one row of counts over the
    path's clusters (by their index), and requests come in time order, so they all land on the
    current row.
    """

    __slots__ = ("bins", "clusters", "latencies", "region_cells", "rows", "statuses")

    def __init__(self, latencies: array[float], statuses: Counter[int], bins: dict[int, list[int]]) -> None:
        self.latencies = latencies
        self.statuses = statuses
        self.bins = bins
        self.clusters: dict[str, int] = {}
        """Cluster -> its index on this path, in the order of their first requests."""
        self.region_cells: list[dict[int, list[int]]] = []
        """By cluster index: the start-time bins of the cluster's region on this path."""
        self.rows: list[array[int]] = []
        """By coarse start-time bin: served and requests of each cluster index, interleaved."""

    def series(self, index: int) -> array[int]:
        """One cluster's served and requests per coarse bin, interleaved, up to its last request."""
        served, requests = 2 * index, 2 * index + 1
        rows = self.rows
        last = -1
        for number, row in enumerate(rows):
            if requests < len(row) and row[requests]:
                last = number
        series = array("l")
        for row in rows[: last + 1]:
            if requests < len(row):
                series.append(row[served])
                series.append(row[requests])
            else:
                series.extend((0, 0))
        return series


class Summariser:
    """Running aggregates of a trace; `summary()` turns them into a JSON-ready dict.

    It reads shared trace events only, so a simulated run and a measured one are summarised the
    same way and compare number by number. Feed it events as they happen (`add`, a recorder sink)
    or all at once (`summarise`). Requests are binned in time by when they *started* (completion
    time minus latency): a request that waited 30 s for a timeout belongs to the moment it was
    sent, so an outage shows where it happened. Memory grows with the number of requests only by
    one float per served request (an array of doubles), so a fleet-sized trace fits.

    `cluster_regions` (cluster -> region) adds a per-region breakdown; without it, clusters the
    summariser has not been told about count under the region ``"?"``.
    """

    def __init__(
        self,
        *,
        bin_seconds: float = 10.0,
        cluster_regions: Mapping[str, str] | None = None,
        cluster_bin_seconds: float = CLUSTER_BIN_SECONDS,
    ) -> None:
        self.bin_seconds = bin_seconds
        self.cluster_bin_seconds = cluster_bin_seconds
        self.latencies: dict[str, array[float]] = defaultdict(lambda: array("d"))
        """Access path -> latencies of its served requests, in trace order."""
        self.totals: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.bins: dict[str, dict[int, list[int]]] = defaultdict(dict)
        """Access path -> start-time bin -> [served, requests]."""
        self.region_bins: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(dict)
        """(access path, region of the cluster) -> start-time bin -> [served, requests]."""
        self.cluster_regions: dict[str, str] = dict(cluster_regions or {})
        self.failovers: list[FailoverCompleted] = []
        self.tunnels: list[TunnelOpened | TunnelClosed] = []
        self.faults: list[FaultInjected] = []
        self._events: Counter[str] = Counter()
        """Events added, by type name, requests aside (`_requests` counts them)."""
        self._requests = 0
        self._paths: dict[str, _PathCounts] = {}
        self._cluster_order: list[tuple[str, str]] = []
        """(access path, cluster) in the order of their first requests."""
        self.last_t = 0.0

    def add(self, item: Event) -> None:
        if isinstance(item, RequestCompleted):
            self.request(
                t=item.t,
                path=item.path,
                cluster=item.cluster,
                status=item.status,
                latency_seconds=item.latency_seconds,
            )
            if type(item) is not RequestCompleted:  # a subclass counts under its own name
                self._requests -= 1
                self._events[item.type_name] += 1
            return
        self._events[item.type_name] += 1
        self.last_t = max(self.last_t, item.t)
        if isinstance(item, TunnelOpened | TunnelClosed):
            self.tunnels.append(item)
        elif isinstance(item, FailoverCompleted):
            self.failovers.append(item)
        elif isinstance(item, FaultInjected):
            self.faults.append(item)

    __call__ = add

    def request(
        self,
        *,
        t: float,
        path: str,
        cluster: str,
        status: int,
        latency_seconds: float,
        user: str = "",
        verb: str = "",
    ) -> None:
        """`add` of a `RequestCompleted` with these fields, without the event (the model's hot path).

        It runs once per request of a fleet, so it does only what counting needs: one lookup of the
        path's counters, and one of the cluster's (its region's bins and its own counts, found
        once and kept). `user` and `verb` are taken for a recorder's sake and not counted.
        """
        self._requests += 1
        self.last_t = max(self.last_t, t)
        counts = self._paths.get(path)
        if counts is None:
            counts = _PathCounts(self.latencies[path], self.statuses[path], self.bins[path])
            self._paths[path] = counts
        self.totals[path] += 1
        counts.statuses[status] += 1
        ok = 200 <= status < 400  # `succeeded`, inlined
        if ok:
            counts.latencies.append(latency_seconds)
        started = max(t - latency_seconds, 0.0)
        number = int(started // self.bin_seconds)
        cell = counts.bins.get(number)
        if cell is None:
            cell = counts.bins[number] = [0, 0]
        cell[0] += ok
        cell[1] += 1
        index = counts.clusters.get(cluster)
        if index is None:
            index = self._first_request(counts, path, cluster)
        cells = counts.region_cells[index]
        cell = cells.get(number)
        if cell is None:
            cell = cells[number] = [0, 0]
        cell[0] += ok
        cell[1] += 1
        rows = counts.rows
        column = int(started // self.cluster_bin_seconds)
        while column >= len(rows):
            rows.append(array("l"))
        row = rows[column]
        slot = 2 * index
        if slot >= len(row):  # room for every cluster seen so far, zeros
            row.frombytes(bytes(row.itemsize * (2 * len(counts.clusters) - len(row))))
        row[slot] += ok
        row[slot + 1] += 1

    def _first_request(self, counts: _PathCounts, path: str, cluster: str) -> int:
        """A cluster's first request on `path`: its index there, and its region's bins."""
        index = counts.clusters[cluster] = len(counts.clusters)
        region = self.cluster_regions.get(cluster, "?")
        counts.region_cells.append(self.region_bins[(path, region)])
        self._cluster_order.append((path, cluster))
        return index

    @property
    def cluster_bins(self) -> dict[tuple[str, str], array[int]]:
        """(access path, cluster) -> served and requests per coarse start-time bin, interleaved, from
        t=0 to the cluster's last request on that path; in the order of their first requests."""
        return {
            (path, cluster): self._paths[path].series(self._paths[path].clusters[cluster])
            for path, cluster in self._cluster_order
        }

    @property
    def events(self) -> Counter[str]:
        """How many events of each type were added."""
        counts = Counter(self._events)
        if self._requests:
            counts[RequestCompleted.type_name] += self._requests
        return counts

    def path_summary(self, path: str) -> dict[str, Any]:
        """Requests, served, failed, availability, statuses and latency quantiles of one access path."""
        values = sorted(self.latencies.get(path, []))
        total = self.totals[path]
        served = len(values)
        entry: dict[str, Any] = {
            "requests": total,
            "served": served,
            "failed": total - served,
            "availability": _round(availability(served, total)),
            "statuses": {str(code): n for code, n in sorted(self.statuses[path].items())},
        }
        if served:
            latency = {name: _round(quantile(values, q, presorted=True)) for name, q in QUANTILES.items()}
            latency |= {"mean": _round(math.fsum(values) / served), "max": _round(values[-1])}
            entry["latency_seconds"] = latency
        return entry

    def failover_summary(self) -> dict[str, Any]:
        """How many failovers completed, how long they took (max, mean), and the first ones."""
        durations = [f.duration_seconds for f in self.failovers]
        return {
            "count": len(durations),
            "max_seconds": _round(max(durations)) if durations else None,
            "mean_seconds": _round(math.fsum(durations) / len(durations)) if durations else None,
            "each": [
                {
                    "t": _round(f.t),
                    "cluster": f.cluster,
                    "from": f.from_agent,
                    "to": f.to_agent,
                    "seconds": _round(f.duration_seconds),
                }
                for f in self.failovers[:FAILOVERS_LISTED]
            ],
        }

    def summary(self, **meta: Any) -> dict[str, Any]:
        """`meta`, then every access path's summary, the failovers and the count of each event type."""
        return {
            **meta,
            "paths": {path: self.path_summary(path) for path in sorted(self.totals)},
            "failovers": self.failover_summary(),
            "events": dict(sorted(self.events.items())),
        }

    def availability_series(self, path: str, *, region: str | None = None) -> list[AvailabilityBin]:
        """One path's (or one path and region's) bins by request start, empty bins included.

        The series spans the path's first to last request (of any region), so a stretch in the
        middle where the path started nothing (everyone waiting on a dead server, say) shows as
        empty bins rather than vanishing between two good ones.
        """
        span = self.bins.get(path, {})
        if not span:
            return []
        cells = span if region is None else self.region_bins.get((path, region), {})
        return availability_series(cells, bin_seconds=self.bin_seconds, first=min(span), last=max(span))

    def availability_timeline(self, path: str) -> tuple[list[float], list[float]]:
        """Bin start times and the served fraction of each bin; a bin without requests counts as 0."""
        series = self.availability_series(path)
        return [b.start for b in series], [b.fraction or 0.0 for b in series]

    @property
    def regions(self) -> list[str]:
        """Regions of the clusters that received requests, in first-seen order of the mapping."""
        seen = {region for _, region in self.region_bins}
        ordered = list(dict.fromkeys(self.cluster_regions.values()))
        return [r for r in ordered if r in seen] + sorted(seen - set(ordered))

    def cluster_series(self, path: str, cluster: str) -> list[AvailabilityBin]:
        """A cluster's bins on one path (`cluster_bin_seconds` wide), from t=0 to its last request."""
        on_path = self._paths.get(path)
        index = None if on_path is None else on_path.clusters.get(cluster)
        if on_path is None or index is None:
            return []
        counts = on_path.series(index)
        width = self.cluster_bin_seconds
        return [
            AvailabilityBin(i // 2 * width, width, counts[i], counts[i + 1]) for i in range(0, len(counts), 2)
        ]

    def cluster_availability(self, path: str) -> dict[str, tuple[int, int]]:
        """Cluster -> (served, requests) on one access path over the whole run."""
        on_path = self._paths.get(path)
        if on_path is None:
            return {}
        totals: dict[str, tuple[int, int]] = {}
        for name, index in on_path.clusters.items():
            served, requests = 2 * index, 2 * index + 1
            rows = [row for row in on_path.rows if requests < len(row)]
            totals[name] = (sum(row[served] for row in rows), sum(row[requests] for row in rows))
        return totals


HEADLINE_FIGURES = ("requests", "availability", "p50", "p95", "p99", "mean")
"""Per access path, the figures whose spread over seeds a multi-seed summary reports."""


def seed_spread(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of each headline figure over runs of several seeds.

    `summaries` are single-seed summaries of the same scenario (`Summariser.summary`). A figure
    missing from some runs (no served request, so no latency; no failover) is taken over the runs
    that have it, and ``n`` says how many; the standard deviation of one value is ``None``.
    """
    if not summaries:
        raise ValueError("spread of no summaries")
    paths = sorted({path for summary in summaries for path in summary["paths"]})
    spread: dict[str, Any] = {"paths": {}, "failovers": {}}
    for path in paths:
        entries = [summary["paths"].get(path) for summary in summaries]
        figures: dict[str, Any] = {}
        for name in HEADLINE_FIGURES:
            values = [_headline(entry, name) for entry in entries if entry is not None]
            figures[name] = _spread_of([v for v in values if v is not None])
        spread["paths"][path] = figures
    for name in ("count", "max_seconds", "mean_seconds"):
        values = [summary["failovers"][name] for summary in summaries]
        spread["failovers"][name] = _spread_of([v for v in values if v is not None])
    return spread


def _headline(entry: Mapping[str, Any], name: str) -> float | None:
    if name in ("requests", "availability"):
        return float(entry[name])
    latency = entry.get("latency_seconds")
    return None if latency is None else float(latency[name])


def _spread_of(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "mean": _round(math.fsum(values) / len(values)),
        "stdev": _round(statistics.stdev(values)) if len(values) > 1 else None,
        "min": _round(min(values)),
        "max": _round(max(values)),
    }


def summarise(events: Iterable[Event], **meta: Any) -> dict[str, Any]:
    """The summary of a whole trace (`Summariser.summary`)."""
    summariser = Summariser()
    for item in events:
        summariser.add(item)
    return summariser.summary(**meta)


def _round(value: float) -> float:
    return round(value, DIGITS)

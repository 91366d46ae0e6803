"""Statistics of traces, defined once for every part of corral: quantiles, success and availability,
fault windows, and the per-access-path summary of a run.

The SimPy model, the trace checks and the benchmarks all count with these functions, so a p95 or
an availability means the same thing whichever part printed it. Pure Python (no numpy): the shared
model stays importable without the simulation's packages.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
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


class Summariser:
    """Running aggregates of a trace; `summary()` turns them into a JSON-ready dict.

    It reads shared trace events only, so a simulated run and a measured one are summarised the
    same way and compare number by number. Feed it events as they happen (`add`, a recorder sink)
    or all at once (`summarise`).
    """

    def __init__(self, *, bin_seconds: float = 10.0) -> None:
        self.bin_seconds = bin_seconds
        self.latencies: dict[str, list[float]] = defaultdict(list)
        """Access path -> latencies of its served requests, in trace order."""
        self.totals: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.bins: dict[str, dict[int, list[int]]] = defaultdict(dict)
        """Access path -> time bin -> [served, requests]."""
        self.failovers: list[FailoverCompleted] = []
        self.tunnels: list[TunnelOpened | TunnelClosed] = []
        self.faults: list[FaultInjected] = []
        self.events: Counter[str] = Counter()
        self.last_t = 0.0

    def add(self, item: Event) -> None:
        self.events[item.type_name] += 1
        self.last_t = max(self.last_t, item.t)
        if isinstance(item, RequestCompleted):
            path = item.path
            self.totals[path] += 1
            self.statuses[path][item.status] += 1
            ok = succeeded(item.status)
            if ok:
                self.latencies[path].append(item.latency_seconds)
            cell = self.bins[path].setdefault(int(item.t // self.bin_seconds), [0, 0])
            cell[0] += ok
            cell[1] += 1
        elif isinstance(item, TunnelOpened | TunnelClosed):
            self.tunnels.append(item)
        elif isinstance(item, FailoverCompleted):
            self.failovers.append(item)
        elif isinstance(item, FaultInjected):
            self.faults.append(item)

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

    def availability_timeline(self, path: str) -> tuple[list[float], list[float]]:
        """Bin start times and the fraction of requests served in each bin."""
        cells = sorted(self.bins.get(path, {}).items())
        return [b * self.bin_seconds for b, _ in cells], [availability(ok, n) for _, (ok, n) in cells]


def summarise(events: Iterable[Event], **meta: Any) -> dict[str, Any]:
    """The summary of a whole trace (`Summariser.summary`)."""
    summariser = Summariser()
    for item in events:
        summariser.add(item)
    return summariser.summary(**meta)


def _round(value: float) -> float:
    return round(value, DIGITS)

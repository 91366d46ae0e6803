"""Summaries of a trace: latency quantiles and availability per access path, failovers, counts.

One summariser serves every source: it reads shared trace events, so a simulated run and a
measured one are summarised the same way and can be compared number by number. Feed it events as
they happen (`Summariser.add`, a recorder sink) or all at once (`summarise`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from corral.model import Event, FailoverCompleted, FaultInjected, RequestCompleted, TunnelClosed, TunnelOpened

QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
DIGITS = 6


def succeeded(status: int) -> bool:
    """A request counts as served when it got a 2xx or 3xx answer."""
    return 200 <= status < 400


class Summariser:
    """Running aggregates of a trace; `summary()` turns them into a JSON-ready dict."""

    def __init__(self, *, bin_seconds: float = 10.0) -> None:
        self.bin_seconds = bin_seconds
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.totals: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.bins: dict[str, dict[int, list[int]]] = defaultdict(dict)
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

    def summary(self, **meta: Any) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for path in sorted(self.totals):
            values = np.asarray(self.latencies[path], dtype=float)
            served = len(values)
            total = self.totals[path]
            entry: dict[str, Any] = {
                "requests": total,
                "served": served,
                "failed": total - served,
                "availability": _round(served / total),
                "statuses": {str(code): n for code, n in sorted(self.statuses[path].items())},
            }
            if served:
                entry["latency_seconds"] = {
                    name: _round(float(np.percentile(values, q))) for name, q in QUANTILES.items()
                } | {"mean": _round(float(values.mean())), "max": _round(float(values.max()))}
            paths[path] = entry
        durations = [f.duration_seconds for f in self.failovers]
        return {
            **meta,
            "paths": paths,
            "failovers": {
                "count": len(durations),
                "max_seconds": _round(max(durations)) if durations else None,
                "mean_seconds": _round(sum(durations) / len(durations)) if durations else None,
                "each": [
                    {
                        "t": _round(f.t),
                        "cluster": f.cluster,
                        "from": f.from_agent,
                        "to": f.to_agent,
                        "seconds": _round(f.duration_seconds),
                    }
                    for f in self.failovers[:50]
                ],
            },
            "events": dict(sorted(self.events.items())),
        }

    def availability_timeline(self, path: str) -> tuple[list[float], list[float]]:
        """Bin start times and the fraction of requests served in each bin."""
        cells = sorted(self.bins.get(path, {}).items())
        return [b * self.bin_seconds for b, _ in cells], [ok / total for _, (ok, total) in cells]


def summarise(events: Iterable[Event], **meta: Any) -> dict[str, Any]:
    summariser = Summariser()
    for item in events:
        summariser.add(item)
    return summariser.summary(**meta)


def _round(value: float) -> float:
    return round(value, DIGITS)

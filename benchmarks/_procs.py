"""What the benchmarks read of the processes they measure (imported by the scripts beside it)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def cpu_seconds(pids: Iterable[int]) -> float:
    """User and system CPU time the processes (all their threads) have spent so far."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total

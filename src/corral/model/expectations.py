"""Expectations: the service levels a scenario should meet, checked on any trace of it.

    expectations:
      latency_p95_seconds: {proxy: 0.8, ace: 0.3}   # over successful requests, per access path
      availability: {ace: 1.0, proxy: 0.95}          # successful / all requests, per access path
      failover_max_seconds: 30                       # agent lost -> cluster reachable again

`corral.checks` turns each one into violations; the model and the measured system are
held to the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.model._fields import Field
from corral.model.workload import ACCESS_PATHS

_LATENCY_KEYS = ("latency_p50_seconds", "latency_p95_seconds", "latency_p99_seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectations:
    """Service-level objectives of a scenario; empty mappings mean no objective."""

    latency_seconds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Quantile name (``p50``, ``p95``, ``p99``) -> access path -> bound in seconds."""
    availability: Mapping[str, float] = field(default_factory=dict)
    """Access path -> smallest allowed fraction of successful requests."""
    failover_max_seconds: float | None = None

    @property
    def empty(self) -> bool:
        return not self.latency_seconds and not self.availability and self.failover_max_seconds is None


def read_expectations(node: Field) -> Expectations:
    if node.value is None:
        return Expectations()
    node.only(*_LATENCY_KEYS, "availability", "failover_max_seconds")
    latency: dict[str, dict[str, float]] = {}
    for key in _LATENCY_KEYS:
        if node.has(key):
            quantile = key.split("_")[1]
            latency[quantile] = _per_path(node.get(key), gt=0.0)
    availability = _per_path(node.get("availability", {}), ge=0.0, le=1.0)
    failover = node.get("failover_max_seconds", None)
    return Expectations(
        latency_seconds=latency,
        availability=availability,
        failover_max_seconds=None if failover.value is None else failover.number(gt=0.0),
    )


def _per_path(
    node: Field, *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> dict[str, float]:
    values: dict[str, float] = {}
    for path, value in node.items():
        if path not in ACCESS_PATHS:
            value.fail(f"unknown access path {path!r} (paths: {', '.join(ACCESS_PATHS)})")
        values[path] = value.number(gt=gt, ge=ge, le=le)
    return values

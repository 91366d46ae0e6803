"""SLO gating of a load run: the scenario's expectations, or Kubernetes' own API SLOs where it sets none.

The scenario's expectations are checked by `corral.checks` on the run's trace, as they are on a
simulated one, limited to the access paths the run carried (an expectation on a path the topology
could not carry is reported as not checked, not as met). Where the scenario sets no latency
quantile, the Kubernetes API call latency SLOs apply per path: p99 of single-object calls at most
1 s, of lists at most 30 s (over succeeded requests; watches are streams, not calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral.checks import Violation, check_failover_within, check_slos
from corral.model import Event, Expectations, RequestCompleted, Scenario, quantile, succeeded

SINGLE_OBJECT_VERBS = ("get", "create", "update", "patch", "delete")
K8S_SINGLE_OBJECT_P99_SECONDS = 1.0
K8S_LIST_P99_SECONDS = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    violations: tuple[Violation, ...]
    not_checked: tuple[str, ...]
    """Expectations the run could not judge (their path was not carried)."""
    slo_source: str
    """``scenario`` or ``kubernetes`` (the latency objectives applied)."""

    @property
    def passed(self) -> bool:
        return not self.violations


def gate(scenario: Scenario, events: Iterable[Event], *, paths: Sequence[str]) -> Verdict:
    """Violations of the run's objectives on the carried `paths`."""
    items = list(events)
    expect = scenario.expectations
    not_checked = [
        f"latency {name} on {path}"
        for name, bounds in sorted(expect.latency_seconds.items())
        for path in sorted(bounds)
        if path not in paths
    ]
    not_checked += [f"availability on {path}" for path in sorted(expect.availability) if path not in paths]
    limited = Expectations(
        latency_seconds={
            name: {p: b for p, b in bounds.items() if p in paths}
            for name, bounds in expect.latency_seconds.items()
            if any(p in paths for p in bounds)
        },
        availability={p: b for p, b in expect.availability.items() if p in paths},
        failover_max_seconds=expect.failover_max_seconds if "proxy" in paths else None,
    )
    if expect.failover_max_seconds is not None and "proxy" not in paths:
        not_checked.append("failover bound (the run did not carry the proxy path)")
    judged = dataclasses.replace(scenario, expectations=limited)
    violations = [*check_slos(judged, items), *check_failover_within(judged, items)]
    source = "scenario"
    if not limited.latency_seconds:
        source = "kubernetes"
        violations += kubernetes_slos(items, paths=paths)
    return Verdict(violations=tuple(violations), not_checked=tuple(not_checked), slo_source=source)


def kubernetes_slos(events: Iterable[Event], *, paths: Sequence[str]) -> list[Violation]:
    """Kubernetes' API call latency SLOs per path: single-object p99 <= 1 s, list p99 <= 30 s."""
    single: dict[str, list[float]] = {}
    lists: dict[str, list[float]] = {}
    for item in events:
        if not isinstance(item, RequestCompleted) or item.path not in paths or not succeeded(item.status):
            continue
        if item.verb in SINGLE_OBJECT_VERBS:
            single.setdefault(item.path, []).append(item.latency_seconds)
        elif item.verb == "list":
            lists.setdefault(item.path, []).append(item.latency_seconds)
    violations = []
    for what, samples, bound in (
        ("single-object calls", single, K8S_SINGLE_OBJECT_P99_SECONDS),
        ("lists", lists, K8S_LIST_P99_SECONDS),
    ):
        for path, values in sorted(samples.items()):
            p99 = quantile(values, 99.0)
            if p99 > bound:
                violations.append(
                    Violation(
                        "k8s-slo-latency",
                        f"{path} {what} p99 {p99:.4f} s exceeds {bound:g} s ({len(values)} requests)",
                    )
                )
    return violations

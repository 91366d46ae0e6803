"""Checks on traces: pure functions of (scenario, trace) that return violations, never raise on bad luck.

They read only shared trace events (`corral.model`), so the same check runs on any trace in that
format: today the SimPy model's, later measured ones (corral's own components, a real Rancher).
Fault windows come from the trace's `FaultInjected` events (what was actually done), topology
(regions of users, clusters and the server) from the scenario.

    violations = check_all(scenario, read_trace("trace.jsonl"))

Success, availability and quantiles are those of `corral.model.stats`: a request succeeded with a
2xx or 3xx status, and latency quantiles are taken over succeeded requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral.model import (
    Event,
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    Scenario,
    Summariser,
    TunnelClosed,
    TunnelOpened,
    availability,
    fault_windows,
    quantile,
    succeeded,
)
from corral.model.faults import link_target

Interval = tuple[float, float]
EPSILON = 1e-6
"""Slack for events written at the same instant (a tunnel closing as a request completes)."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken expectation: which check, when (if it is about a moment), and what."""

    check: str
    message: str
    t: float | None = None

    def __str__(self) -> str:
        when = f" at t={self.t:.3f}s" if self.t is not None else ""
        return f"{self.check}{when}: {self.message}"


# -- failover -----------------------------------------------------------------------------------


def check_failover_within(
    scenario: Scenario, trace: Iterable[Event], *, max_seconds: float | None = None
) -> list[Violation]:
    """Every cluster-agent loss is followed by a completed failover within `max_seconds`.

    A loss is a `kill-cluster-agent` fault, or a `crash` or `stop` of a cluster-agent replica
    (``<cluster>/cluster-agent[-<n>]``).

    The bound defaults to the scenario's ``expectations.failover_max_seconds``; without either,
    there is nothing to check.
    """
    bound = scenario.expectations.failover_max_seconds if max_seconds is None else max_seconds
    if bound is None:
        return []
    events = list(trace)
    failovers = [e for e in events if isinstance(e, FailoverCompleted)]
    violations = []
    for fault in events:
        if not isinstance(fault, FaultInjected) or fault.lifted:
            continue
        cluster = _lost_cluster_agent(fault)
        if cluster is None:
            continue
        done = [f for f in failovers if f.cluster == cluster and fault.t - EPSILON <= f.t]
        first = min(done, key=lambda f: f.t, default=None)
        if first is None:
            violations.append(
                Violation(
                    "failover",
                    f"cluster {cluster!r} lost its cluster agent and never failed over",
                    fault.t,
                )
            )
        elif first.t - fault.t > bound + EPSILON:
            violations.append(
                Violation(
                    "failover",
                    f"cluster {cluster!r} failed over to {first.to_agent!r} after "
                    f"{first.t - fault.t:.3f} s, more than {bound:g} s",
                    fault.t,
                )
            )
    return violations


def _lost_cluster_agent(fault: FaultInjected) -> str | None:
    """The cluster whose cluster-agent replica the fault takes away, if it does."""
    if fault.fault == "kill-cluster-agent":
        return fault.target
    if fault.fault in ("crash", "stop"):
        cluster, _, rest = fault.target.partition("/")
        if rest == "cluster-agent" or rest.startswith("cluster-agent-"):
            return cluster
    return None


def _server_down(windows: dict[tuple[str, str], list[Interval]]) -> list[Interval]:
    """When every server replica was down: `server-down`, or a crash or stop of ``server``."""
    return [w for kind in ("server-down", "crash", "stop") for w in windows.get((kind, "server"), [])]


# -- no success without a path --------------------------------------------------------------------


def check_no_success_while_paths_down(scenario: Scenario, trace: Iterable[Event]) -> list[Violation]:
    """No request succeeded while every way to its cluster was down for its whole duration.

    Proxy: down while the server is down, the user-server or server-cluster link is cut, or the
    cluster has no open tunnel session. ACE and direct: down while the user-cluster link is cut.
    """
    events = list(trace)
    end = max((e.t for e in events), default=0.0)
    windows = fault_windows(events, end=end)
    server_region = scenario.server.region
    users = {user.name: user for user in scenario.users}
    clusters = {cluster.name: cluster for cluster in scenario.clusters}
    no_tunnel = _no_tunnel_windows(events, end)
    violations = []
    cache: dict[tuple[str, str, str], list[Interval]] = {}
    for item in events:
        if not isinstance(item, RequestCompleted) or not succeeded(item.status):
            continue
        user, cluster = users.get(item.user), clusters.get(item.cluster)
        if user is None or cluster is None:
            continue
        key = (item.path, user.region, cluster.name)
        down = cache.get(key)
        if down is None:
            if item.path == "proxy":
                parts = _server_down(windows)
                parts += _link_windows(windows, user.region, server_region, scenario)
                parts += _link_windows(windows, cluster.region, server_region, scenario)
                parts += no_tunnel.get(cluster.name, [(0.0, end)])
            else:
                parts = _link_windows(windows, user.region, cluster.region, scenario)
            down = cache[key] = _merge(parts)
        start = item.t - item.latency_seconds
        if _covered((start + EPSILON, item.t - EPSILON), down):
            violations.append(
                Violation(
                    "no-success-without-path",
                    f"{item.path} {item.verb} by {item.user!r} to {item.cluster!r} succeeded "
                    f"({item.status}) although every path was down from t={start:.3f}s",
                    item.t,
                )
            )
    return violations


# -- ACE during a server outage -------------------------------------------------------------------


def check_ace_during_server_outage(scenario: Scenario, trace: Iterable[Event]) -> list[Violation]:
    """While the server was down, ACE requests kept succeeding (and there were some)."""
    del scenario  # the trace says when the server was down
    events = list(trace)
    end = max((e.t for e in events), default=0.0)
    outages = _server_down(fault_windows(events, end=end))
    violations = []
    for start, stop in outages:
        inside = [
            e
            for e in events
            if isinstance(e, RequestCompleted)
            and e.path == "ace"
            and start <= e.t - e.latency_seconds
            and e.t <= stop
        ]
        if not inside:
            violations.append(
                Violation(
                    "ace-during-outage",
                    f"no ACE request completed during the outage {start:g}-{stop:g} s",
                    start,
                )
            )
        violations += [
            Violation(
                "ace-during-outage",
                f"ACE {e.verb} by {e.user!r} to {e.cluster!r} failed with status {e.status} "
                "while the server was down",
                e.t,
            )
            for e in inside
            if not succeeded(e.status)
        ]
    return violations


# -- service levels -------------------------------------------------------------------------------


def check_slos(scenario: Scenario, trace: Iterable[Event]) -> list[Violation]:
    """The scenario's expectations: latency quantiles, availability per path, failover bound."""
    expect = scenario.expectations
    if expect.empty:
        return []
    summariser = Summariser()
    for item in trace:
        summariser.add(item)
    violations = []
    for name, bounds in sorted(expect.latency_seconds.items()):
        for path, bound in sorted(bounds.items()):
            values: Sequence[float] = summariser.latencies.get(path, [])
            if not values:
                violations.append(Violation("slo-latency", f"{path} {name}: no succeeded request to measure"))
                continue
            value = quantile(values, float(name[1:]))
            if value > bound:
                violations.append(
                    Violation(
                        "slo-latency",
                        f"{path} {name} latency {value:.4f} s exceeds {bound:g} s ({len(values)} requests)",
                    )
                )
    for path, floor in sorted(expect.availability.items()):
        total = summariser.totals[path]
        if not total:
            violations.append(Violation("slo-availability", f"{path}: no request to measure"))
            continue
        served = len(summariser.latencies.get(path, []))
        fraction = availability(served, total)
        if fraction < floor:
            violations.append(
                Violation(
                    "slo-availability",
                    f"{path} availability {fraction:.4f} ({served}/{total}) is below {floor:g}",
                )
            )
    limit = expect.failover_max_seconds
    if limit is not None:
        violations += [
            Violation(
                "slo-failover",
                f"cluster {f.cluster!r} failover to {f.to_agent!r} took {f.duration_seconds:.3f} s, "
                f"more than {limit:g} s",
                f.t,
            )
            for f in summariser.failovers
            if f.duration_seconds > limit + EPSILON
        ]
    return violations


def check_all(scenario: Scenario, trace: Iterable[Event]) -> list[Violation]:
    """Every check that applies to any scenario (the ACE outage check only where the server went down)."""
    events = list(trace)
    return [
        *check_failover_within(scenario, events),
        *check_no_success_while_paths_down(scenario, events),
        *check_ace_during_server_outage(scenario, events),
        *check_slos(scenario, events),
    ]


# -- helpers --------------------------------------------------------------------------------------


def _link_windows(
    windows: dict[tuple[str, str], list[Interval]], a: str, b: str, scenario: Scenario
) -> list[Interval]:
    if a == b:
        return []
    return list(windows.get(("partition", link_target(a, b, scenario.regions)), []))


def _no_tunnel_windows(events: Sequence[Event], end: float) -> dict[str, list[Interval]]:
    """cluster -> intervals with no open tunnel session (from t=0 to its first TunnelOpened too)."""
    open_agents: dict[str, set[str]] = {}
    empty_since: dict[str, float] = {}
    windows: dict[str, list[Interval]] = {}
    for item in events:
        if isinstance(item, TunnelOpened):
            agents = open_agents.setdefault(item.cluster, set())
            if not agents:
                windows.setdefault(item.cluster, []).append((empty_since.pop(item.cluster, 0.0), item.t))
            agents.add(item.agent)
        elif isinstance(item, TunnelClosed):
            agents = open_agents.setdefault(item.cluster, set())
            agents.discard(item.agent)
            if not agents:
                empty_since[item.cluster] = item.t
    for cluster, since in empty_since.items():
        windows.setdefault(cluster, []).append((since, end))
    return windows


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, stop in sorted(intervals):
        if merged and start <= merged[-1][1] + EPSILON:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _covered(span: Interval, merged: list[Interval]) -> bool:
    start, stop = span
    return any(a <= start and stop <= b for a, b in merged)

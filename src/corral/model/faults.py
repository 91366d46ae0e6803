"""Faults on a timeline: what breaks, when, for how long, and where.

    faults:
      - {kind: kill-cluster-agent, target: c-au, at_seconds: 60, duration_seconds: 40}
      - {kind: kill-node-agent, target: c-au/c-au-w1, at_seconds: 60, duration_seconds: 40}
      - {kind: server-down, at_seconds: 120, duration_seconds: 90}      # target: server (implied)
      - {kind: latency, target: [au, us], rtt_ms: 450, at_seconds: 0, duration_seconds: 60}
      - {kind: partition, target: [au, us], at_seconds: 200, duration_seconds: 120}

A fault is applied at ``at_seconds`` and lifted ``duration_seconds`` later (an agent restarts, the
server comes back, the link heals). Targets are written the same way in `FaultInjected` events:
a cluster name, ``cluster/node``, ``server``, or a link ``a<->b`` (regions in scenario order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corral.model._fields import Field
from corral.model.topology import Cluster

FaultKind = Literal["kill-cluster-agent", "kill-node-agent", "server-down", "latency", "partition"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "kill-cluster-agent",
    "kill-node-agent",
    "server-down",
    "latency",
    "partition",
)
LINK_SEPARATOR = "<->"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One fault of the timeline."""

    kind: FaultKind
    target: str
    at_seconds: float
    duration_seconds: float
    rtt_ms: float | None = None
    """The round-trip time of the link while a `latency` fault lasts."""

    @property
    def end_seconds(self) -> float:
        return self.at_seconds + self.duration_seconds

    @property
    def link(self) -> tuple[str, str]:
        """The two regions of a `latency` or `partition` fault."""
        a, _, b = self.target.partition(LINK_SEPARATOR)
        return a, b


def link_target(a: str, b: str, regions: Sequence[str]) -> str:
    """The canonical target string of a link (regions in scenario order)."""
    first, second = sorted((a, b), key=regions.index)
    return f"{first}{LINK_SEPARATOR}{second}"


def read_faults(node: Field, *, regions: tuple[str, ...], clusters: Sequence[Cluster]) -> tuple[Fault, ...]:
    """The `faults:` list, with each target checked against the scenario's topology."""
    by_name = {cluster.name: cluster for cluster in clusters}
    faults = []
    for item in node.sequence():
        kind: FaultKind = item.get("kind").string(choices=FAULT_KINDS)  # type: ignore[assignment]
        allowed = ["kind", "target", "at_seconds", "duration_seconds"]
        if kind == "latency":
            allowed.append("rtt_ms")
        item.only(*allowed)
        target_field = item.get("target", "server" if kind == "server-down" else None)
        if kind == "server-down":
            target = target_field.string(choices=("server",))
        elif kind == "kill-cluster-agent":
            target = target_field.string(choices=tuple(by_name)) if by_name else target_field.string()
        elif kind == "kill-node-agent":
            target = _node_target(target_field, by_name)
        else:
            target = _link(target_field, regions)
        faults.append(
            Fault(
                kind=kind,
                target=target,
                at_seconds=item.get("at_seconds").number(ge=0.0),
                duration_seconds=item.get("duration_seconds").number(gt=0.0),
                rtt_ms=item.get("rtt_ms").number(ge=0.0) if kind == "latency" else None,
            )
        )
    return tuple(faults)


def _node_target(node: Field, clusters: dict[str, Cluster]) -> str:
    text = node.string()
    cluster_name, _, node_name = text.partition("/")
    cluster = clusters.get(cluster_name)
    if cluster is None:
        node.fail(f"unknown cluster {cluster_name!r} (write cluster/node)")
    if cluster.agent != "rke1":
        node.fail(f"cluster {cluster_name!r} has agent profile {cluster.agent}, which runs no node agents")
    if node_name not in {n.name for n in cluster.nodes}:
        node.fail(f"cluster {cluster_name!r} has no node {node_name!r}")
    return text


def _link(node: Field, regions: tuple[str, ...]) -> str:
    if isinstance(node.value, str):
        parts = node.value.split(LINK_SEPARATOR)
        if len(parts) != 2:
            node.fail(f"must be a link [a, b] or 'a{LINK_SEPARATOR}b', got {node.value!r}")
        ends = parts
    else:
        items = node.sequence(nonempty=True)
        if len(items) != 2:
            node.fail(f"must name two regions, got {len(items)}")
        ends = [item.string() for item in items]
    for end in ends:
        if end not in regions:
            node.fail(f"unknown region {end!r} (regions: {', '.join(regions)})")
    if ends[0] == ends[1]:
        node.fail(f"a link joins two different regions, got {ends[0]!r} twice")
    return link_target(ends[0], ends[1], regions)

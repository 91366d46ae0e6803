"""Faults on a timeline: what breaks, when, for how long, and where.

    faults:
      - {kind: crash, target: c-au/cluster-agent, at_seconds: 60, duration_seconds: 40}
      - {kind: stop, target: c-au/cluster-agent-2, at_seconds: 60, duration_seconds: 40}
      - {kind: crash, target: c-au/c-au-cp1, at_seconds: 60, duration_seconds: 40}   # a whole node
      - {kind: stop, target: c-au/node-agent/c-au-w1, at_seconds: 60, duration_seconds: 40}
      - {kind: crash, target: server/2, at_seconds: 120, duration_seconds: 90}       # one replica
      - {kind: rolling-restart, at_seconds: 300, duration_seconds: 5}                # target: server
      - {kind: revoke-token, target: alice, at_seconds: 100, duration_seconds: 60}
      - {kind: latency, target: [au, us], rtt_ms: 450, at_seconds: 0, duration_seconds: 60}
      - {kind: partition, target: [au, us], at_seconds: 200, duration_seconds: 120}

A fault is applied at ``at_seconds`` and lifted ``duration_seconds`` later (a process restarts,
the node boots, the link heals, the user gets a new token). A ``crash`` (power loss, a kernel
panic, a partition of one host) closes nothing: peers learn it only from silence. A ``stop`` (a
process killed or shut down) closes its connections, so peers learn it at once. The older kinds
still load: ``kill-cluster-agent`` (target: a cluster) is a stop of its first cluster-agent
replica, ``kill-node-agent`` a stop of a node agent, ``server-down`` a stop of every server
replica. Targets are written the same way in `FaultInjected` events (links as ``a<->b``, regions
in scenario order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corral.model._fields import Field
from corral.model.server import Server
from corral.model.topology import Cluster, User

FaultKind = Literal[
    "crash",
    "stop",
    "rolling-restart",
    "revoke-token",
    "kill-cluster-agent",
    "kill-node-agent",
    "server-down",
    "latency",
    "partition",
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "kill-cluster-agent",
    "kill-node-agent",
    "server-down",
    "latency",
    "partition",
    "crash",
    "stop",
    "rolling-restart",
    "revoke-token",
)
LINK_SEPARATOR = "<->"
CLUSTER_AGENT = "cluster-agent"
NODE_AGENT = "node-agent"
SERVER = "server"


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

    @property
    def action(self) -> str:
        """``crash`` or ``stop`` for a fault on a process or node (older kinds are stops), else the kind."""
        return "stop" if self.kind in ("kill-cluster-agent", "kill-node-agent", "server-down") else self.kind

    @property
    def subject(self) -> tuple[str, str, str]:
        """What a crash or stop hits: (what, cluster, name).

        ``("server", "", "")`` every server replica, ``("server", "", "2")`` replica 2;
        ``("cluster-agent", c, "cluster-agent-2")``; ``("node-agent", c, node)``; ``("node", c, node)``.
        """
        if self.kind == "kill-cluster-agent":
            return (CLUSTER_AGENT, self.target, CLUSTER_AGENT)
        if self.kind == "kill-node-agent":
            cluster, _, node = self.target.partition("/")
            return (NODE_AGENT, cluster, node)
        if self.target == SERVER or self.target.startswith(SERVER + "/"):
            return (SERVER, "", self.target.partition("/")[2])
        cluster, _, rest = self.target.partition("/")
        if rest.startswith(NODE_AGENT + "/"):
            return (NODE_AGENT, cluster, rest.partition("/")[2])
        if rest == CLUSTER_AGENT or rest.startswith(CLUSTER_AGENT + "-"):
            return (CLUSTER_AGENT, cluster, rest)
        return ("node", cluster, rest)


def link_target(a: str, b: str, regions: Sequence[str]) -> str:
    """The canonical target string of a link (regions in scenario order)."""
    first, second = sorted((a, b), key=regions.index)
    return f"{first}{LINK_SEPARATOR}{second}"


def read_faults(
    node: Field,
    *,
    regions: tuple[str, ...],
    clusters: Sequence[Cluster],
    server: Server | None = None,
    users: Sequence[User] = (),
) -> tuple[Fault, ...]:
    """The `faults:` list, with each target checked against the scenario's topology."""
    by_name = {cluster.name: cluster for cluster in clusters}
    replicas = server.replicas if server is not None else 1
    faults = []
    for item in node.sequence():
        kind: FaultKind = item.get("kind").string(choices=FAULT_KINDS)  # type: ignore[assignment]
        allowed = ["kind", "target", "at_seconds", "duration_seconds"]
        if kind == "latency":
            allowed.append("rtt_ms")
        item.only(*allowed)
        implied = SERVER if kind in ("server-down", "rolling-restart") else None
        target_field = item.get("target", implied)
        if kind in ("server-down", "rolling-restart"):
            target = target_field.string(choices=(SERVER,))
        elif kind == "kill-cluster-agent":
            target = target_field.string(choices=tuple(by_name)) if by_name else target_field.string()
        elif kind == "kill-node-agent":
            target = _node_target(target_field, by_name)
        elif kind in ("crash", "stop"):
            target = _process_target(target_field, by_name, replicas)
        elif kind == "revoke-token":
            names = tuple(user.name for user in users)
            if not names:
                target_field.fail("revoke-token needs a user, and the scenario has none")
            target = target_field.string(choices=names)
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


def _process_target(node: Field, clusters: dict[str, Cluster], replicas: int) -> str:
    """``server``, ``server/<n>``, ``<cluster>/cluster-agent[-<n>]``, ``<cluster>/node-agent/<node>``
    or ``<cluster>/<node>``."""
    text = node.string()
    if text == SERVER:
        return text
    if text.startswith(SERVER + "/"):
        number = text.partition("/")[2]
        if not number.isdigit() or not 1 <= int(number) <= replicas:
            node.fail(f"the server has replicas 1 to {replicas}, got {text!r}")
        return f"{SERVER}/{int(number)}"
    cluster_name, _, rest = text.partition("/")
    cluster = clusters.get(cluster_name)
    if cluster is None or not rest:
        node.fail(
            f"must be server, server/<n>, <cluster>/cluster-agent[-<n>], <cluster>/node-agent/<node> "
            f"or <cluster>/<node>, got {text!r}"
        )
    if rest.startswith(NODE_AGENT + "/"):
        _node_target(
            Field(f"{cluster_name}/{rest.partition('/')[2]}", source=node.source, path=node.path), clusters
        )
        return text
    if rest == CLUSTER_AGENT or rest.startswith(CLUSTER_AGENT + "-"):
        names = [CLUSTER_AGENT] + [f"{CLUSTER_AGENT}-{i}" for i in range(2, cluster.cluster_agents + 1)]
        if rest not in names:
            node.fail(f"cluster {cluster_name!r} runs {', '.join(names)}, got {rest!r}")
        return text
    if rest not in {n.name for n in cluster.nodes}:
        node.fail(f"cluster {cluster_name!r} has no node {rest!r}")
    return text


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

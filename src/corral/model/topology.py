"""Topology: the regions and their round-trip times, the downstream clusters and their nodes, the users.

The parts of a scenario that everything else refers to: the workload selects users and clusters,
faults target clusters, nodes and links, the server sits in a region. This module depends on none
of those sections, so each of them (and `scenario`, which reads them all) can import it.

    regions: [us, au]
    rtt_ms:                      # one direction per pair is enough; the matrix is symmetric
      us: {au: 150}
    clusters:
      - name: c-us
        region: us
        agent: rke2              # rke2: cluster agent only; rke1: node agents as fallback
        agent_replicas: 2        # cluster-agent pods (default: 2 with two or more nodes, else 1)
        ace: false               # true: kube-api-auth and ACE contexts (corral up); implied by ace_fqdn
        ace_fqdn: false          # true: ACE through a load balancer in front of the control plane
        nodes:
          - {name: c-us-cp, roles: [controlplane, etcd]}
          - {name: c-us-w1, roles: [worker]}
    users:
      - {name: alice, region: au, groups: [devs]}

Large fleets are written compactly: a cluster or user entry with ``count`` is a generator whose
``name`` holds ``{i}`` (1-based, optionally zero-padded as ``{i:04d}``); node entries inside may use
``{cluster}`` and ``{i}`` and their own ``count``. Generated items are validated like written ones.

    clusters:
      - {name: "c-au-{i:04d}", count: 700, region: au, agent: rke1,
         nodes: [{name: "{cluster}-cp", roles: [controlplane, etcd]},
                 {name: "{cluster}-w{i}", count: 9, roles: [worker]}]}
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from corral.model._fields import Field

AgentProfile = Literal["rke1", "rke2"]
AGENT_PROFILES: tuple[AgentProfile, ...] = ("rke1", "rke2")
NODE_ROLES = ("controlplane", "etcd", "worker")
#: How the local provider makes nodes: Node objects only, or a kubelet and a containerd each.
NodeMode = Literal["virtual", "real"]
NODE_MODES: tuple[NodeMode, ...] = ("virtual", "real")


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A (virtual) node of a downstream cluster: a Node object and, for rke1, a node agent."""

    name: str
    roles: tuple[str, ...]

    @property
    def is_control_plane(self) -> bool:
        return "controlplane" in self.roles


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A downstream cluster: a kube-apiserver per control-plane node, its nodes and its agent profile."""

    name: str
    region: str
    agent: AgentProfile = "rke2"
    nodes: tuple[Node, ...]
    agent_replicas: int | None = None
    """Cluster-agent pods; ``None`` is Rancher's choice (`cluster_agents`)."""
    ace_fqdn: bool = False
    """ACE users reach the control plane through a load balancer (an FQDN) rather than one node."""
    ace: bool = False
    """The Authorized Cluster Endpoint is on (``corral up`` starts kube-api-auth and writes ACE contexts);
    true whenever ``ace_fqdn`` is. The SimPy model sends ``ace`` requests to any cluster and ignores it."""

    @property
    def control_plane_nodes(self) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.is_control_plane)

    @property
    def cluster_agents(self) -> int:
        """How many cluster-agent replicas run: as set, else two on clusters of two or more nodes.

        Rancher's cattle-cluster-agent Deployment runs two replicas when the cluster has two or
        more nodes and one otherwise (docs/rancher.md#cluster-agent-replicas).
        """
        if self.agent_replicas is not None:
            return self.agent_replicas
        return 2 if len(self.nodes) >= 2 else 1

    def agent_hosts(self) -> tuple[str, ...]:
        """The node each cluster-agent replica runs on: control-plane nodes first, one per node.

        Rancher's agent prefers control-plane nodes and spreads its replicas over nodes (a
        preferred anti-affinity); with more replicas than nodes they share nodes in turn.
        """
        order = [n.name for n in self.nodes if n.is_control_plane] + [
            n.name for n in self.nodes if not n.is_control_plane
        ]
        return tuple(order[i % len(order)] for i in range(self.cluster_agents))


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """A role-template binding of a user in one cluster: a cluster role, or a role in one project.

    ``role`` names a RoleTemplate (``cluster-member``, ``project-owner``, ...); with ``project``
    the binding is a project binding and ``namespaces`` are that project's namespaces.
    """

    cluster: str
    role: str
    project: str | None = None
    namespaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A user of the management server, with the region their requests start from."""

    name: str
    region: str
    groups: tuple[str, ...] = ()
    bindings: tuple[Binding, ...] = ()
    """Role-template bindings for ``corral up``; the SimPy model ignores them."""


_PLACEHOLDER = re.compile(r"\{(\w+)(?::0(\d)d)?\}")


def _generate(entries: list[Field], what: str) -> list[tuple[Field, str]]:
    """Expand entries with `count` into one (entry, name) pair per generated item."""
    out = []
    for item in entries:
        name_field = item.get("name")
        if not item.has("count"):
            out.append((item, name_field.string(dns_label=True)))
            continue
        count = item.get("count").integer(min=1, max=1_000_000)
        pattern = name_field.string()
        if "{i" not in pattern:
            name_field.fail(f"with count, the {what} name needs the placeholder {{i}}, got {pattern!r}")
        for index in range(1, count + 1):
            out.append((item, _expand(name_field, pattern, {"i": index})))
    return out


def _expand(node: Field, pattern: str, values: Mapping[str, object]) -> str:
    def replace(match: re.Match[str]) -> str:
        key, width = match.group(1), match.group(2)
        if key not in values:
            node.fail(f"unknown placeholder {{{key}}} (known: {', '.join('{' + k + '}' for k in values)})")
        value = values[key]
        return f"{value:0{width}d}" if width and isinstance(value, int) else str(value)

    name = _PLACEHOLDER.sub(replace, pattern)
    return Field(name, source=node.source, path=node.path).string(dns_label=True)


def read_regions(node: Field) -> tuple[str, ...]:
    items = node.sequence(nonempty=True)
    names = tuple(item.string(dns_label=True) for item in items)
    for index, name in enumerate(names):
        if name in names[:index]:
            items[index].fail(f"duplicate region {name!r}")
    return names


def read_rtt(node: Field, regions: tuple[str, ...]) -> dict[tuple[str, str], float]:
    given: dict[tuple[str, str], tuple[float, str]] = {}
    for a, row in node.items():
        if a not in regions:
            row.fail(f"unknown region {a!r} (regions: {', '.join(regions)})")
        for b, cell in row.items():
            if b not in regions:
                cell.fail(f"unknown region {b!r} (regions: {', '.join(regions)})")
            given[(a, b)] = (cell.number(ge=0.0), cell.path)
    rtt: dict[tuple[str, str], float] = {}
    for a, b in itertools.product(regions, repeat=2):
        forward, backward = given.get((a, b)), given.get((b, a))
        if forward and backward and forward[0] != backward[0]:
            Field(None, source=node.source, path=backward[1]).fail(
                f"must equal {forward[1]} ({forward[0]:g}), the matrix is symmetric; got {backward[0]:g}"
            )
        chosen = forward or backward
        if chosen is None:
            if a == b:
                rtt[(a, b)] = 0.0
                continue
            node.fail(f"missing round-trip time between {a!r} and {b!r}")
        rtt[(a, b)] = chosen[0]
    return rtt


def read_clusters(node: Field, regions: tuple[str, ...]) -> tuple[Cluster, ...]:
    items = node.sequence(nonempty=True)
    clusters = []
    seen: dict[str, str] = {}
    all_nodes: dict[str, str] = {}
    for item, name in _generate(items, "cluster"):
        item.only("name", "count", "region", "agent", "nodes", "agent_replicas", "ace", "ace_fqdn")
        if name in seen:
            item.get("name").fail(f"duplicate cluster {name!r} (first at {seen[name]})")
        seen[name] = item.path
        region = item.get("region").string(choices=regions)
        agent: AgentProfile = item.get("agent", "rke2").string(choices=AGENT_PROFILES)  # type: ignore[assignment]
        node_items = item.get("nodes").sequence(nonempty=True)
        nodes = []
        for node_item in node_items:
            node_item.only("name", "count", "roles")
            node_name_field = node_item.get("name")
            count = node_item.get("count", 1).integer(min=1, max=10_000) if node_item.has("count") else 0
            pattern = node_name_field.string()
            if count and "{i" not in pattern:
                node_name_field.fail(f"with count, a node name needs the placeholder {{i}}, got {pattern!r}")
            roles = tuple(dict.fromkeys(node_item.get("roles").strings(nonempty=True, choices=NODE_ROLES)))
            for index in range(1, max(count, 1) + 1):
                node_name = _expand(node_name_field, pattern, {"cluster": name, "i": index})
                if node_name in all_nodes:
                    node_name_field.fail(f"duplicate node {node_name!r} (first at {all_nodes[node_name]})")
                all_nodes[node_name] = node_name_field.path
                nodes.append(Node(name=node_name, roles=roles))
        if not any(n.is_control_plane for n in nodes):
            item.get("nodes").fail("needs at least one node with role controlplane")
        replicas_field = item.get("agent_replicas", None)
        replicas = None if replicas_field.value is None else replicas_field.integer(min=1, max=10)
        fqdn = item.get("ace_fqdn", False).boolean()
        clusters.append(
            Cluster(
                name=name,
                region=region,
                agent=agent,
                nodes=tuple(nodes),
                agent_replicas=replicas,
                ace_fqdn=fqdn,
                ace=item.get("ace", False).boolean() or fqdn,
            )
        )
    return tuple(clusters)


def read_bindings(node: Field, clusters: tuple[str, ...]) -> tuple[Binding, ...]:
    bindings = []
    seen: set[tuple[str, str | None, str]] = set()
    for item in node.sequence():
        item.only("cluster", "role", "project", "namespaces")
        cluster = item.get("cluster").string(choices=clusters)
        role = item.get("role").string(dns_label=True)
        project = item.get("project").string(dns_label=True) if item.has("project") else None
        namespaces = tuple(
            Field(n.value, source=n.source, path=n.path).string(dns_label=True)
            for n in item.get("namespaces", []).sequence()
        )
        if namespaces and project is None:
            item.get("namespaces").fail("namespaces belong to a project: add `project`")
        if (cluster, project, role) in seen:
            item.fail(
                f"duplicate binding of {role!r} in {cluster!r}" + (f" project {project!r}" if project else "")
            )
        seen.add((cluster, project, role))
        bindings.append(Binding(cluster=cluster, role=role, project=project, namespaces=namespaces))
    return tuple(bindings)


def read_users(node: Field, regions: tuple[str, ...], clusters: tuple[str, ...] = ()) -> tuple[User, ...]:
    users = []
    seen: dict[str, str] = {}
    for item, name in _generate(node.sequence(), "user"):
        item.only("name", "count", "region", "groups", "bindings")
        if name in seen:
            item.get("name").fail(f"duplicate user {name!r} (first at {seen[name]})")
        seen[name] = item.path
        users.append(
            User(
                name=name,
                region=item.get("region").string(choices=regions),
                groups=item.get("groups", []).strings(),
                bindings=read_bindings(item.get("bindings", []), clusters),
            )
        )
    return tuple(users)

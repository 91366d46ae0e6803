"""Scenario: what the world looks like, shared by the model, the real topology and the load runs.

A scenario file (YAML) names regions with a round-trip-time matrix, downstream clusters with
their virtual nodes and agent profile, and users. It is validated as a whole when loaded; any
bad value ends in one `ConfigError` whose message locates it
(``smoke.yaml: clusters[1].nodes: must not be empty``).

    name: smoke
    regions: [us, au]
    rtt_ms:                      # one direction per pair is enough; the matrix is symmetric
      us: {au: 150}
    clusters:
      - name: c-us
        region: us
        agent: rke2              # rke2: cluster agent only; rke1: node agents as fallback
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

The server, workload, faults and expectations sections live in their own modules (`server`,
`workload`, `faults`, `expectations`) and are read here after the topology they refer to.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from corral.errors import ConfigError
from corral.model._fields import Field
from corral.model.expectations import Expectations, read_expectations
from corral.model.faults import Fault, read_faults
from corral.model.server import Server, read_server
from corral.model.workload import WorkloadEntry, read_workload

AgentProfile = Literal["rke1", "rke2"]
AGENT_PROFILES: tuple[AgentProfile, ...] = ("rke1", "rke2")
NODE_ROLES = ("controlplane", "etcd", "worker")


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
    """A downstream cluster: one kube-apiserver, its nodes and its agent profile."""

    name: str
    region: str
    agent: AgentProfile = "rke2"
    nodes: tuple[Node, ...]

    @property
    def control_plane_nodes(self) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.is_control_plane)


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A user of the management server, with the region their requests start from."""

    name: str
    region: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A validated scenario. Build it with `Scenario.load` or `Scenario.from_dict`."""

    name: str
    regions: tuple[str, ...]
    rtt_ms: Mapping[tuple[str, str], float] = field(repr=False)
    clusters: tuple[Cluster, ...]
    users: tuple[User, ...] = ()
    source: str = field(default="<scenario>", compare=False)
    server: Server | None = None
    """The management server; `None` (only when built in code) means the first region, defaults."""
    workload: tuple[WorkloadEntry, ...] = ()
    faults: tuple[Fault, ...] = ()
    expectations: Expectations = field(default_factory=Expectations)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read and validate a scenario file; errors name the file by its base name."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read scenario: {e.strerror or e}") from e
        return cls.from_yaml(text, source=path.name)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<scenario>") -> Scenario:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
            problem = getattr(e, "problem", None) or str(e)
            raise ConfigError(f"{where}: invalid YAML: {problem}") from e
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<scenario>") -> Scenario:
        root = Field(data, source=source)
        root.only("name", "regions", "rtt_ms", "clusters", "users", *_EXTENSION_KEYS)
        name = root.get("name").string()
        regions = _read_regions(root.get("regions"))
        rtt = _read_rtt(root.get("rtt_ms", {}), regions)
        clusters = _read_clusters(root.get("clusters"), regions)
        users = _read_users(root.get("users", []), regions)
        return cls(
            name=name,
            regions=regions,
            rtt_ms=rtt,
            clusters=clusters,
            users=users,
            source=source,
            server=read_server(root.get("server", None), regions),
            workload=read_workload(root.get("workload", []), regions=regions, users=users, clusters=clusters),
            faults=read_faults(root.get("faults", []), regions=regions, clusters=clusters),
            expectations=read_expectations(root.get("expectations", None)),
        )

    # -- queries --------------------------------------------------------------------------------

    def rtt_seconds(self, a: str, b: str) -> float:
        """Round-trip time between two regions, in seconds."""
        try:
            return self.rtt_ms[(a, b)] / 1000.0
        except KeyError:
            raise ConfigError(f"{self.source}: no region pair ({a!r}, {b!r})") from None

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise ConfigError(f"{self.source}: no cluster named {name!r}")

    @property
    def management(self) -> Server:
        """The server section, or its defaults (first region) when the scenario was built in code."""
        return self.server if self.server is not None else Server(region=self.regions[0])

    @property
    def horizon_seconds(self) -> float:
        """When the last workload entry or fault ends (0 when there is neither)."""
        ends = [entry.end_seconds for entry in self.workload] + [fault.end_seconds for fault in self.faults]
        return max(ends, default=0.0)


# Top-level keys that later parts of the scenario (server, workload, faults, expectations) own.
_EXTENSION_KEYS: tuple[str, ...] = ("server", "workload", "faults", "expectations")
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


def _read_regions(node: Field) -> tuple[str, ...]:
    items = node.sequence(nonempty=True)
    names = tuple(item.string(dns_label=True) for item in items)
    for index, name in enumerate(names):
        if name in names[:index]:
            items[index].fail(f"duplicate region {name!r}")
    return names


def _read_rtt(node: Field, regions: tuple[str, ...]) -> dict[tuple[str, str], float]:
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


def _read_clusters(node: Field, regions: tuple[str, ...]) -> tuple[Cluster, ...]:
    items = node.sequence(nonempty=True)
    clusters = []
    seen: dict[str, str] = {}
    all_nodes: dict[str, str] = {}
    for item, name in _generate(items, "cluster"):
        item.only("name", "count", "region", "agent", "nodes")
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
        clusters.append(Cluster(name=name, region=region, agent=agent, nodes=tuple(nodes)))
    return tuple(clusters)


def _read_users(node: Field, regions: tuple[str, ...]) -> tuple[User, ...]:
    users = []
    seen: dict[str, str] = {}
    for item, name in _generate(node.sequence(), "user"):
        item.only("name", "count", "region", "groups")
        if name in seen:
            item.get("name").fail(f"duplicate user {name!r} (first at {seen[name]})")
        seen[name] = item.path
        users.append(
            User(
                name=name,
                region=item.get("region").string(choices=regions),
                groups=item.get("groups", []).strings(),
            )
        )
    return tuple(users)

"""Scenario: what the world looks like, shared by the SimPy model, the control planes and the checks.

A scenario file (YAML) has a topology (`topology`: regions, round-trip times, clusters, users) and
the sections that refer to it: `server`, `workload`, `faults` and `expectations`, each read by its
own module. The file is validated as a whole when loaded; any bad value ends in one `ConfigError`
whose message locates it (``smoke.yaml: clusters[1].nodes: must not be empty``).
docs/scenario.md describes every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from corral.errors import ConfigError
from corral.model._fields import Field
from corral.model.expectations import Expectations, read_expectations
from corral.model.faults import Fault, read_faults
from corral.model.server import Server, read_server
from corral.model.topology import Cluster, User, read_clusters, read_regions, read_rtt, read_users
from corral.model.workload import WorkloadEntry, read_workload

# Cluster and User are also importable from here (older imports); new code takes them from corral.model.
__all__ = ["Cluster", "Scenario", "User"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A validated scenario. Build it with `Scenario.load` or `Scenario.from_dict`."""

    name: str
    regions: tuple[str, ...]
    rtt_ms: Mapping[tuple[str, str], float] = field(repr=False)
    clusters: tuple[Cluster, ...]
    server: Server
    """Where the server runs and how big it is; a file without a `server:` section gets its defaults."""
    users: tuple[User, ...] = ()
    source: str = field(default="<scenario>", compare=False)
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
        regions = read_regions(root.get("regions"))
        rtt = read_rtt(root.get("rtt_ms", {}), regions)
        clusters = read_clusters(root.get("clusters"), regions)
        users = read_users(root.get("users", []), regions, tuple(c.name for c in clusters))
        server = read_server(root.get("server", None), regions)
        return cls(
            name=name,
            regions=regions,
            rtt_ms=rtt,
            clusters=clusters,
            users=users,
            source=source,
            server=server,
            workload=read_workload(root.get("workload", []), regions=regions, users=users, clusters=clusters),
            faults=read_faults(
                root.get("faults", []), regions=regions, clusters=clusters, server=server, users=users
            ),
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
    def horizon_seconds(self) -> float:
        """When the last workload entry (its streams held to the end) or fault ends (0 if neither)."""
        ends = [entry.end_seconds + (entry.hold_seconds if entry.stream else 0.0) for entry in self.workload]
        ends += [fault.end_seconds for fault in self.faults]
        return max(ends, default=0.0)


# Top-level keys that later parts of the scenario (server, workload, faults, expectations) own.
_EXTENSION_KEYS: tuple[str, ...] = ("server", "workload", "faults", "expectations")

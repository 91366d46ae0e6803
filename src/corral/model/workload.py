"""Workload: who sends which requests, how often, over which access path, and for how long.

Each entry selects users (by name, group and/or region; all given selectors must match), the
clusters they talk to, an access path and a request mix by verb with response sizes:

    workload:
      - groups: [devs]
        region: au
        path: ace                # proxy (through the server), ace (kube-api-auth), direct (admin)
        clusters: [c-au]         # default: every cluster
        clusters_per_user: 2     # optional: each user works with a fixed subset of that many
        rate_per_second: 0.5     # per selected user, Poisson arrivals
        start_seconds: 0
        duration_seconds: 300
        mix:
          - {verb: get, weight: 3, response_bytes: 4000}
          - {verb: list, weight: 1, response_bytes: 250000}

An entry with ``stream`` (``watch``, ``logs`` or ``exec``) opens long-running streams instead of
sending requests: each arrival holds one open for ``hold_seconds`` (default 300), re-establishing
it whenever a fault breaks it.

Selectors stay selectors (not resolved names) so a scenario scaled up in a sweep keeps its meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corral.model._fields import Field
from corral.model.topology import Cluster, User

AccessPath = Literal["proxy", "ace", "direct"]
ACCESS_PATHS: tuple[AccessPath, ...] = ("proxy", "ace", "direct")
Verb = Literal["get", "list", "create", "update", "patch", "delete"]
VERBS: tuple[Verb, ...] = ("get", "list", "create", "update", "patch", "delete")
StreamKind = Literal["watch", "logs", "exec"]
STREAM_KINDS: tuple[StreamKind, ...] = ("watch", "logs", "exec")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestKind:
    """One line of a request mix: a verb, its relative weight and the size of its response."""

    verb: Verb
    weight: float = 1.0
    response_bytes: int = 2_000


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadEntry:
    """A group of users sending one kind of traffic over one access path."""

    path: AccessPath
    rate_per_second: float
    """Mean request rate of each selected user (Poisson arrivals)."""
    duration_seconds: float
    start_seconds: float = 0.0
    user_names: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    region: str | None = None
    clusters: tuple[str, ...] = ()
    """Cluster names; empty means every cluster of the scenario."""
    clusters_per_user: int | None = None
    mix: tuple[RequestKind, ...] = (RequestKind(verb="get"),)
    stream: StreamKind | None = None
    """Open streams of this kind instead of sending requests."""
    hold_seconds: float = 300.0
    """How long a client keeps each stream open (`stream` entries only)."""

    @property
    def end_seconds(self) -> float:
        return self.start_seconds + self.duration_seconds

    def select_users(self, users: Sequence[User]) -> tuple[User, ...]:
        """The users this entry applies to, in scenario order."""
        return tuple(
            user
            for user in users
            if (not self.user_names or user.name in self.user_names)
            and (not self.groups or any(group in user.groups for group in self.groups))
            and (self.region is None or user.region == self.region)
        )

    def select_clusters(self, clusters: Sequence[Cluster]) -> tuple[Cluster, ...]:
        if not self.clusters:
            return tuple(clusters)
        wanted = set(self.clusters)
        return tuple(cluster for cluster in clusters if cluster.name in wanted)


_ENTRY_KEYS = (
    "users",
    "groups",
    "region",
    "path",
    "clusters",
    "clusters_per_user",
    "rate_per_second",
    "start_seconds",
    "duration_seconds",
    "mix",
    "stream",
    "hold_seconds",
)


def read_workload(
    node: Field, *, regions: tuple[str, ...], users: Sequence[User], clusters: Sequence[Cluster]
) -> tuple[WorkloadEntry, ...]:
    """The `workload:` list; every selector must match something that exists."""
    entries = []
    user_names = {user.name for user in users}
    cluster_names = {cluster.name for cluster in clusters}
    for item in node.sequence():
        item.only(*_ENTRY_KEYS)
        names = _names(item.get("users", []), user_names, "user")
        wanted_clusters = _names(item.get("clusters", []), cluster_names, "cluster")
        region_field = item.get("region", None)
        per_user_field = item.get("clusters_per_user", None)
        stream_field = item.get("stream", None)
        stream = None if stream_field.value is None else stream_field.string(choices=STREAM_KINDS)
        if stream is None and item.has("hold_seconds"):
            item.get("hold_seconds").fail("only a stream entry holds (set stream: watch, logs or exec)")
        entry = WorkloadEntry(
            path=item.get("path").string(choices=ACCESS_PATHS),  # type: ignore[arg-type]
            rate_per_second=item.get("rate_per_second").number(gt=0.0),
            start_seconds=item.get("start_seconds", 0.0).number(ge=0.0),
            duration_seconds=item.get("duration_seconds").number(gt=0.0),
            user_names=names,
            groups=item.get("groups", []).strings(),
            region=None if region_field.value is None else region_field.string(choices=regions),
            clusters=wanted_clusters,
            clusters_per_user=None if per_user_field.value is None else per_user_field.integer(min=1),
            mix=_read_mix(item.get("mix", [{"verb": "get"}])),
            stream=stream,  # type: ignore[arg-type]
            hold_seconds=item.get("hold_seconds", 300.0).number(gt=0.0),
        )
        if not entry.select_users(users):
            item.fail("selects no user (check users, groups and region)")
        entries.append(entry)
    return tuple(entries)


def _names(node: Field, known: set[str], what: str) -> tuple[str, ...]:
    names = []
    for item in node.sequence():
        name = item.string()
        if name not in known:
            item.fail(f"unknown {what} {name!r}")
        names.append(name)
    return tuple(names)


def _read_mix(node: Field) -> tuple[RequestKind, ...]:
    kinds = []
    for item in node.sequence(nonempty=True):
        item.only("verb", "weight", "response_bytes")
        kinds.append(
            RequestKind(
                verb=item.get("verb").string(choices=VERBS),  # type: ignore[arg-type]
                weight=item.get("weight", 1.0).number(gt=0.0),
                response_bytes=item.get("response_bytes", 2_000).integer(min=0, max=10**10),
            )
        )
    return tuple(kinds)

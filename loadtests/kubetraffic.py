"""kubectl-like traffic of a scenario's workload, without locust: actors, arrivals, requests, records.

Everything here is plain Python over `corral.model` (the only part of corral the load runs import),
so it is tested in the fast tests while the locustfile only adds gevent and HTTP. A run is driven by
a plan (JSON written by `corral load run`, see `corral.load.plan`): where each (path, cluster, user)
is reached and with which credentials, when the run starts (``epoch``, unix seconds) and stops,
and its bounds.

Objects are ConfigMaps in the plan's namespace. Reads go to fixtures the runner seeded, one per
response size of the mix (``corral-load-get-<bytes>``; lists select ``corral-load/list=<bytes>``).
Writes go to objects each greenlet owns alone (``<run>-<process>-g<greenlet>-<n>``), so the order of
its write log is the order the writes were made, and the check after the run can tell what each
object must hold.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.model import Scenario, WorkloadEntry

NAMESPACE = "corral-load"
RUN_LABEL = "corral-load/run"
LIST_LABEL = "corral-load/list"
OBJECT_OVERHEAD_BYTES = 300
"""Roughly what a ConfigMap's JSON carries besides its padding (metadata, managed fields)."""
MAX_OBJECT_BYTES = 500_000
"""Padding per object stays well under the 1 MiB limit of an object in etcd."""
WRITE_VERBS = ("create", "update", "patch", "delete")


def get_fixture_name(response_bytes: int) -> str:
    return f"corral-load-get-{response_bytes}"


def padding(response_bytes: int) -> int:
    return max(0, min(MAX_OBJECT_BYTES, response_bytes - OBJECT_OVERHEAD_BYTES))


def content_digest(data: Mapping[str, str]) -> str:
    """What the write log and the check compare: a digest of a ConfigMap's data."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:32]


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """How one (path, cluster, user) is reached: URLs (ACE may have several) and credential files."""

    path: str
    cluster: str
    user: str
    urls: tuple[str, ...]
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token_file: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    scenario: Scenario
    run_id: str
    epoch: float
    stop_at: float
    time_scale: float
    max_requests: int
    users: int
    namespace: str
    request_timeout_seconds: float
    retries: int
    max_streams: int
    out_dir: str
    targets: Mapping[tuple[str, str, str], Target] = field(default_factory=dict)


def read_plan(data: Mapping[str, Any]) -> Plan:
    """A plan document (see `corral.load.plan`) with its scenario loaded."""
    scenario = Scenario.load(data["scenario_file"])
    targets = {}
    for item in data["targets"]:
        target = Target(
            path=item["path"],
            cluster=item["cluster"],
            user=item["user"],
            urls=tuple(item["urls"]),
            ca_file=item.get("ca_file"),
            cert_file=item.get("cert_file"),
            key_file=item.get("key_file"),
            token_file=item.get("token_file"),
        )
        targets[(target.path, target.cluster, target.user)] = target
    return Plan(
        scenario=scenario,
        run_id=str(data["run_id"]),
        epoch=float(data["epoch"]),
        stop_at=float(data["stop_at"]),
        time_scale=float(data["time_scale"]),
        max_requests=int(data["max_requests"]),
        users=int(data["users"]),
        namespace=str(data.get("namespace", NAMESPACE)),
        request_timeout_seconds=float(data["request_timeout_seconds"]),
        retries=int(data["retries"]),
        max_streams=int(data["max_streams"]),
        out_dir=str(data["out_dir"]),
        targets=targets,
    )


# -- actors and arrivals -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """One scenario user of one workload entry: arrivals at `rate` (per wall second) within [start, end)."""

    entry: WorkloadEntry
    user: str
    clusters: tuple[str, ...]
    start: float
    end: float
    """Wall seconds after the epoch (the scenario's times scaled by the plan's time scale)."""

    @property
    def rate(self) -> float:
        return self.entry.rate_per_second


def actors(plan: Plan) -> list[Actor]:
    """The actors of the plan's scenario whose path and clusters the plan has targets for."""
    scenario = plan.scenario
    found = []
    for entry in scenario.workload:
        selected = entry.select_users(scenario.users)
        for index, user in enumerate(selected):
            clusters = [
                c.name
                for c in entry.select_clusters(scenario.clusters)
                if (entry.path, c.name, user.name) in plan.targets
            ]
            if not clusters:
                continue
            if entry.clusters_per_user is not None and entry.clusters_per_user < len(clusters):
                clusters = [clusters[(index + k) % len(clusters)] for k in range(entry.clusters_per_user)]
            found.append(
                Actor(
                    entry=entry,
                    user=user.name,
                    clusters=tuple(clusters),
                    start=entry.start_seconds * plan.time_scale,
                    end=entry.end_seconds * plan.time_scale,
                )
            )
    return found


class Arrivals:
    """One greenlet's share of every actor's Poisson arrivals, by thinning.

    With N greenlets each runs a Poisson process of rate Λ/N (Λ the sum of all actors' rates) and
    keeps a candidate at time t with probability λ(t)/Λ, λ(t) the rate of the actors active at t,
    handing it to one of them in proportion to its rate. Split and merged Poisson processes are
    Poisson, so all greenlets together produce each actor's arrivals at its own rate, however
    locust spreads the greenlets over workers.
    """

    def __init__(self, all_actors: Sequence[Actor], *, share: int, rng: random.Random) -> None:
        self.actors = list(all_actors)
        self.total_rate = math.fsum(a.rate for a in self.actors)
        self.share = max(1, share)
        self.rng = rng
        self.next_t = 0.0

    @property
    def horizon(self) -> float:
        return max((a.end for a in self.actors), default=0.0)

    def next(self, now: float) -> tuple[float, Actor | None]:
        """The next candidate time (>= the previous one) and its actor, None when it is thinned out."""
        if self.total_rate <= 0:
            return math.inf, None
        self.next_t = max(self.next_t, 0.0) + self.rng.expovariate(self.total_rate / self.share)
        t = self.next_t
        active = [a for a in self.actors if a.start <= t < a.end]
        if not active:
            return t, None
        pick = self.rng.random() * self.total_rate
        for actor in active:
            pick -= actor.rate
            if pick < 0:
                return t, actor
        return t, None


def pick_kind(entry: WorkloadEntry, rng: random.Random) -> tuple[str, int]:
    """A (verb, response_bytes) of the entry's mix, by weight."""
    total = math.fsum(k.weight for k in entry.mix)
    pick = rng.random() * total
    for kind in entry.mix:
        pick -= kind.weight
        if pick < 0:
            return kind.verb, kind.response_bytes
    last = entry.mix[-1]
    return last.verb, last.response_bytes


# -- requests ------------------------------------------------------------------------------------


def configmaps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


def configmap_body(*, name: str, run_id: str, version: int, pad_bytes: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {RUN_LABEL: run_id}},
        "data": object_data(version=version, pad_bytes=pad_bytes),
    }


def object_data(*, version: int, pad_bytes: int) -> dict[str, str]:
    return {"v": str(version), "pad": "x" * pad_bytes}


def classify(status: int) -> str:
    """``ok`` (2xx), ``rejected`` (a definite 4xx: the write did not happen) or ``uncertain``
    (no answer, 408, 429, 5xx: it may or may not have happened; a client retries these)."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500 and status not in (408, 429):
        return "rejected"
    return "uncertain"


def acknowledged(verb: str, status: int, *, attempt: int) -> bool:
    """A 2xx, or on a retry the answer that says the earlier attempt landed (409 to a create, 404 to a
    delete): the write is then as done as if the first answer had arrived."""
    if classify(status) == "ok":
        return True
    return attempt > 1 and ((verb == "create" and status == 409) or (verb == "delete" and status == 404))


def write_record(
    *,
    t: float,
    process: str,
    path: str,
    cluster: str,
    user: str,
    verb: str,
    name: str,
    status: int,
    attempts: int,
    outcome: Mapping[str, str] | None,
) -> dict[str, Any]:
    """One line of a write log: the write, its final status, and the content it leaves if it landed
    (``null`` for a delete)."""
    return {
        "t": round(t, 6),
        "process": process,
        "path": path,
        "cluster": cluster,
        "user": user,
        "verb": verb,
        "name": name,
        "status": status,
        "attempts": attempts,
        "acked": acknowledged(verb, status, attempt=attempts),
        "outcome": None if outcome is None else content_digest(outcome),
    }

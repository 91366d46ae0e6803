"""The load runs' traffic without locust: actors from a scenario, Poisson arrivals by thinning, the mix,
write records, and the conventions loadtests shares with corral.load (held equal here)."""

from __future__ import annotations

import math
import random

import pytest

from corral.load import plan as load_plan
from corral.load import writes as load_writes
from corral.model import Scenario
from loadtests import kubetraffic

SCENARIO = Scenario.from_dict(
    {
        "name": "t",
        "regions": ["us", "au"],
        "rtt_ms": {"us": {"au": 100}},
        "clusters": [
            {"name": "c1", "region": "us", "nodes": [{"name": "n1", "roles": ["controlplane"]}]},
            {"name": "c2", "region": "au", "nodes": [{"name": "n2", "roles": ["controlplane"]}]},
            {"name": "c3", "region": "au", "nodes": [{"name": "n3", "roles": ["controlplane"]}]},
        ],
        "users": [{"name": "a", "region": "au"}, {"name": "b", "region": "us"}],
        "workload": [
            {
                "users": ["a"],
                "path": "direct",
                "rate_per_second": 2,
                "start_seconds": 0,
                "duration_seconds": 100,
                "mix": [{"verb": "get", "weight": 3}, {"verb": "create", "weight": 1}],
            },
            {
                "users": ["a", "b"],
                "path": "proxy",
                "rate_per_second": 6,
                "start_seconds": 50,
                "duration_seconds": 100,
                "clusters_per_user": 2,
            },
        ],
    }
)


def _plan(paths: tuple[str, ...], *, time_scale: float = 1.0) -> kubetraffic.Plan:
    targets = {
        (p, c.name, u.name): kubetraffic.Target(
            path=p, cluster=c.name, user=u.name, urls=("https://127.0.0.1:1",)
        )
        for p in paths
        for c in SCENARIO.clusters
        for u in SCENARIO.users
    }
    return kubetraffic.Plan(
        scenario=SCENARIO,
        run_id="r1",
        epoch=0.0,
        stop_at=1e9,
        time_scale=time_scale,
        max_requests=10,
        users=4,
        namespace="ns",
        request_timeout_seconds=1,
        retries=2,
        max_streams=1,
        out_dir="/x",
        targets=targets,
    )


def test_actors_follow_the_workload_scaled_and_limited_to_carried_paths() -> None:
    found = kubetraffic.actors(_plan(("direct", "proxy"), time_scale=0.1))
    assert [(a.entry.path, a.user) for a in found] == [("direct", "a"), ("proxy", "a"), ("proxy", "b")]
    assert found[0].clusters == ("c1", "c2", "c3")
    assert (found[0].start, found[0].end) == pytest.approx((0.0, 10.0))
    assert (found[1].start, found[1].end) == pytest.approx((5.0, 15.0))
    # clusters_per_user picks a fixed subset per user, rotated by the user's index
    assert found[1].clusters == ("c1", "c2")
    assert found[2].clusters == ("c2", "c3")
    assert [a.entry.path for a in kubetraffic.actors(_plan(("direct",)))] == ["direct"]


def test_greenlets_together_produce_each_actors_rate_within_its_window() -> None:
    found = kubetraffic.actors(_plan(("direct", "proxy")))
    counts: dict[tuple[str, str], int] = {}
    early_proxy = 0
    for greenlet in range(4):
        arrivals = kubetraffic.Arrivals(found, share=4, rng=random.Random(greenlet))
        t = 0.0
        while t < arrivals.horizon:
            t, actor = arrivals.next(t)
            if actor is not None and t < arrivals.horizon:
                counts[(actor.entry.path, actor.user)] = counts.get((actor.entry.path, actor.user), 0) + 1
                early_proxy += actor.entry.path == "proxy" and t < 50
    assert early_proxy == 0
    for key, rate in ((("direct", "a"), 2 * 100), (("proxy", "a"), 6 * 100), (("proxy", "b"), 6 * 100)):
        # Poisson counts: within 5 standard deviations of the mean
        assert abs(counts[key] - rate) < 5 * math.sqrt(rate), (key, counts[key])


def test_the_mix_is_drawn_by_weight() -> None:
    entry = SCENARIO.workload[0]
    rng = random.Random(7)
    draws = [kubetraffic.pick_kind(entry, rng)[0] for _ in range(4000)]
    assert abs(draws.count("get") / 4000 - 0.75) < 0.03
    assert set(draws) == {"get", "create"}


@pytest.mark.parametrize(
    ("verb", "status", "attempt", "acked"),
    [
        ("create", 201, 1, True),
        ("create", 409, 1, False),
        ("create", 409, 2, True),  # a retry finds the first attempt's object
        ("delete", 404, 1, False),
        ("delete", 404, 3, True),
        ("update", 404, 2, False),
        ("patch", 503, 1, False),
    ],
)
def test_acknowledgement(verb: str, status: int, attempt: int, acked: bool) -> None:
    assert kubetraffic.acknowledged(verb, status, attempt=attempt) is acked


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (201, "ok"),
        (404, "rejected"),
        (409, "rejected"),
        (0, "uncertain"),
        (408, "uncertain"),
        (429, "uncertain"),
        (500, "uncertain"),
        (503, "uncertain"),
    ],
)
def test_status_classes_agree_between_the_load_processes_and_the_check(status: int, kind: str) -> None:
    assert kubetraffic.classify(status) == kind == load_writes.classify(status)


def test_conventions_are_the_same_on_both_sides() -> None:
    assert kubetraffic.NAMESPACE == load_plan.NAMESPACE
    assert kubetraffic.RUN_LABEL == load_plan.RUN_LABEL
    assert kubetraffic.LIST_LABEL == load_plan.LIST_LABEL
    assert kubetraffic.OBJECT_OVERHEAD_BYTES == load_plan.OBJECT_OVERHEAD_BYTES
    assert kubetraffic.MAX_OBJECT_BYTES == load_plan.MAX_OBJECT_BYTES
    data = kubetraffic.object_data(version=3, pad_bytes=10)
    assert kubetraffic.content_digest(data) == load_writes.content_digest(data)
    assert kubetraffic.content_digest(data) != load_writes.content_digest({**data, "v": "4"})


def test_a_write_record_carries_the_outcome_digest_and_not_the_content() -> None:
    data = kubetraffic.object_data(version=1, pad_bytes=5000)
    record = kubetraffic.write_record(
        t=1.5,
        process="local",
        path="direct",
        cluster="c1",
        user="a",
        verb="create",
        name="o1",
        status=201,
        attempts=1,
        outcome=data,
    )
    assert record["acked"] is True
    assert record["outcome"] == load_writes.content_digest(data)
    assert len(str(record)) < 400
    deleted = kubetraffic.write_record(
        t=2,
        process="local",
        path="direct",
        cluster="c1",
        user="a",
        verb="delete",
        name="o1",
        status=503,
        attempts=3,
        outcome=None,
    )
    assert deleted["acked"] is False
    assert deleted["outcome"] is None

"""Properties of the model that must hold for any world, checked on generated scenarios."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from corral.checks import check_no_success_while_paths_down
from corral.model import Event, FailoverCompleted, RequestCompleted, Scenario
from corral.sim.build import Simulation
from corral.sim.recorder import Recorder
from corral.sim.run import run_scenario

VERB_MIX = st.lists(
    st.fixed_dictionaries(
        {
            "verb": st.sampled_from(["get", "list", "create", "update", "patch", "delete"]),
            "weight": st.floats(min_value=0.1, max_value=5),
            "response_bytes": st.integers(min_value=0, max_value=2_000_000),
        }
    ),
    min_size=1,
    max_size=3,
)


def _line_world(positions: dict[str, float], base_ms: float) -> dict[str, Any]:
    """Regions on a line: RTT = distance + a fixed cost, which keeps the triangle inequality."""
    names = list(positions)
    rtt: dict[str, dict[str, float]] = {}
    for i, a in enumerate(names):
        rtt[a] = {a: base_ms / 2}
        for b in names[i + 1 :]:
            rtt[a][b] = abs(positions[a] - positions[b]) + base_ms
    return {"regions": names, "rtt_ms": rtt}


def _requests(scenario: Scenario, seed: int) -> list[RequestCompleted]:
    events: list[Event] = []
    Simulation(scenario, seed=seed, recorder=Recorder(events.append)).run()
    done = [e for e in events if isinstance(e, RequestCompleted)]
    return sorted(done, key=lambda e: e.t - e.latency_seconds)


@settings(max_examples=25)
@given(
    user_x=st.floats(min_value=0, max_value=300),
    server_x=st.floats(min_value=0, max_value=300),
    cluster_x=st.floats(min_value=0, max_value=300),
    base_ms=st.floats(min_value=0.1, max_value=50),
    mix=VERB_MIX,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_an_ace_request_is_never_slower_than_the_same_request_through_the_proxy(
    user_x: float, server_x: float, cluster_x: float, base_ms: float, mix: list[dict[str, Any]], seed: int
) -> None:
    """Unless the server sits nearer the user than the cluster does.

    Each command opens a new connection: its handshakes and slow start cost round trips to the
    endpoint, and a nearby server takes them over a short link while its tunnel to the far
    cluster is already open and warm (a split connection), which can beat ACE.
    """
    assume(abs(user_x - server_x) >= abs(user_x - cluster_x))
    world = _line_world({"home": user_x, "hq": server_x, "edge": cluster_x}, base_ms)
    latencies = {}
    for path in ("proxy", "ace"):
        scenario = Scenario.from_dict(
            {
                "name": "pair",
                **world,
                "server": {"region": "hq"},
                "clusters": [
                    {"name": "c", "region": "edge", "nodes": [{"name": "n", "roles": ["controlplane"]}]}
                ],
                "users": [{"name": "u", "region": "home"}],
                "workload": [
                    {
                        "users": ["u"],
                        "path": path,
                        "rate_per_second": 1,
                        "start_seconds": 5,
                        "duration_seconds": 4,
                        "mix": mix,
                    }
                ],
            },
            source="pair.yaml",
        )
        latencies[path] = _requests(scenario, seed)
    assert len(latencies["ace"]) == len(latencies["proxy"])
    for ace, proxy in zip(latencies["ace"], latencies["proxy"], strict=True):
        assert (ace.verb, ace.status, proxy.status) == (proxy.verb, 200, 200)
        assert ace.latency_seconds <= proxy.latency_seconds


FAULTS = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"kind": st.just("kill-cluster-agent"), "target": st.sampled_from(["c-us", "c-au"])}
        ),
        st.fixed_dictionaries({"kind": st.just("kill-node-agent"), "target": st.just("c-au/c-au-w1")}),
        st.fixed_dictionaries({"kind": st.just("server-down")}),
        st.fixed_dictionaries({"kind": st.just("partition"), "target": st.just(["us", "au"])}),
        st.fixed_dictionaries(
            {"kind": st.just("latency"), "target": st.just(["us", "au"]), "rtt_ms": st.floats(0, 2000)}
        ),
    ).flatmap(
        lambda fault: st.fixed_dictionaries(
            {"at_seconds": st.floats(0, 100), "duration_seconds": st.floats(0.5, 90)}
        ).map(lambda timing: {**fault, **timing})
    ),
    max_size=4,
)


def _smoke_with(faults: list[dict[str, Any]], rate: float) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "faulty",
            "regions": ["us", "au"],
            "rtt_ms": {"us": {"us": 1, "au": 150}, "au": {"au": 1}},
            "server": {"region": "us", "workers": 2},
            "clusters": [
                {"name": "c-us", "region": "us", "nodes": [{"name": "c-us-cp", "roles": ["controlplane"]}]},
                {
                    "name": "c-au",
                    "region": "au",
                    "agent": "rke1",
                    "nodes": [
                        {"name": "c-au-cp", "roles": ["controlplane"]},
                        {"name": "c-au-w1", "roles": ["worker"]},
                    ],
                },
            ],
            "users": [{"name": "alice", "region": "au"}, {"name": "bob", "region": "us"}],
            "workload": [
                {"users": ["alice"], "path": "proxy", "rate_per_second": rate, "duration_seconds": 150},
                {"users": ["alice"], "path": "ace", "rate_per_second": rate, "duration_seconds": 150},
                {"users": ["bob"], "path": "direct", "rate_per_second": rate, "duration_seconds": 150},
            ],
            "faults": faults,
        },
        source="faulty.yaml",
    )


SERVER_OUTAGES = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.just("server-down"),
            "at_seconds": st.floats(0, 140),
            "duration_seconds": st.floats(0.5, 90),
        }
    ),
    max_size=3,
)


@settings(max_examples=20)
@given(outages=SERVER_OUTAGES, rate=st.floats(min_value=0.05, max_value=5), seed=st.integers(0, 2**32))
def test_without_faults_every_request_is_served_and_a_server_outage_spares_ace_and_direct(
    outages: list[dict[str, Any]], rate: float, seed: int
) -> None:
    """A healthy world serves everything; the server's outages touch only the path through it."""
    summary = run_scenario(_smoke_with(outages, rate), seed=seed).summary
    unaffected = ["ace", "direct"] if outages else ["ace", "direct", "proxy"]
    for path in unaffected:
        stats = summary["paths"][path]
        assert stats["statuses"] == {"200": stats["requests"]}, path
        assert stats["availability"] == 1.0
    # The proxy path needs the server: an outage long enough to catch about 20 of its requests
    # (Poisson: missing them all has odds of 2e-9) inside the workload's 150 s shows as failures.
    if any(
        o["duration_seconds"] * rate >= 20 and o["at_seconds"] + o["duration_seconds"] <= 150 for o in outages
    ):
        assert summary["paths"]["proxy"]["failed"] > 0


@settings(max_examples=8)
@given(faults=FAULTS, seed=st.integers(0, 2**32))
def test_the_same_seed_gives_the_same_trace(faults: list[dict[str, Any]], seed: int) -> None:
    scenario = _smoke_with(faults, 1.0)
    first: list[Event] = []
    second: list[Event] = []
    Simulation(scenario, seed=seed, recorder=Recorder(first.append)).run()
    Simulation(scenario, seed=seed, recorder=Recorder(second.append)).run()
    assert first == second
    assert any(isinstance(e, RequestCompleted) for e in first)


@settings(max_examples=20)
@given(faults=FAULTS, seed=st.integers(0, 2**32))
def test_no_simulated_request_succeeds_while_every_path_to_its_cluster_is_down(
    faults: list[dict[str, Any]], seed: int
) -> None:
    scenario = _smoke_with(faults, 2.0)
    events: list[Event] = []
    Simulation(scenario, seed=seed, recorder=Recorder(events.append)).run()
    assert [str(v) for v in check_no_success_while_paths_down(scenario, events)] == []


def test_different_seeds_give_different_traces() -> None:
    scenario = _smoke_with([], 1.0)
    assert _requests(scenario, 1) != _requests(scenario, 2)


# -- failover and outages ---------------------------------------------------------------------------


def _agent_world(*, replicas: int, agent: str, rtt_ms: float, faults: list[dict[str, Any]]) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "replicas",
            "regions": ["us", "eu"],
            "rtt_ms": {"us": {"us": 1, "eu": rtt_ms}, "eu": {"eu": 1}},
            "server": {"region": "us"},
            "clusters": [
                {
                    "name": "c",
                    "region": "eu",
                    "agent": agent,
                    "agent_replicas": replicas,
                    "nodes": [
                        {"name": "cp", "roles": ["controlplane"]},
                        {"name": "w1", "roles": ["worker"]},
                    ],
                }
            ],
            "users": [{"name": "u", "region": "us"}],
            "workload": [{"users": ["u"], "path": "proxy", "rate_per_second": 1, "duration_seconds": 200}],
            "faults": faults,
        },
        source="replicas.yaml",
    )


def _failover_seconds(scenario: Scenario, seed: int) -> float:
    events: list[Event] = []
    Simulation(scenario, seed=seed, recorder=Recorder(events.append)).run()
    return min(e.duration_seconds for e in events if isinstance(e, FailoverCompleted))


LOSS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["crash", "stop"]),
        "target": st.just("c/cluster-agent"),
        "at_seconds": st.floats(5, 120),
        "duration_seconds": st.floats(1, 80),
    }
)


@settings(max_examples=25, deadline=None)
@given(
    loss=LOSS,
    agent=st.sampled_from(["rke1", "rke2"]),
    rtt_ms=st.floats(1, 300),
    seed=st.integers(0, 2**32),
)
def test_two_cluster_agent_replicas_never_fail_over_slower_than_one(
    loss: dict[str, Any], agent: str, rtt_ms: float, seed: int
) -> None:
    one = _failover_seconds(_agent_world(replicas=1, agent=agent, rtt_ms=rtt_ms, faults=[loss]), seed)
    two = _failover_seconds(_agent_world(replicas=2, agent=agent, rtt_ms=rtt_ms, faults=[loss]), seed)
    assert two <= one


@settings(max_examples=25, deadline=None)
@given(
    loss=LOSS,
    replicas=st.integers(1, 2),
    agent=st.sampled_from(["rke1", "rke2"]),
    rtt_ms=st.floats(1, 300),
    seed=st.integers(0, 2**32),
)
def test_a_crash_never_fails_over_faster_than_a_clean_stop(
    loss: dict[str, Any], replicas: int, agent: str, rtt_ms: float, seed: int
) -> None:
    def failover(kind: str) -> float:
        world = _agent_world(replicas=replicas, agent=agent, rtt_ms=rtt_ms, faults=[{**loss, "kind": kind}])
        return _failover_seconds(world, seed)

    assert failover("crash") >= failover("stop")


OUTAGES = st.sampled_from(
    [
        {"kind": "stop", "target": "server"},
        {"kind": "stop", "target": "c-au/cluster-agent"},
        {"kind": "crash", "target": "c-au/c-au-cp"},
        {"kind": "partition", "target": ["us", "au"]},
    ]
)
"""Outages whose end moves service's return later by as much. Not a crashed server: its agents'
retry cadence runs on handshake timeouts while it is down and on refusals once it restarts, so a
few seconds more of outage can line a retry up with its return (as on a real one)."""


@settings(max_examples=20, deadline=None)
@given(
    outage=OUTAGES,
    at=st.floats(0, 100),
    shorter=st.floats(0.5, 90),
    longer_by=st.floats(0, 90),
    seed=st.integers(0, 2**32),
)
def test_availability_never_increases_with_a_longer_outage(
    outage: dict[str, Any], at: float, shorter: float, longer_by: float, seed: int
) -> None:
    def availability(duration: float) -> dict[str, float]:
        faults = [{**outage, "at_seconds": at, "duration_seconds": duration}]
        summary = run_scenario(_smoke_with(faults, 2.0), seed=seed).summary
        return {path: stats["availability"] for path, stats in summary["paths"].items()}

    short, long = availability(shorter), availability(shorter + longer_by)
    assert all(long[path] <= short[path] for path in short), (short, long)

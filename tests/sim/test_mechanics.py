"""The mechanics of the model, one at a time, asserted on exact traces of tiny worlds."""

from __future__ import annotations

import math
from typing import Any

import pytest
import simpy

from corral.model import (
    ClusterConditionChanged,
    Event,
    FailoverCompleted,
    ImpersonationAccountEnsured,
    RequestCompleted,
    Scenario,
    TunnelClosed,
    TunnelOpened,
)
from corral.sim.apiserver import PriorityLevel
from corral.sim.build import Simulation
from corral.sim.recorder import Recorder

RTT_MS = 90.0


def world(
    agent: str = "rke1",
    *,
    faults: tuple[dict[str, Any], ...] = (),
    workload: tuple[dict[str, Any], ...] = (),
    user_region: str = "eu",
    agent_replicas: int = 1,
    nodes: tuple[dict[str, Any], ...] = (
        {"name": "cp", "roles": ["controlplane"]},
        {"name": "w1", "roles": ["worker"]},
    ),
    server: dict[str, Any] | None = None,
    ace_fqdn: bool = False,
) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "m",
            "regions": ["us", "eu"],
            "rtt_ms": {"us": {"us": 1, "eu": RTT_MS}, "eu": {"eu": 1}},
            "server": {"region": "us", **(server or {})},
            "clusters": [
                {
                    "name": "c",
                    "region": "eu",
                    "agent": agent,
                    "agent_replicas": agent_replicas,
                    "ace_fqdn": ace_fqdn,
                    "nodes": list(nodes),
                }
            ],
            "users": [{"name": "erik", "region": user_region}],
            "workload": list(workload),
            "faults": list(faults),
        },
        source="m.yaml",
    )


def run(scenario: Scenario, seed: int = 1) -> list[Event]:
    events: list[Event] = []
    Simulation(scenario, seed=seed, recorder=Recorder(events.append)).run()
    return events


def of(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


KILL = {"kind": "kill-cluster-agent", "target": "c", "at_seconds": 100, "duration_seconds": 60}
PROXY = {
    "users": ["erik"],
    "path": "proxy",
    "rate_per_second": 2,
    "start_seconds": 5,
    "duration_seconds": 250,
}


def test_rke1_fails_over_to_the_first_node_agent_as_soon_as_the_server_sees_the_loss() -> None:
    events = run(world("rke1", faults=(KILL,)))
    [failover] = of(events, FailoverCompleted)
    assert (failover.to_agent, failover.t) == ("node-agent/cp", pytest.approx(100 + RTT_MS / 2000))
    connected = [(e.t, e.connected) for e in of(events, ClusterConditionChanged)]
    assert connected == [
        (15.0, True),
        (105.0, False),
        (180.0, True),  # back at 160 + 5 s process start + handshake: the tick after 165
    ]  # Connected follows the cluster agent only


def test_rke2_waits_for_the_restarted_cluster_agent_and_answers_500_meanwhile() -> None:
    events = run(world("rke2", faults=(KILL,), workload=(PROXY,)))
    [failover] = of(events, FailoverCompleted)
    handshake = 3 * RTT_MS / 1000
    assert failover.to_agent == "cluster-agent"
    # down for 60 s, process start 5 s, handshake 3 RTT, then a few ms of authorisation
    assert 60 + 5.0 + handshake < failover.duration_seconds < 60 + 5.0 + handshake + 0.05
    during = [e for e in of(events, RequestCompleted) if 100 < e.t - e.latency_seconds < 160]
    assert {e.status for e in during} == {200, 500}
    assert all(e.latency_seconds <= 4 * 10 + 1 for e in during if e.status == 500)
    assert all(e.t >= failover.t for e in during if e.status == 200)


def test_a_partition_closes_sessions_at_the_read_deadline_after_the_last_ping() -> None:
    cut = {"kind": "partition", "target": ["eu", "us"], "at_seconds": 103, "duration_seconds": 100}
    events = run(world("rke2", faults=(cut,)))
    opened = of(events, TunnelOpened)[0]
    closed = of(events, TunnelClosed)[0]
    last_ping = opened.t + 5 * math.floor((103 - opened.t) / 5)
    assert (closed.reason, closed.t) == ("read deadline", pytest.approx(last_ping + 60))
    reopened = of(events, TunnelOpened)[1]
    assert 203 <= reopened.t <= 203 + 10 + 10 + 1  # next attempt after the heal (10 s cadence, 10 s timeout)


def test_a_partition_shorter_than_the_read_deadline_keeps_the_session() -> None:
    blip = {"kind": "partition", "target": ["eu", "us"], "at_seconds": 100, "duration_seconds": 20}
    # The user sits next to the server, so only the tunnel's link is cut.
    events = run(world("rke2", faults=(blip,), workload=(PROXY,), user_region="us"))
    assert of(events, TunnelClosed) == []
    stalled = [e for e in of(events, RequestCompleted) if 100 < e.t - e.latency_seconds < 120]
    assert stalled
    assert all(e.status == 200 and e.t >= 120 for e in stalled)  # held until frames flow again


def test_a_server_outage_drops_every_tunnel_and_the_first_request_after_it_finds_the_account() -> None:
    down = {"kind": "server-down", "at_seconds": 100, "duration_seconds": 30}
    events = run(world("rke1", faults=(down,), workload=(PROXY,)))
    assert {(e.agent, e.reason, e.t) for e in of(events, TunnelClosed)} == {
        ("cluster-agent", "server down", 100.0),
        ("node-agent/cp", "server down", 100.0),
        ("node-agent/w1", "server down", 100.0),
    }
    assert [e.created for e in of(events, ImpersonationAccountEnsured)] == [True, False]
    outage = [e for e in of(events, RequestCompleted) if 100 < e.t - e.latency_seconds < 130]
    assert outage
    assert {e.status for e in outage} == {0}
    assert of(events, FailoverCompleted) == []  # an outage is not a failover


def test_concurrent_first_requests_create_the_impersonation_account_once() -> None:
    burst = {**PROXY, "rate_per_second": 50, "duration_seconds": 2}
    events = run(world("rke2", workload=(burst,)))
    assert [e.created for e in of(events, ImpersonationAccountEnsured)] == [True]
    assert len(of(events, RequestCompleted)) > 10


def test_with_the_cluster_agent_gone_a_killed_node_agent_hands_over_to_the_next_one() -> None:
    lose_cp = {"kind": "kill-node-agent", "target": "c/cp", "at_seconds": 120, "duration_seconds": 20}
    events = run(world("rke1", faults=(KILL, lose_cp), workload=(PROXY,), user_region="us"))
    during = [e for e in of(events, RequestCompleted) if 100.1 < e.t - e.latency_seconds < 160]
    assert {e.status for e in during} <= {200, 500}  # only requests caught on the dying session fail
    after_handover = [e for e in during if e.t - e.latency_seconds > 120.1]
    assert after_handover
    assert {e.status for e in after_handover} == {200}
    closed = [(e.agent, e.reason) for e in of(events, TunnelClosed)]
    assert closed == [("cluster-agent", "agent killed"), ("node-agent/cp", "agent killed")]


def test_a_kill_behind_a_cut_link_is_noticed_only_at_the_read_deadline() -> None:
    cut = {"kind": "partition", "target": ["eu", "us"], "at_seconds": 100, "duration_seconds": 200}
    late_kill = {**KILL, "at_seconds": 110}
    events = run(world("rke2", faults=(cut, late_kill)))
    [closed] = of(events, TunnelClosed)
    assert closed.reason == "read deadline"
    assert closed.t > 150


def test_a_slower_calibrated_apiserver_slows_every_path() -> None:
    from corral.model import Calibration

    scenario = world(
        "rke2",
        workload=(PROXY, {**PROXY, "path": "ace"}, {**PROXY, "path": "direct"}),
    )
    slow = Calibration.from_dict({"apiserver": {"verbs": {"get": {"median_seconds": 0.5, "sigma": 0.2}}}})

    def medians(calibration: Calibration | None) -> dict[str, float]:
        events: list[Event] = []
        Simulation(scenario, seed=1, calibration=calibration, recorder=Recorder(events.append)).run()
        by_path: dict[str, list[float]] = {}
        for e in of(events, RequestCompleted):
            by_path.setdefault(e.path, []).append(e.latency_seconds)
        return {path: sorted(values)[len(values) // 2] for path, values in by_path.items()}

    fast, slowed = medians(None), medians(slow)
    assert set(fast) == {"proxy", "ace", "direct"}
    assert all(slowed[path] > fast[path] + 0.3 for path in fast)


def test_priority_and_fairness_serves_flows_round_robin_and_rejects_beyond_the_queue_limit() -> None:
    env = simpy.Environment()
    level = PriorityLevel(env, seats=1, queue_limit=4)
    assert level.enter("busy") is None
    tickets = {name: level.enter(flow) for name, flow in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")]}
    assert level.enter("c") is False
    order: list[str] = []
    for _ in range(4):
        level.leave()
        order += [
            name
            for name, ticket in tickets.items()
            if isinstance(ticket, simpy.Event) and ticket.triggered and name not in order
        ]
    assert order == ["a1", "b1", "a2", "a3"]

"""Trace checks: each catches a hand-made violating trace and passes a good one and a simulated one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.checks import (
    check_ace_during_server_outage,
    check_all,
    check_failover_within,
    check_no_success_while_paths_down,
    check_slos,
)
from corral.model import (
    Event,
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    Scenario,
    TunnelClosed,
    TunnelOpened,
)
from corral.sim.build import Simulation
from corral.sim.recorder import Recorder

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"


@pytest.fixture
def scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "name": "c",
            "regions": ["us", "au"],
            "rtt_ms": {"us": {"au": 150}},
            "server": {"region": "us"},
            "clusters": [
                {"name": "c-au", "region": "au", "nodes": [{"name": "n", "roles": ["controlplane"]}]}
            ],
            "users": [{"name": "alice", "region": "au"}],
            "expectations": {
                "latency_p95_seconds": {"ace": 0.05},
                "availability": {"proxy": 0.75},
                "failover_max_seconds": 10,
            },
        },
        source="c.yaml",
    )


def request(t: float, *, path: str = "proxy", status: int = 200, latency: float = 0.3) -> RequestCompleted:
    return RequestCompleted(
        t=t, path=path, cluster="c-au", user="alice", verb="get", status=status, latency_seconds=latency
    )


OPENED = TunnelOpened(t=1.0, cluster="c-au", agent="cluster-agent")


def kill(t: float, lifted: bool = False) -> FaultInjected:
    return FaultInjected(t=t, fault="kill-cluster-agent", target="c-au", lifted=lifted)


def failover(t: float, duration: float) -> FailoverCompleted:
    return FailoverCompleted(
        t=t, cluster="c-au", from_agent="cluster-agent", to_agent="cluster-agent", duration_seconds=duration
    )


def test_a_failover_within_the_bound_passes(scenario: Scenario) -> None:
    assert check_failover_within(scenario, [OPENED, kill(50), failover(58, 8)]) == []


def test_a_late_failover_is_a_violation(scenario: Scenario) -> None:
    [violation] = check_failover_within(scenario, [OPENED, kill(50), failover(75, 25)])
    assert violation.check == "failover"
    assert "after 25.000 s, more than 10 s" in violation.message


def test_a_missing_failover_is_a_violation_and_the_bound_can_be_given(scenario: Scenario) -> None:
    [violation] = check_failover_within(scenario, [OPENED, kill(50)], max_seconds=100)
    assert "never failed over" in violation.message
    assert violation.t == 50


def test_a_proxy_success_without_any_tunnel_is_a_violation(scenario: Scenario) -> None:
    trace: list[Event] = [
        OPENED,
        TunnelClosed(t=10.0, cluster="c-au", agent="cluster-agent", reason="agent killed"),
        request(20.0),
        TunnelOpened(t=30.0, cluster="c-au", agent="cluster-agent"),
        request(31.0),
    ]
    [violation] = check_no_success_while_paths_down(scenario, trace)
    assert violation.t == 20.0
    assert "every path was down" in violation.message


def test_a_success_that_overlaps_an_open_tunnel_passes(scenario: Scenario) -> None:
    trace: list[Event] = [
        OPENED,
        request(10.2, latency=0.5),  # started while the tunnel was still open
        TunnelClosed(t=10.0, cluster="c-au", agent="cluster-agent", reason="agent killed"),
        request(12.0, status=503, latency=1.0),
    ]
    assert check_no_success_while_paths_down(scenario, trace) == []


def test_a_success_during_a_server_outage_or_a_partition_is_a_violation(scenario: Scenario) -> None:
    trace: list[Event] = [
        OPENED,
        FaultInjected(t=10.0, fault="server-down", target="server"),
        request(12.0),
        request(13.0, path="ace"),  # ACE does not need the server
        FaultInjected(t=20.0, fault="server-down", target="server", lifted=True),
        FaultInjected(t=30.0, fault="partition", target="us<->au"),
        request(32.0, path="ace"),  # user and cluster are both in au
        request(33.0),
    ]
    violations = check_no_success_while_paths_down(scenario, trace)
    assert [v.t for v in violations] == [12.0, 33.0]


def test_one_cluster_without_tunnels_does_not_take_down_the_paths_of_another() -> None:
    two = Scenario.from_dict(
        {
            "name": "two",
            "regions": ["us"],
            "clusters": [
                {"name": name, "region": "us", "nodes": [{"name": f"{name}-n", "roles": ["controlplane"]}]}
                for name in ("c-1", "c-2")
            ],
            "users": [{"name": "bob", "region": "us"}],
        },
        source="two.yaml",
    )
    trace: list[Event] = [
        FaultInjected(t=0.5, fault="server-down", target="server"),
        FaultInjected(t=0.6, fault="server-down", target="server", lifted=True),
        TunnelOpened(t=1.0, cluster="c-2", agent="cluster-agent"),
        RequestCompleted(
            t=5.0, path="proxy", cluster="c-1", user="bob", verb="get", status=200, latency_seconds=1
        ),
        RequestCompleted(
            t=5.0, path="proxy", cluster="c-2", user="bob", verb="get", status=200, latency_seconds=1
        ),
    ]
    [violation] = check_no_success_while_paths_down(two, trace)
    assert "to 'c-1'" in violation.message


def test_ace_failing_during_the_outage_is_a_violation(scenario: Scenario) -> None:
    down = FaultInjected(t=10.0, fault="server-down", target="server")
    up = FaultInjected(t=20.0, fault="server-down", target="server", lifted=True)
    good = [down, request(12.0, path="ace", latency=0.01), up]
    assert check_ace_during_server_outage(scenario, good) == []
    [violation] = check_ace_during_server_outage(scenario, [down, request(12.0, path="ace", status=401), up])
    assert "failed with status 401" in violation.message
    [violation] = check_ace_during_server_outage(scenario, [down, up])
    assert "no ACE request completed" in violation.message


def test_slos_are_checked_per_path(scenario: Scenario) -> None:
    good = [request(float(t), path="ace", latency=0.01) for t in range(20)] + [request(30.0), request(31.0)]
    assert check_slos(scenario, good) == []
    slow = [request(float(t), path="ace", latency=0.01 if t < 18 else 1.0) for t in range(20)]
    failing = [request(30.0), request(31.0, status=0), request(32.0, status=503)]
    violations = check_slos(scenario, [*slow, *failing, failover(40.0, 12.0)])
    assert [v.check for v in violations] == ["slo-latency", "slo-availability", "slo-failover"]
    assert "ace p95 latency" in violations[0].message
    assert "proxy availability 0.3333 (1/3) is below 0.75" in violations[1].message


def test_an_slo_on_a_path_without_requests_is_a_violation(scenario: Scenario) -> None:
    messages = [v.message for v in check_slos(scenario, [])]
    assert messages == ["ace p95: no succeeded request to measure", "proxy: no request to measure"]


@pytest.mark.parametrize(
    "name",
    [
        "agent-loss-rke1",
        "agent-loss-rke2",
        "server-outage",
        "alice-au",
        "link-partition",
        "agent-loss-single",
        "agent-crash-rke1",
        "node-crash",
        "server-crash",
        "server-rolling-restart",
        "token-revocation",
    ],
)
def test_simulated_traces_of_the_shipped_scenarios_pass_every_check(name: str) -> None:
    scenario = Scenario.load(SCENARIOS / f"{name}.yaml")
    events: list[Any] = []
    Simulation(scenario, seed=3, recorder=Recorder(events.append)).run()
    assert [str(v) for v in check_all(scenario, events)] == []

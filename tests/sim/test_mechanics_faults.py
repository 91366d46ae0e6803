"""Agent replicas, crashes, connections, server replicas, streams, tokens and CPU on tiny worlds."""

from __future__ import annotations

import math
from typing import Any

import pytest

from corral.model import (
    Calibration,
    ClusterTokenSynced,
    Event,
    FailoverCompleted,
    RequestCompleted,
    Scenario,
    StreamBroken,
    StreamEnded,
    TokenReviewed,
    TunnelClosed,
    TunnelOpened,
)
from corral.sim.build import Simulation
from corral.sim.recorder import Recorder
from tests.sim.test_mechanics import PROXY, RTT_MS, of, run, world

HALF = RTT_MS / 2000
HANDSHAKE = 3 * RTT_MS / 1000
EXACT_TIMES: dict[str, Any] = {
    "server": {
        "token_authn": {"median_seconds": 0.001},
        "proxy_overhead": {"median_seconds": 0.0003},
        "cpu_per_request": {"median_seconds": 0.0005},
    },
    "tunnel": {"hop": {"median_seconds": 0.00025}},
    "apiserver": {"verbs": {"get": {"median_seconds": 0.004}, "list": {"median_seconds": 0.03}}},
    "kube_api_auth": {"review": {"median_seconds": 0.0012}},
}
EXACT = Calibration.from_dict(EXACT_TIMES)
"""The default times without their spread, so latencies come out exactly."""


def first_to_open(scenario: Scenario) -> str:
    """The cluster-agent replica whose session dials use (the first registered)."""
    return next(e.agent for e in of(run(scenario), TunnelOpened) if e.agent.startswith("cluster-agent"))


def run_with(scenario: Scenario, calibration: Calibration, seed: int = 1) -> list[Event]:
    events: list[Event] = []
    Simulation(scenario, seed=seed, calibration=calibration, recorder=Recorder(events.append)).run()
    return events


def fault(kind: str, target: str, at: float = 100, duration: float = 60) -> dict[str, Any]:
    return {"kind": kind, "target": target, "at_seconds": at, "duration_seconds": duration}


# -- two cluster-agent replicas ---------------------------------------------------------------------


def test_with_two_replicas_stopping_the_one_dials_use_hands_over_in_half_a_round_trip() -> None:
    lead = first_to_open(world("rke2", agent_replicas=2))
    other = "cluster-agent-2" if lead == "cluster-agent" else "cluster-agent"
    events = run(world("rke2", agent_replicas=2, faults=(fault("stop", f"c/{lead}"),), workload=(PROXY,)))
    [failover] = of(events, FailoverCompleted)
    assert (failover.from_agent, failover.to_agent) == (lead, other)
    assert failover.duration_seconds == pytest.approx(HALF)
    assert {e.status for e in of(events, RequestCompleted)} == {200}


def test_with_two_replicas_losing_the_other_one_costs_nothing() -> None:
    lead = first_to_open(world("rke2", agent_replicas=2))
    other = "cluster-agent-2" if lead == "cluster-agent" else "cluster-agent"
    events = run(world("rke2", agent_replicas=2, faults=(fault("crash", f"c/{other}"),), workload=(PROXY,)))
    [failover] = of(events, FailoverCompleted)
    assert (failover.to_agent, failover.duration_seconds) == (lead, 0.0)
    assert {e.status for e in of(events, RequestCompleted)} == {200}


# -- crash against stop -------------------------------------------------------------------------------


def test_a_crashed_agent_is_noticed_only_at_the_read_deadline_and_requests_wait_for_it() -> None:
    events = run(
        world("rke1", faults=(fault("crash", "c/cluster-agent"),), workload=(PROXY,), user_region="us")
    )
    opened = next(e for e in of(events, TunnelOpened) if e.agent == "cluster-agent")
    last_ping = opened.t + 5 * math.floor((100 - opened.t) / 5)
    [closed] = [e for e in of(events, TunnelClosed) if e.agent == "cluster-agent"]
    assert (closed.reason, closed.t) == ("read deadline", pytest.approx(last_ping + 60))
    [failover] = of(events, FailoverCompleted)
    assert (failover.to_agent, failover.t) == ("node-agent/cp", pytest.approx(last_ping + 60))
    caught = [e for e in of(events, RequestCompleted) if 100.1 < e.t - e.latency_seconds < last_ping + 59]
    assert caught
    assert {e.status for e in caught} == {500}  # held on the dead session until the server drops it
    assert all(e.t == pytest.approx(last_ping + 60) for e in caught)


def test_a_stopped_agent_is_noticed_half_a_round_trip_later() -> None:
    events = run(world("rke1", faults=(fault("stop", "c/cluster-agent"),)))
    [closed] = [e for e in of(events, TunnelClosed) if e.agent == "cluster-agent"]
    assert (closed.reason, closed.t) == ("agent stopped", pytest.approx(100 + HALF))


def test_a_crashed_node_takes_its_agents_and_its_apiserver() -> None:
    nodes = (
        {"name": "cp", "roles": ["controlplane"]},
        {"name": "cp2", "roles": ["controlplane"]},
        {"name": "w1", "roles": ["worker"]},
    )
    ace = {**PROXY, "path": "ace"}
    crash = fault("crash", "c/cp", at=100, duration=100)
    fqdn = run(world("rke1", agent_replicas=2, nodes=nodes, ace_fqdn=True, faults=(crash,), workload=(ace,)))
    assert {e.agent for e in of(fqdn, TunnelClosed)} == {"cluster-agent", "node-agent/cp"}
    lost = [e for e in of(fqdn, RequestCompleted) if e.status == 0]
    # The load balancer sends every other new connection to the dead node for 10 s.
    assert lost
    assert all(100 <= e.t - e.latency_seconds < 110 and e.latency_seconds == pytest.approx(30) for e in lost)
    assert {e.status for e in of(fqdn, RequestCompleted) if e.t - e.latency_seconds > 110} == {200}
    # Without an FQDN the kubeconfig names the first node: ACE is down while it is.
    pinned = run(world("rke1", agent_replicas=2, nodes=nodes, faults=(crash,), workload=(ace,)))
    down = [e for e in of(pinned, RequestCompleted) if 100 <= e.t - e.latency_seconds < 200]
    assert down
    assert {e.status for e in down} == {0}


# -- a new connection per command ---------------------------------------------------------------------


def test_each_ace_command_pays_tcp_and_tls_and_large_bodies_pay_slow_start() -> None:
    get = {**PROXY, "path": "ace", "mix": [{"verb": "get", "response_bytes": 0}]}
    big = {**PROXY, "path": "ace", "mix": [{"verb": "list", "response_bytes": 150_000}]}
    rtt = 0.001  # erik and his cluster share a region
    [first, *rest] = of(run_with(world("rke2", workload=(get,)), EXACT), RequestCompleted)
    # 2 RTT of handshakes + 1 for the request, the review (first request only), the apiserver's 4 ms
    assert first.latency_seconds == pytest.approx(3 * rtt + 0.0012 + 0.004)
    assert rest[0].latency_seconds == pytest.approx(3 * rtt + 0.004)
    lists = of(run_with(world("rke2", workload=(big,)), EXACT), RequestCompleted)
    transfer = 150_000 * 8 / 200e6
    # 150 kB from a 14.6 kB window: 14.6 + 29.2 + 58.4 + 116.8 kB, three extra round trips
    assert lists[1].latency_seconds == pytest.approx((3 + 3) * rtt + 0.03 + transfer)


def test_the_proxy_dials_through_the_tunnel_only_when_its_pool_has_no_idle_connection() -> None:
    sparse = {**PROXY, "rate_per_second": 0.05, "duration_seconds": 200}
    scenario = world("rke2", workload=(sparse,), user_region="us")
    pooled = of(run_with(scenario, EXACT), RequestCompleted)
    no_pool = Calibration.from_dict(
        {**EXACT_TIMES, "server": {**EXACT_TIMES["server"], "idle_connections_per_cluster": 0}}
    )
    dialled = of(run_with(scenario, no_pool), RequestCompleted)
    assert len(pooled) == len(dialled) >= 3
    # The impersonation setup left an idle connection behind; without a pool each request dials
    # a new one through the tunnel: a TLS handshake across it, one more round trip.
    for warm, cold in zip(pooled[1:], dialled[1:], strict=True):
        assert cold.latency_seconds - warm.latency_seconds == pytest.approx(RTT_MS / 1000)


# -- server replicas, restarts and CPU ------------------------------------------------------------------


def test_a_restarted_server_serves_only_after_its_cache_sync() -> None:
    down = {"kind": "stop", "target": "server", "at_seconds": 100, "duration_seconds": 30}
    events = run(world("rke2", faults=(down,), workload=(PROXY,), user_region="us"))
    after = [e for e in of(events, RequestCompleted) if e.t - e.latency_seconds >= 100]
    first_ok = min(e.t - e.latency_seconds for e in after if e.status == 200)
    assert first_ok >= 130 + 20 + 0.005  # 20 s sync plus 5 ms for the one cluster
    assert {e.status for e in after if e.t < 150} == {0}


def test_a_crashed_server_replica_loses_its_agents_only_at_their_read_deadline() -> None:
    two = {"replicas": 2}
    events = run(world("rke2", agent_replicas=2, server=two, faults=(fault("crash", "server/1"),)))
    crashed = [e for e in of(events, TunnelClosed) if e.reason == "server crashed"]
    assert crashed
    assert all(e.t == 100.0 for e in crashed)
    back = [e for e in of(events, TunnelOpened) if e.t > 100]
    # Each agent of the crashed replica retries only after its own read deadline (+10 s): after 150 s.
    assert back
    assert all(e.t > 150 for e in back)


def test_a_rolling_restart_keeps_the_proxy_serving() -> None:
    roll = {"kind": "rolling-restart", "at_seconds": 60, "duration_seconds": 5}
    events = run(world("rke2", agent_replicas=2, server={"replicas": 3}, faults=(roll,), workload=(PROXY,)))
    statuses = [e.status for e in of(events, RequestCompleted)]
    assert statuses.count(200) >= len(statuses) - 3  # only requests caught inside a stopping replica


def test_the_servers_cpu_queues_requests_once_its_cores_are_busy() -> None:
    heavy = {
        **PROXY,
        "rate_per_second": 5,
        "duration_seconds": 60,
        "mix": [{"verb": "get", "response_bytes": 10**6}],
    }
    slow = Calibration.from_dict({"server": {"cpu_per_megabyte_seconds": 0.5}})
    one = run_with(world("rke2", workload=(heavy,), user_region="us", server={"cpus": 1}), slow)
    four = run_with(world("rke2", workload=(heavy,), user_region="us", server={"cpus": 4}), slow)

    def p50(events: list[Event]) -> float:
        values = sorted(e.latency_seconds for e in of(events, RequestCompleted))
        return values[len(values) // 2]

    assert p50(one) > p50(four) + 0.5  # 5 requests a second of 0.5 s CPU each overload one core


# -- streams ------------------------------------------------------------------------------------------------


def test_a_watch_through_the_proxy_breaks_with_its_session_and_is_opened_again() -> None:
    watch = {**PROXY, "stream": "watch", "hold_seconds": 200, "rate_per_second": 0.2, "duration_seconds": 5}
    events = run(
        world("rke2", faults=(fault("stop", "c/cluster-agent"),), workload=(watch,), user_region="us")
    )
    ended = of(events, StreamEnded)
    assert ended
    broken = of(events, StreamBroken)
    assert broken
    closed = [e for e in broken if e.reason == "tunnel closed"]
    assert len(closed) == len(ended)  # every stream was on the session, and broke with it
    assert all(e.t == pytest.approx(100 + HALF) for e in closed)
    # While the only agent is away, reopening waits for it and gets 500.
    assert {e.reason for e in broken if e not in closed} == {"open failed (500)"}
    # Reopened once the agent is back (160 + 5 s start + handshake + the dial's poll).
    assert all(e.held_seconds > 200 - (165.3 - 100) - 10 for e in ended)


# -- ACE tokens ---------------------------------------------------------------------------------------------


def test_a_revocation_reaches_ace_only_after_the_cluster_reconnects_and_the_cache_expires() -> None:
    cut = {"kind": "partition", "target": ["eu", "us"], "at_seconds": 50, "duration_seconds": 150}
    revoke = {"kind": "revoke-token", "target": "erik", "at_seconds": 100, "duration_seconds": 400}
    ace = {**PROXY, "path": "ace", "rate_per_second": 1, "duration_seconds": 450}
    events = run(world("rke2", faults=(cut, revoke), workload=(ace,)))
    [synced] = [e for e in of(events, ClusterTokenSynced) if e.revoked]
    reconnected = min(e.t for e in of(events, TunnelOpened) if e.t > 200)
    assert synced.t == pytest.approx(reconnected + 1.0)
    refused = [e for e in of(events, RequestCompleted) if e.status == 401]
    assert refused
    last_review = max(e.t for e in of(events, TokenReviewed) if e.authenticated and e.t < synced.t)
    assert min(e.t for e in refused) >= last_review + 120 - 1  # the apiserver's cached answer lasts 2 min
    assert all(e.t < 500 + 2 for e in refused)  # the new token works once synced

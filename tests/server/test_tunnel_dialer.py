"""The tunnel dialer with a fake clock: cluster agent first, node fallback, bounded wait, failover trace."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from corral.model.trace import Event, FailoverCompleted
from corral.server.connect import NodeParams, TunnelEndpoints
from corral.server.proxy_interfaces import DialError
from corral.server.tunnel_dialer import AGENT_DISCONNECTED, DialPolicy, TunnelDialer
from corral.tunnel import FakeClock, SessionSettings
from corral.tunnel.testing import wait_until
from tests.server._tunnel_fakes import Clusters, MemoryAgent, Registrar, Tokens

API = ("10.43.0.1", 443)


class Direct:
    def __init__(self) -> None:
        self.dialed: list[tuple[str, str, int]] = []

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        self.dialed.append((cluster, host, port))
        a, b = socket.socketpair()
        b.close()
        return a


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def endpoints(clock: FakeClock) -> TunnelEndpoints:
    return TunnelEndpoints(
        tokens=Tokens(), registrar=Registrar(), clock=clock, settings=SessionSettings(clock=clock)
    )


def make_dialer(
    endpoints: TunnelEndpoints, clock: FakeClock, events: list[Event], **policy: bool
) -> TunnelDialer:
    return TunnelDialer(
        endpoints,
        clusters=Clusters(),
        policy=DialPolicy(**policy),
        clock=clock,
        rng=random.Random(7),
        direct=Direct(),
        trace_sink=events.append,
        trace_time=clock.now,
    )


def node(
    endpoints: TunnelEndpoints, name: str, *, control_plane: bool = True, api: str = "127.0.0.1:6443"
) -> None:
    endpoints.nodes.setdefault("c-1", {})[name] = NodeParams(
        hostname=name, control_plane=control_plane, api_address=api
    )


async def dial(dialer: TunnelDialer, host: str = API[0], port: int = API[1]) -> None:
    sock = await dialer.dial("c-1", host, port)
    sock.close()


async def test_the_cluster_agent_session_is_dialed_first(endpoints, clock, events):
    dialer = make_dialer(endpoints, clock, events)
    node(endpoints, "n1")
    agent, node_agent = MemoryAgent(endpoints, "c-1"), MemoryAgent(endpoints, "c-1:n1")
    await wait_until(lambda: len(endpoints.manager.client_keys()) == 2, "both sessions")
    await dial(dialer)
    await wait_until(lambda: bool(agent.dialed), "the cluster agent's dial")
    assert agent.dialed == ["tcp/10.43.0.1:443"]
    assert node_agent.dialed == []
    await agent.stop()
    await node_agent.stop()


async def test_without_a_cluster_agent_the_first_eligible_node_serves_with_the_api_address_rewritten(
    endpoints, clock, events
):
    dialer = make_dialer(endpoints, clock, events)
    node(endpoints, "worker", control_plane=False)
    node(endpoints, "cp", api="127.0.0.1:16443")
    dialer.node_ready = lambda cluster, name: False  # the worker is not Ready: not eligible
    worker, cp = MemoryAgent(endpoints, "c-1:worker"), MemoryAgent(endpoints, "c-1:cp")
    await wait_until(lambda: len(endpoints.manager.client_keys()) == 2, "both node sessions")
    await dial(dialer)
    await dial(dialer, "10.0.0.9", 10250)  # not the API endpoint: not rewritten
    await wait_until(lambda: len(cp.dialed) == 2, "the control-plane node's dials")
    assert cp.dialed == ["tcp/127.0.0.1:16443", "tcp/10.0.0.9:10250"]
    assert worker.dialed == []
    await worker.stop()
    await cp.stop()


async def test_node_fallback_can_be_off(endpoints, clock, events):
    dialer = make_dialer(endpoints, clock, events, node_fallback=False)
    node(endpoints, "n1")
    node_agent = MemoryAgent(endpoints, "c-1:n1")
    await wait_until(lambda: endpoints.manager.has_session("c-1:n1"), "the node session")
    task = asyncio.ensure_future(dial(dialer))
    for _ in range(4):
        await wait_until(lambda: clock.pending_sleepers >= 1, "the dialer's sleep")
        await clock.advance(10)
    with pytest.raises(DialError):
        await task
    assert node_agent.dialed == []
    await node_agent.stop()


class RecordingClock(FakeClock):
    """A fake clock that remembers every sleep asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def test_with_no_session_the_dial_waits_four_jittered_polls_then_reports_the_agent_disconnected(events):
    clock = RecordingClock()
    endpoints = TunnelEndpoints(
        tokens=Tokens(), registrar=Registrar(), clock=clock, settings=SessionSettings(clock=clock)
    )
    dialer = make_dialer(endpoints, clock, events)
    task = asyncio.ensure_future(dial(dialer))
    while not task.done():
        await wait_until(lambda: clock.pending_sleepers >= 1 or task.done(), "a sleep or the end")
        await clock.advance(1.0)
    with pytest.raises(DialError, match=f"^{AGENT_DISCONNECTED}$"):
        await task
    assert len(clock.sleeps) == 4
    assert all(5.0 <= s < 10.0 for s in clock.sleeps)
    assert len(set(clock.sleeps)) == 4  # jittered, not one fixed wait
    assert events == []


async def test_an_agent_that_connects_during_the_wait_serves_the_dial(endpoints, clock, events):
    dialer = make_dialer(endpoints, clock, events)
    task = asyncio.ensure_future(dial(dialer))
    await wait_until(lambda: clock.pending_sleepers >= 1, "the first sleep")
    agent = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the agent's session")
    await clock.advance(10)
    await task
    await wait_until(lambda: bool(agent.dialed), "the dial through the agent")
    assert agent.dialed == ["tcp/10.43.0.1:443"]
    await agent.stop()


async def test_an_internal_cluster_is_dialed_directly(endpoints, clock, events):
    dialer = make_dialer(endpoints, clock, events)
    sock = await dialer.dial("local", "127.0.0.1", 6443)
    sock.close()
    assert isinstance(dialer.direct, Direct)
    assert dialer.direct.dialed == [("local", "127.0.0.1", 6443)]


async def test_losing_the_cluster_agent_with_a_node_agent_left_is_a_failover_in_the_trace(
    endpoints, clock, events
):
    make_dialer(endpoints, clock, events)
    node(endpoints, "n1")
    agent, node_agent = MemoryAgent(endpoints, "c-1"), MemoryAgent(endpoints, "c-1:n1")
    await wait_until(lambda: len(endpoints.manager.client_keys()) == 2, "both sessions")
    await agent.stop("killed")
    await wait_until(lambda: bool(events), "a failover event")
    assert events == [
        FailoverCompleted(
            t=0.0, cluster="c-1", from_agent="cluster-agent", to_agent="node-agent/n1", duration_seconds=0.0
        )
    ]
    await node_agent.stop()


async def test_a_failover_to_a_reconnected_agent_lasts_until_it_is_back(endpoints, clock, events):
    make_dialer(endpoints, clock, events)
    agent = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the session")
    await agent.stop("killed")
    await clock.advance(7.5)
    assert events == []
    again = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: bool(events), "the failover event")
    assert events == [
        FailoverCompleted(
            t=7.5, cluster="c-1", from_agent="cluster-agent", to_agent="cluster-agent", duration_seconds=7.5
        )
    ]
    await again.stop()


async def test_the_fast_mode_tries_the_other_session_when_the_first_refuses_a_dial(clock, events):
    full = SessionSettings(clock=clock, max_connections=1)
    endpoints = TunnelEndpoints(tokens=Tokens(), registrar=Registrar(), clock=clock, settings=full)
    dialer = make_dialer(endpoints, clock, events, retry_sessions=True)
    first = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the first session")
    second = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: len(endpoints.manager.sessions("c-1")) == 2, "the second session")
    held = await dialer.dial("c-1", *API)  # fills the first session
    await dial(dialer)
    await wait_until(lambda: bool(second.dialed), "the second session's dial")
    assert len(first.dialed) == 1
    held.close()
    await first.stop()
    await second.stop()


async def test_rancher_mode_answers_with_the_first_sessions_failure(clock, events):
    full = SessionSettings(clock=clock, max_connections=1)
    endpoints = TunnelEndpoints(tokens=Tokens(), registrar=Registrar(), clock=clock, settings=full)
    dialer = make_dialer(endpoints, clock, events)
    first = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the first session")
    second = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: len(endpoints.manager.sessions("c-1")) == 2, "the second session")
    held = await dialer.dial("c-1", *API)
    with pytest.raises(DialError, match="max_connections"):
        await dial(dialer)
    assert second.dialed == []
    held.close()
    await first.stop()
    await second.stop()


async def test_in_the_fast_mode_an_agent_that_connects_ends_the_wait_at_once(endpoints, clock, events):
    dialer = make_dialer(endpoints, clock, events, retry_sessions=True)
    task = asyncio.ensure_future(dial(dialer))
    await wait_until(lambda: clock.pending_sleepers >= 1, "the first sleep")
    agent = MemoryAgent(endpoints, "c-1")
    await wait_until(task.done, "the dial, with the clock standing still")
    await task
    assert clock.now() == 0.0
    await wait_until(lambda: bool(agent.dialed), "the dial through the new session")
    assert agent.dialed == ["tcp/10.43.0.1:443"]
    await agent.stop()


async def test_the_route_of_a_cluster_is_direct_until_an_agent_connects_and_stays_the_tunnel_after(
    endpoints, clock, events
):
    dialer = make_dialer(endpoints, clock, events)
    changed: list[str] = []
    dialer.on_route_change(changed.append)
    assert dialer.route("c-1") is None
    assert dialer.route("local") is None
    agent = MemoryAgent(endpoints, "c-1:n1")  # a node agent gives the cluster its route too
    await wait_until(lambda: endpoints.manager.has_session("c-1:n1"), "the node agent's session")
    assert dialer.route("c-1") is dialer
    assert changed == ["c-1"]
    second = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the cluster agent's session")
    await agent.stop()
    await second.stop()
    await wait_until(lambda: not endpoints.manager.client_keys(), "both sessions gone")
    assert dialer.route("c-1") is dialer, "a cluster whose agents are gone is not dialed directly"
    assert changed == ["c-1"], "the route changed once"
    local = MemoryAgent(endpoints, "local")
    await wait_until(lambda: endpoints.manager.has_session("local"), "a session keyed local")
    assert dialer.route("local") is None, "an internal cluster is always dialed directly"
    assert changed == ["c-1"]
    await local.stop()

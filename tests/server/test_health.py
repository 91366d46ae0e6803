"""Cluster health ticks with a fake clock: Connected follows the cluster agent's session, Ready goes False."""

from __future__ import annotations

import copy
from typing import Any

from corral.model.trace import ClusterConditionChanged, Event
from corral.server.connect import TunnelEndpoints
from corral.server.health import NOT_CONNECTED, ClusterHealth
from corral.tunnel import FakeClock, SessionSettings
from corral.tunnel.testing import wait_until
from tests.server._tunnel_fakes import MemoryAgent, Registrar, Tokens


class Clusters:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}

    def list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.values()]


class State:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.clusters = Clusters(list(objects))
        self.writes: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(
        self, plural: str, name: str, status: dict[str, Any], *, namespace: str = ""
    ) -> Any:
        assert plural == "clusters"
        self.writes.append((name, status))
        self.clusters.objects[name].setdefault("status", {}).update(copy.deepcopy(status))
        return self.clusters.objects[name]


def cluster(name: str, *, internal: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Provisioned", "status": "True"}, {"type": "Ready", "status": "True"}]
    return {"metadata": {"name": name}, "spec": {"internal": internal}, "status": {"conditions": conditions}}


def conditions(state: State, name: str) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c.get("message", ""))
        for c in state.clusters.objects[name]["status"]["conditions"]
    }


async def test_connected_follows_the_cluster_agent_session_within_one_interval():
    clock = FakeClock()
    endpoints = TunnelEndpoints(
        tokens=Tokens(), registrar=Registrar(), clock=clock, settings=SessionSettings(clock=clock)
    )
    state = State(cluster("c-1"), cluster("local", internal=True))
    events: list[Event] = []
    health = ClusterHealth(
        state,
        endpoints.manager,
        interval_seconds=15,
        clock=clock,
        trace_sink=events.append,
        trace_time=clock.now,
    )
    agent = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the session")
    await health.start()
    await wait_until(lambda: bool(state.writes), "the first tick")
    assert conditions(state, "c-1")["Connected"] == ("True", "")
    assert [w[0] for w in state.writes] == ["c-1"]  # the internal cluster is left alone

    await clock.advance(15)  # nothing changed: nothing written
    assert len(state.writes) == 1

    await clock.advance(3)
    await agent.stop("killed")
    await clock.advance(12)  # the next tick, 12 s after the session went
    assert conditions(state, "c-1")["Connected"] == ("False", "")
    assert conditions(state, "c-1")["Ready"] == ("False", NOT_CONNECTED)
    assert events == [
        ClusterConditionChanged(t=0.0, cluster="c-1", connected=True),
        ClusterConditionChanged(t=30.0, cluster="c-1", connected=False),
    ]
    await health.stop()


async def test_a_node_agent_alone_does_not_make_the_cluster_connected():
    clock = FakeClock()
    endpoints = TunnelEndpoints(
        tokens=Tokens(), registrar=Registrar(), clock=clock, settings=SessionSettings(clock=clock)
    )
    state = State(cluster("c-1"))
    health = ClusterHealth(state, endpoints.manager, clock=clock)
    node_agent = MemoryAgent(endpoints, "c-1:n1")
    await wait_until(lambda: endpoints.manager.has_session("c-1:n1"), "the node session")
    await health.tick()
    assert conditions(state, "c-1")["Connected"] == ("False", "")
    await node_agent.stop()


async def test_a_failing_probe_is_not_connected():
    clock = FakeClock()
    endpoints = TunnelEndpoints(
        tokens=Tokens(), registrar=Registrar(), clock=clock, settings=SessionSettings(clock=clock)
    )
    state = State(cluster("c-1"))

    async def probe(name: str) -> bool:
        return False

    health = ClusterHealth(state, endpoints.manager, clock=clock, probe=probe)
    agent = MemoryAgent(endpoints, "c-1")
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the session")
    await health.tick()
    assert conditions(state, "c-1")["Connected"] == ("False", "")
    await agent.stop()

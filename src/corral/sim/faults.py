"""The fault timeline: apply each scenario fault at its time and lift it after its duration.

A `FaultInjected` event is written before the fault takes effect (and again with ``lifted``), so
a trace shows cause before consequence, in the same words as the scenario. Faults of the same
kind on the same target may overlap: the target stays broken until the last of them is lifted
(a latency fault sets the link's RTT while it starts; the scenario's value returns at the end).
A rolling restart stops one server replica at a time, starts it again after the fault's
duration, and moves on when its caches are synced; each step is a `stop` of ``server/<n>`` in
the trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Fault, FaultInjected
from corral.sim.world import World


def schedule_faults(world: World) -> None:
    active: Counter[tuple[str, str]] = Counter()
    for fault in world.scenario.faults:
        if fault.kind == "rolling-restart":
            world.env.process(_rolling_restart(world, fault))
        else:
            world.env.process(_run(world, fault, active))


def _run(world: World, fault: Fault, active: Counter[tuple[str, str]]) -> Generator[simpy.Event, Any, None]:
    env = world.env
    key = (fault.kind, fault.target)
    yield env.sleep(fault.at_seconds)
    world.recorder.emit(FaultInjected(t=env.now, fault=fault.kind, target=fault.target))
    active[key] += 1
    if active[key] == 1 or fault.kind == "latency":
        _apply(world, fault, on=True)
    yield env.sleep(fault.duration_seconds)
    world.recorder.emit(FaultInjected(t=env.now, fault=fault.kind, target=fault.target, lifted=True))
    active[key] -= 1
    if active[key] == 0:
        _apply(world, fault, on=False)


def _rolling_restart(world: World, fault: Fault) -> Generator[simpy.Event, Any, None]:
    env, server, emit = world.env, world.server, world.recorder.emit
    yield env.sleep(fault.at_seconds)
    emit(FaultInjected(t=env.now, fault=fault.kind, target=fault.target))
    for replica in server.replicas:
        emit(FaultInjected(t=env.now, fault="stop", target=replica.name))
        server.stop(replica, crash=False)
        yield env.sleep(fault.duration_seconds)
        emit(FaultInjected(t=env.now, fault="stop", target=replica.name, lifted=True))
        yield server.start(replica)
    emit(FaultInjected(t=env.now, fault=fault.kind, target=fault.target, lifted=True))


def _apply(world: World, fault: Fault, *, on: bool) -> None:
    kind = fault.kind
    if kind == "latency":
        a, b = fault.link
        world.network.set_rtt(a, b, (fault.rtt_ms or 0.0) / 1000.0 if on else None)
    elif kind == "partition":
        a, b = fault.link
        world.network.set_partitioned(a, b, on)
    elif kind == "revoke-token":
        world.tokens.revoke(fault.target) if on else world.tokens.reissue(fault.target)
    else:
        _process(world, fault, on=on)


def _process(world: World, fault: Fault, *, on: bool) -> None:
    """A crash or stop of server replicas, an agent, or a whole node (its agents and apiserver)."""
    crash = fault.action == "crash"
    reason = "agent killed" if fault.kind.startswith("kill-") else "agent stopped"
    what, cluster, name = fault.subject
    if what == "server":
        server = world.server
        replicas = server.replicas if not name else [server.replicas[int(name) - 1]]
        for replica in replicas:
            if on:
                server.stop(replica, crash=crash)
            else:
                server.start(replica)
        return
    if what == "cluster-agent":
        agents = [world.agents[(cluster, name)]]
    elif what == "node-agent":
        agents = [world.agents[(cluster, f"node-agent/{name}")]]
    else:
        agents = world.hosts.get((cluster, name), [])
        world.apiservers[cluster].set_node(name, down=on, crash=crash)
    for agent in agents:
        if on:
            agent.stop(crash=crash, reason=reason)
        else:
            agent.revive()

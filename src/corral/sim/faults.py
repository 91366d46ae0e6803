"""The fault timeline: apply each scenario fault at its time and lift it after its duration.

A `FaultInjected` event is written before the fault takes effect (and again with ``lifted``), so
a trace shows cause before consequence, in the same words as the scenario. Faults of the same
kind on the same target may overlap: the target stays broken until the last of them is lifted
(a latency fault sets the link's RTT while it starts; the scenario's value returns at the end).
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
        world.env.process(_run(world, fault, active))


def _run(world: World, fault: Fault, active: Counter[tuple[str, str]]) -> Generator[simpy.Event, Any, None]:
    env = world.env
    key = (fault.kind, fault.target)
    yield env.timeout(fault.at_seconds)
    world.recorder.emit(FaultInjected(t=env.now, fault=fault.kind, target=fault.target))
    active[key] += 1
    if active[key] == 1 or fault.kind == "latency":
        _apply(world, fault, on=True)
    yield env.timeout(fault.duration_seconds)
    world.recorder.emit(FaultInjected(t=env.now, fault=fault.kind, target=fault.target, lifted=True))
    active[key] -= 1
    if active[key] == 0:
        _apply(world, fault, on=False)


def _apply(world: World, fault: Fault, *, on: bool) -> None:
    if fault.kind == "kill-cluster-agent":
        agent = world.agents[(fault.target, "cluster-agent")]
        agent.kill() if on else agent.revive()
    elif fault.kind == "kill-node-agent":
        cluster, _, node = fault.target.partition("/")
        agent = world.agents[(cluster, f"node-agent/{node}")]
        agent.kill() if on else agent.revive()
    elif fault.kind == "server-down":
        world.server.go_down() if on else world.server.come_up()
    elif fault.kind == "latency":
        a, b = fault.link
        world.network.set_rtt(a, b, (fault.rtt_ms or 0.0) / 1000.0 if on else None)
    elif fault.kind == "partition":
        a, b = fault.link
        world.network.set_partitioned(a, b, on)

"""The cluster controller's health tick: every 15 s, the Connected condition of every cluster.

Connected comes from a ping through the cluster agent's (Steve) tunnel, so it is False while only
node agents are connected, even though the proxy still works through them (docs/rancher.md,
"Health and the Connected condition"). One process ticks for the whole fleet, as the real
controller does; a change of the condition is a `ClusterConditionChanged` event. The condition
can only change for a cluster whose sessions changed, so a tick looks at those alone (the session
manager notes them), not at all ten thousand clusters of a fleet.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import ClusterConditionChanged
from corral.sim.world import World


class HealthSyncer:
    """The Connected condition of every cluster, as the server sees it."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.connected: dict[str, bool] = {}

    def run(self) -> Generator[simpy.Event, Any, None]:
        world = self._world
        env = world.env
        tick = world.calibration.protocol.health_tick_seconds
        alive = world.sessions.cluster_agent_alive
        emit = world.recorder.emit
        while True:
            yield env.sleep(tick)
            if not world.server.up:
                continue
            for name in world.sessions.take_changed():
                connected = alive(name)
                if self.connected.get(name) is not connected:
                    self.connected[name] = connected
                    emit(ClusterConditionChanged(t=env.now, cluster=name, connected=connected))

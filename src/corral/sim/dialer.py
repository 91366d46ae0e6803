"""The server's dial policy towards a downstream cluster (docs/rancher.md#dialing-policy).

Use the first cluster-agent session; for `rke1` fall back to the first node agent with a session;
otherwise wait: poll for a session 4 times with 5-10 s jittered sleeps, then give up with
"cluster agent disconnected" (the proxy answers 500).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from corral.model import Cluster
from corral.sim.tunnel import Session
from corral.sim.world import World

if TYPE_CHECKING:
    from corral.sim.server import Replica


def dial(world: World, cluster: Cluster, replica: Replica) -> Generator[simpy.Event, Any, Session | None]:
    """A session to reach `cluster` through, or ``None`` after the bounded wait (or `replica`'s end)."""
    session = world.sessions.pick(cluster)
    if session is not None:
        return session
    protocol = world.calibration.protocol
    jitter = world.streams.get("dialer")
    epoch = replica.epoch
    for _ in range(protocol.dial_wait_polls):
        pause = jitter.uniform(protocol.dial_wait_min_seconds, protocol.dial_wait_max_seconds)
        yield world.env.timeout(pause) | replica.went_down
        if replica.epoch != epoch:
            return None
        session = world.sessions.pick(cluster)
        if session is not None:
            return session
    return None


def wait_alive(world: World, session: Session) -> Generator[simpy.Event, Any, bool]:
    """Block while frames do not get through; ``False`` once the server has dropped the session."""
    while not session.alive and not session.closed:
        yield session.changed(world.env)
    return not session.closed

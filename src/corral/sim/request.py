"""What every access path shares at the end of a request: the statuses and the recording.

A request whose answer cannot come back (a cut link) ends when the client gives up, after its
timeout, with no status; either way one `RequestCompleted` goes into the trace.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, RequestCompleted, User
from corral.sim.world import World

NO_RESPONSE = 0
ERROR_BODY_BYTES = 200
"""Size of a status body (429, small writes of the impersonation setup)."""


def complete(
    world: World,
    *,
    path: str,
    user: User,
    cluster: Cluster,
    verb: str,
    status: int,
    start: float,
    lost: bool,
) -> Generator[simpy.Event, Any, None]:
    """Record a finished request; a ``lost`` one first waits out the client's timeout."""
    env = world.env
    if lost:
        status = NO_RESPONSE
        remaining = start + world.calibration.network.client_timeout_seconds - env.now
        if remaining > 0:
            yield env.timeout(remaining)
    world.recorder.emit(
        RequestCompleted(
            t=env.now,
            path=path,
            cluster=cluster.name,
            user=user.name,
            verb=verb,
            status=status,
            latency_seconds=env.now - start,
        )
    )

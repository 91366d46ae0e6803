"""What every access path shares: the client's new connection, the statuses and the recording.

Each kubectl invocation opens a new TCP and TLS connection (2 round trips before the request
leaves), and a body larger than TCP's initial window takes extra round trips on that new
connection (slow start). A request whose answer cannot come back (a cut link, a crashed peer)
ends when the client gives up, after its timeout, with no status; either way one
`RequestCompleted` goes into the trace (`Recorder.request`).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, User
from corral.sim.world import World

NO_RESPONSE = 0
ERROR_BODY_BYTES = 200
"""Size of a status body (429, small writes of the impersonation setup)."""
UNAVAILABLE = 500
"""Rancher's answer to "cluster agent disconnected" and to a transport failure through the tunnel
(docs/rancher.md#dialing-policy: observed 500 after 27.3 s with the only cluster agent killed)."""
FORBIDDEN = 403
"""Rancher's answer to a token it does not know (observed on a real Rancher)."""
UNAUTHORIZED = 401
"""kube-apiserver's answer when kube-api-auth rejects a token (ACE)."""


def slow_start_round_trips(size_bytes: int, window_bytes: int) -> int:
    """Extra round trips a body needs on a new connection while TCP's window doubles from `window_bytes`."""
    if size_bytes <= window_bytes:
        return 0
    return math.ceil(math.log2(size_bytes / window_bytes + 1.0)) - 1


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
            yield env.sleep(remaining)
    record(world, path=path, user=user, cluster=cluster, verb=verb, status=status, start=start)


def record(
    world: World, *, path: str, user: User, cluster: Cluster, verb: str, status: int, start: float
) -> None:
    """Record a request that ends now with `status` (`complete` without the wait, for the common case)."""
    now = world.env.now
    world.recorder.request(
        t=now,
        path=path,
        cluster=cluster.name,
        user=user.name,
        verb=verb,
        status=status,
        latency_seconds=now - start,
    )

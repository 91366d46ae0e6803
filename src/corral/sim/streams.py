"""Streams held across faults: watch, logs and exec, opened and re-established by their clients.

A stream through the proxy lives on one tunnel session and one server replica: it ends when the
session is dropped (at once after a clean stop, at the read deadline after a crash or a cut
link) or when the replica ends (at once after a stop; after a crash the client notices only when
its HTTP/2 health check fails). A stream over ACE or direct access lives on one control-plane
node's apiserver. Either way the client waits a moment and opens it again, until it is done.
Streams take no priority-and-fairness seat (long-running requests are exempt) and are not
counted as requests: `StreamBroken` and `StreamEnded` events say how they fared.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, StreamBroken, StreamEnded, User
from corral.sim.ace import ClusterEndpoint
from corral.sim.apiserver import OK
from corral.sim.proxy import LOST, AuthProxy
from corral.sim.world import World


def hold_stream(  # noqa: PLR0912 - the ways a stream opens, holds and breaks, in one loop
    world: World,
    proxy: AuthProxy,
    endpoint: ClusterEndpoint,
    *,
    user: User,
    cluster: Cluster,
    path: str,
    kind: str,
    hold_seconds: float,
) -> Generator[simpy.Event, Any, None]:
    """One client's stream, held for `hold_seconds` and re-opened whenever it breaks."""
    env = world.env
    network = world.calibration.network
    end = env.now + hold_seconds
    held = 0.0
    breaks = 0

    def broken(reason: str) -> StreamBroken:
        return StreamBroken(
            t=env.now, path=path, cluster=cluster.name, user=user.name, kind=kind, reason=reason
        )

    while env.now < end:
        started = env.now
        waits: list[simpy.Event] = []
        replica = None
        if path == "proxy":
            status, replica, session = yield from proxy.open_stream(user, cluster)
            if status == OK and replica is not None and session is not None:
                closing, went_down = session.closing(env), replica.went_down
                waits = [closing, went_down]
        else:
            status, node = yield from endpoint.open_stream(user, cluster, path=path)
            if status == OK:
                waits = [world.apiservers[cluster.name].node_lost(node)]
        if status != OK:
            if status == LOST:
                yield env.sleep(max(started + network.client_timeout_seconds - env.now, 0.0))
            breaks += 1
            world.recorder.emit(broken(f"open failed ({max(status, 0)})"))
            yield env.sleep(network.stream_retry_seconds)
            continue
        opened = env.now
        if opened >= end:
            break
        done = env.timeout(end - opened)
        fired = yield env.any_of([done, *waits])
        if done in fired:
            held += env.now - opened
            break
        # The stream broke. A crashed peer says nothing: the client finds out from its health check.
        reason = "tunnel closed"
        if path == "proxy" and waits[1] in fired:
            reason = "server replica ended"
            if replica is not None and replica.crashed_at is not None:
                yield env.sleep(network.dead_peer_seconds)
        elif path != "proxy":
            reason = "apiserver ended"
            if waits[0].value:
                yield env.sleep(network.dead_peer_seconds)
        held += env.now - opened
        breaks += 1
        world.recorder.emit(broken(reason))
        yield env.sleep(network.stream_retry_seconds)
    world.recorder.emit(
        StreamEnded(
            t=env.now,
            path=path,
            cluster=cluster.name,
            user=user.name,
            kind=kind,
            held_seconds=held,
            breaks=breaks,
        )
    )

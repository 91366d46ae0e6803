"""The server's tunnel side in one piece: the connect endpoints, the tunnel dialer and the health loop.

`build_tunnels` assembles them over the server state, so the server process wires the tunnel with
three lines: mount ``tunnels.endpoints`` on its app, hand ``tunnels.dialer`` to the proxy as its
`Dialer`, and start/close ``tunnels`` with the process. ``fast=True`` is the opt-in fast failover
(server pings, short read deadline, dials retried on other sessions); the default is Rancher's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.errors import CorralError
from corral.model.trace import Event
from corral.server.connect import FastFailover, StateRegistrar, StateRegistrationTokens, TunnelEndpoints
from corral.server.health import DEFAULT_INTERVAL_SECONDS, ClusterHealth
from corral.server.proxy_interfaces import ClusterLookup
from corral.server.tunnel_dialer import DialPolicy, TunnelDialer

__all__ = ["Tunnels", "build_tunnels"]


@dataclass(slots=True, kw_only=True)
class Tunnels:
    """What a server process runs for its agents."""

    endpoints: TunnelEndpoints
    dialer: TunnelDialer
    health: ClusterHealth

    async def start(self) -> None:
        await self.health.start()

    async def close(self) -> None:
        with contextlib.suppress(CorralError):
            await self.health.stop()
        await self.endpoints.close()


def build_tunnels(
    state: Any,
    *,
    clusters: ClusterLookup,
    fast: bool = False,
    health_interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    trace_sink: Callable[[Event], None] | None = None,
    trace_time: Callable[[], float] | None = None,
) -> Tunnels:
    """The endpoints over the state's registration tokens, the dialer over ``clusters``, the health loop."""
    endpoints = TunnelEndpoints(
        tokens=StateRegistrationTokens(state),
        registrar=StateRegistrar(state),
        fast=FastFailover() if fast else None,
        trace_sink=trace_sink,
        trace_time=trace_time,
    )

    def internal(cluster: str) -> bool:
        obj = state.clusters.get(cluster)
        return bool(obj is not None and (obj.get("spec") or {}).get("internal"))

    dialer = TunnelDialer(
        endpoints,
        clusters=clusters,
        policy=DialPolicy(retry_sessions=fast),
        internal=internal,
        trace_sink=trace_sink,
        trace_time=trace_time,
    )
    health = ClusterHealth(
        state,
        endpoints.manager,
        interval_seconds=health_interval_seconds,
        trace_sink=trace_sink,
        trace_time=trace_time,
    )
    return Tunnels(endpoints=endpoints, dialer=dialer, health=health)

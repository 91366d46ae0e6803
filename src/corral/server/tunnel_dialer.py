"""The proxy's `Dialer` through agents' tunnels, with Rancher's choice of session.

Policy (docs/rancher.md#dialing-policy, #node-agents; rancher v2.9 ``pkg/dialer/factory.go``
``clusterDialer``): an internal cluster is dialed directly; otherwise the cluster agent's session
(key ``<cluster>``, its first session); otherwise the first eligible node agent's session
(``<cluster>:<node>``, a control-plane node or one that is Ready), with dials to the cluster's API
endpoint sent to the node-local apiserver its agent reported; otherwise four checks for the cluster
agent's session with a 5-10 s jittered sleep after each, then `DialError` ``cluster agent
disconnected`` (the proxy answers 500). Every wait goes through the injected clock.

With ``retry_sessions`` (the fast mode) a dial that fails on one session is tried on the key's
other sessions, and a dial waiting for the agent goes on as soon as one connects. Together with
the server's pings (`corral.server.connect.FastFailover`) a dead session is noticed within a
second or two, and aiohttp's retry of an idempotent request whose connection dropped lands on a
live session (the proxy adds one more round of it in this mode, `ProxySettings.retry_idempotent`).
The dialer also writes `FailoverCompleted` when dials can go through another agent after the
cluster agent's session was lost.

The server's own clients of a downstream cluster (its cluster controllers) take the same route
once an agent of the cluster has connected to this server (`route`, `on_route_change`), as
Rancher's cluster controllers dial through the tunnel: a cluster whose agent is gone cannot be
reached, so it cannot turn Ready again behind its agent's back. Clusters no agent ever connected
for (``local``, clusters registered in-process) are dialed directly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from corral.errors import TunnelError
from corral.model.trace import Event, FailoverCompleted
from corral.server.connect import TunnelEndpoints
from corral.server.proxy_dial import DirectDialer, endpoint_of
from corral.server.proxy_interfaces import ClusterLookup, Dialer, DialError
from corral.tunnel import Clock, Session, SystemClock
from corral.tunnel.connection import Connection

logger = logging.getLogger(__name__)

__all__ = ["AGENT_DISCONNECTED", "DialPolicy", "TunnelDialer"]

AGENT_DISCONNECTED: Final = "cluster agent disconnected"
CLUSTER_AGENT: Final = "cluster-agent"


@dataclass(frozen=True, slots=True, kw_only=True)
class DialPolicy:
    """The bounded wait for a cluster agent and the fast mode's retries."""

    wait_polls: int = 4
    wait_seconds: float = 5.0
    wait_jitter: float = 1.0
    """Each sleep is ``wait_seconds * (1 + U[0, wait_jitter))`` (Go's ``wait.Jitter``)."""
    node_fallback: bool = True
    """Use node agents' sessions when the cluster agent has none (Rancher up to v2.11, RKE1)."""
    retry_sessions: bool = False
    """Fast mode: a failed dial is tried on the key's other sessions, then on the node agents'."""


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class TunnelDialer:
    """`Dialer` for clusters whose agents hold tunnel sessions to this server."""

    def __init__(
        self,
        endpoints: TunnelEndpoints,
        *,
        clusters: ClusterLookup,
        policy: DialPolicy | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        direct: Dialer | None = None,
        internal: Callable[[str], bool] = lambda cluster: cluster == "local",
        node_ready: Callable[[str, str], bool] | None = None,
        trace_sink: Callable[[Event], None] | None = None,
        trace_time: Callable[[], float] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.manager = endpoints.manager
        self.clusters = clusters
        self.policy = policy or DialPolicy()
        self.clock = clock or endpoints.clock or SystemClock()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.direct = direct or DirectDialer()
        self.internal = internal
        self.node_ready = node_ready
        self.trace_sink = trace_sink
        self._trace_time = trace_time or self.clock.now
        self._lost: dict[str, tuple[float, str]] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._with_agents: set[str] = set()
        self._route_listeners: list[Callable[[str], None]] = []
        endpoints.listen(self._session_changed)

    # -- routes for the server's own clients -------------------------------------------------------

    def route(self, cluster: str) -> Dialer | None:
        """This dialer for a cluster an agent of which connected here since the server started; None
        (dial directly) for an internal cluster and for a cluster no agent connected for."""
        if self.internal(cluster) or cluster not in self._with_agents:
            return None
        return self

    def on_route_change(self, callback: Callable[[str], None]) -> None:
        """``callback(cluster)`` when `route` changes for a cluster (its first agent connected)."""
        self._route_listeners.append(callback)

    # -- the Dialer protocol ---------------------------------------------------------------------

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        stream = await self.dial_stream(cluster, host, port)
        return stream if isinstance(stream, socket.socket) else stream.bridge_socket()

    async def dial_stream(self, cluster: str, host: str, port: int) -> socket.socket | Connection:
        """As `dial`, but a tunnelled stream is the tunnel's connection itself (the proxy's client runs
        its transport on it; a socket bridged to it costs a pump task and four system calls a turn)."""
        if self.internal(cluster):
            return await self.direct.dial(cluster, host, port)
        address = _join(host, port)
        stream = await self._through_cluster_agent(cluster, address)
        if stream is not None:
            return stream
        if self.policy.node_fallback:
            stream = await self._through_node_agent(cluster, address)
            if stream is not None:
                return stream
        logger.debug("waiting for cluster [%s] agent to connect", cluster)
        for _ in range(self.policy.wait_polls):
            if self.manager.has_session(cluster):
                stream = await self._through_cluster_agent(cluster, address)
                if stream is not None:
                    return stream
            jitter = self.policy.wait_seconds * self.policy.wait_jitter * self.rng.random()
            await self._pause(cluster, self.policy.wait_seconds + jitter)
        raise DialError(AGENT_DISCONNECTED)

    async def _pause(self, cluster: str, seconds: float) -> None:
        """Rancher: the full sleep. Fast mode: the sleep, or less when an agent of the cluster connects."""
        if not self.policy.retry_sessions:
            await self.clock.sleep(seconds)
            return
        arrival = self._arrivals.setdefault(cluster, asyncio.Event())
        waits = {asyncio.ensure_future(self.clock.sleep(seconds)), asyncio.ensure_future(arrival.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    # -- the choices ---------------------------------------------------------------------------

    async def _through_cluster_agent(self, cluster: str, address: str) -> Connection | None:
        sessions = [s for s in self.manager.sessions(cluster) if not s.closed]
        if not sessions:
            return None
        if not self.policy.retry_sessions:
            sessions = sessions[:1]  # remotedialer: the first session, and its failure is the answer
        last: TunnelError | None = None
        for session in sessions:
            try:
                return await self._open(session, address)
            except TunnelError as exc:
                last = exc
                logger.info("dial through a session of %s failed: %s", cluster, exc)
        if self.policy.retry_sessions:
            return None  # let the node agents and the bounded wait have their turn
        raise DialError(str(last)) from last

    async def _through_node_agent(self, cluster: str, address: str) -> Connection | None:
        api = await self._api_address(cluster)
        for node, params in list(self.endpoints.nodes.get(cluster, {}).items()):
            if not (params.control_plane or self._ready(cluster, node)):
                continue
            key = f"{cluster}:{node}"
            sessions = [s for s in self.manager.sessions(key) if not s.closed]
            if not sessions:
                continue
            target = params.api_address if api is not None and address == api else address
            logger.debug(
                "no tunnel session for cluster [%s]: dialing %s through node %s", cluster, target, node
            )
            try:
                return await self._open(sessions[0], target)
            except TunnelError as exc:
                if not self.policy.retry_sessions:
                    raise DialError(str(exc)) from exc
        return None

    def _ready(self, cluster: str, node: str) -> bool:
        # Without a readiness source, a node whose agent holds a session counts as Ready: on virtual
        # nodes that agent is what keeps the Node Ready (`corral.agent.node`).
        return self.node_ready(cluster, node) if self.node_ready is not None else True

    async def _api_address(self, cluster: str) -> str | None:
        target = await self.clusters.get(cluster)
        if target is None or not target.api_endpoint:
            return None
        try:
            endpoint = endpoint_of(target)
        except DialError:
            return None
        return _join(endpoint.host, endpoint.port)

    async def _open(self, session: Session, address: str) -> Connection:
        return await session.dial("tcp", address)

    # -- failover trace --------------------------------------------------------------------------

    def _session_changed(self, key: str, session: Session, connected: bool) -> None:
        cluster, _, node = key.partition(":")
        if connected and cluster not in self._with_agents:
            self._with_agents.add(cluster)
            if not self.internal(cluster):
                for listener in self._route_listeners:
                    listener(cluster)
        if connected and cluster in self._arrivals:
            self._arrivals.pop(cluster).set()  # wakes the dials waiting for this cluster (fast mode)
        if not connected and not node and cluster not in self._lost:
            self._lost[cluster] = (self._trace_time(), CLUSTER_AGENT)
        if cluster in self._lost:
            self._check_failover(cluster)

    def serving_agent(self, cluster: str) -> str | None:
        """Who dials for ``cluster`` would go through now: ``cluster-agent``, ``node-agent/<n>``, None."""
        if any(not s.closed for s in self.manager.sessions(cluster)):
            return CLUSTER_AGENT
        if not self.policy.node_fallback:
            return None
        for node, params in self.endpoints.nodes.get(cluster, {}).items():
            if (params.control_plane or self._ready(cluster, node)) and any(
                not s.closed for s in self.manager.sessions(f"{cluster}:{node}")
            ):
                return f"node-agent/{node}"
        return None

    def _check_failover(self, cluster: str) -> None:
        agent = self.serving_agent(cluster)
        if agent is None:
            return
        lost_at, lost_from = self._lost.pop(cluster)
        now = self._trace_time()
        logger.info("cluster %s served again through %s after %.3f s", cluster, agent, now - lost_at)
        if self.trace_sink is not None:
            self.trace_sink(
                FailoverCompleted(
                    t=now,
                    cluster=cluster,
                    from_agent=lost_from,
                    to_agent=agent,
                    duration_seconds=now - lost_at,
                )
            )

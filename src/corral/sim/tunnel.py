"""Tunnels: agents dialling out to the server, sessions, keepalive and the server's session registry.

Each cluster agent (and, for `rke1`, each node agent) runs remotedialer's connect loop: handshake
(a few round trips), then hold the session; after an error wait ~10 s, after a clean close ~5 s,
with no backoff. The agent pings every 5 s and both ends drop a session they have not heard from
for 60 s. Pings are not simulated one by one: while a link is healthy they change nothing, so only
a partition schedules the read-deadline check (at the last ping heard + 60 s). That keeps a fleet
of 20,000 agents cheap.

`SessionManager` is the server's view: which sessions exist per cluster, which one a dial uses,
and when a cluster whose cluster-agent session was lost becomes reachable again (failover).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, FailoverCompleted, TunnelClosed, TunnelOpened
from corral.sim.world import World

CLUSTER_AGENT = "cluster-agent"


class Session:
    """One agent's websocket tunnel session as the server holds it."""

    __slots__ = ("_waiter", "agent", "alive", "busy_until", "closed", "cuts", "opened_at")

    def __init__(self, agent: Agent, opened_at: float) -> None:
        self.agent = agent
        self.opened_at = opened_at
        self.alive = True
        """Frames get through both ways (false while the agent is dead or the link is cut)."""
        self.closed = False
        self.cuts = 0
        """Partitions seen; a read-deadline check belongs to the partition that scheduled it."""
        self.busy_until = 0.0
        """When the session's one TCP stream has sent every response body queued on it so far."""
        self._waiter: simpy.Event | None = None

    def changed(self, env: simpy.Environment) -> simpy.Event:
        """An event that fires when the session comes back to life or is closed."""
        if self._waiter is None:
            self._waiter = env.event()
        return self._waiter

    def notify(self) -> None:
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.succeed()

    def send(self, now: float, seconds: float) -> float:
        """Queue a body that takes `seconds` on the wire; returns when its last byte has left."""
        self.busy_until = max(now, self.busy_until) + seconds
        return self.busy_until

    def last_ping(self, now: float, interval: float) -> float:
        return self.opened_at + interval * math.floor((now - self.opened_at) / interval)


class Agent:
    """A cluster agent (``node is None``) or a node agent, running remotedialer's connect loop."""

    __slots__ = ("_lost", "_revived", "_world", "cluster", "killed", "name", "node", "session")

    def __init__(self, world: World, cluster: Cluster, node: str | None = None) -> None:
        self._world = world
        self.cluster = cluster
        self.node = node
        self.name = CLUSTER_AGENT if node is None else f"node-agent/{node}"
        self.killed = False
        self.session: Session | None = None
        self._lost: simpy.Event | None = None
        self._revived: simpy.Event | None = None

    def run(self, start_delay: float) -> Generator[simpy.Event, Any, None]:
        env = self._world.env
        protocol = self._world.calibration.protocol
        yield env.timeout(start_delay)
        while True:
            if self.killed:
                self._revived = env.event()
                yield self._revived
                yield env.timeout(self._world.calibration.tunnel.agent_start_seconds)
                continue
            session = yield from self._connect()
            if session is None:
                yield env.timeout(protocol.reconnect_after_error_seconds)
                continue
            self._lost = env.event()
            reason = yield self._lost
            self._lost = None
            self.session = None
            if reason == "killed":
                continue
            # The server went away or the read deadline passed: both are errors to the client.
            yield env.timeout(protocol.reconnect_after_error_seconds)

    def _connect(self) -> Generator[simpy.Event, Any, Session | None]:
        world = self._world
        env, network, server = world.env, world.network, world.server
        region = self.cluster.region
        if not network.reachable(region, server.region):
            yield env.timeout(world.calibration.protocol.handshake_timeout_seconds)
            return None
        rtt = network.rtt(region, server.region)
        if not server.up:
            yield env.timeout(rtt)  # connection refused
            return None
        yield env.timeout(world.calibration.network.handshake_round_trips * rtt)
        if self.killed or not server.up or not network.reachable(region, server.region):
            return None
        # The server authorises the agent on a worker: after an outage every agent of the fleet
        # comes back within the same seconds and queues here.
        epoch = server.epoch
        with server.workers.request() as worker:
            yield worker
            yield env.timeout(world.calibration.server.tunnel_authorize.at(self._authorize_z()))
        if self.killed or server.epoch != epoch or not network.reachable(region, server.region):
            return None
        self.session = Session(self, env.now)
        world.sessions.register(self.session)
        return self.session

    # -- faults ---------------------------------------------------------------------------------

    def _authorize_z(self) -> float:
        return self._world.streams.get("tunnel-authorize").gauss(0.0, 1.0)

    def kill(self) -> None:
        """The agent's process dies; its kernel closes the connection, the server sees it soon."""
        self.killed = True
        session = self.session
        if session is None:
            return
        world = self._world
        world.sessions.lose(session)
        server_region = world.server.region
        if world.network.reachable(self.cluster.region, server_region):
            delay = world.network.rtt(self.cluster.region, server_region) / 2
            world.env.timeout(delay).callbacks.append(lambda _: world.sessions.close(session, "agent killed"))
        # Over a cut link the FIN never arrives: the read deadline already scheduled drops it.
        if self._lost is not None and not self._lost.triggered:
            self._lost.succeed("killed")

    def revive(self) -> None:
        self.killed = False
        if self._revived is not None and not self._revived.triggered:
            self._revived.succeed()

    def session_ended(self, session: Session, reason: str) -> None:
        if session is self.session and self._lost is not None and not self._lost.triggered:
            self._lost.succeed(reason)


class _ClusterSessions:
    __slots__ = ("cluster", "lost_at", "lost_from", "mains", "nodes")

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.mains: list[Session] = []
        self.nodes: dict[str, Session] = {}
        self.lost_at: float | None = None
        self.lost_from = ""


class SessionManager:
    """The server's registry of tunnel sessions (remotedialer's session manager plus the dialer's view)."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._clusters = {cluster.name: _ClusterSessions(cluster) for cluster in world.scenario.clusters}
        self._by_region: dict[str, list[_ClusterSessions]] = {}
        for state in self._clusters.values():
            self._by_region.setdefault(state.cluster.region, []).append(state)
        world.network.on_change(self._link_changed)

    # -- queries --------------------------------------------------------------------------------

    def pick(self, cluster: Cluster) -> Session | None:
        """The session a dial uses: the cluster agent's, else (rke1) the first node agent's."""
        state = self._clusters[cluster.name]
        if state.mains:
            return state.mains[0]
        if cluster.agent == "rke1" and state.nodes:
            for node in cluster.nodes:
                session = state.nodes.get(node.name)
                if session is not None:
                    return session
        return None

    def cluster_agent_alive(self, cluster: str) -> bool:
        """What the health tick's ping over the cluster agent's tunnel finds."""
        mains = self._clusters[cluster].mains
        return bool(mains) and mains[0].alive

    # -- changes --------------------------------------------------------------------------------

    def register(self, session: Session) -> None:
        agent = session.agent
        state = self._clusters[agent.cluster.name]
        if agent.node is None:
            state.mains.append(session)
        else:
            state.nodes[agent.node] = session
        env = self._world.env
        self._world.recorder.emit(TunnelOpened(t=env.now, cluster=agent.cluster.name, agent=agent.name))
        self._check_failover(state)

    def lose(self, session: Session) -> None:
        """Frames stop getting through; the server does not know yet."""
        session.alive = False
        state = self._clusters[session.agent.cluster.name]
        if session.agent.node is None and self._world.server.up and state.lost_at is None:
            state.lost_at = self._world.env.now
            state.lost_from = session.agent.name

    def close(self, session: Session, reason: str) -> None:
        """The server drops a session (it closed, or its read deadline passed)."""
        if session.closed:
            return
        session.closed = True
        session.alive = False
        agent = session.agent
        state = self._clusters[agent.cluster.name]
        if agent.node is None:
            if session in state.mains:
                state.mains.remove(session)
        elif state.nodes.get(agent.node) is session:
            del state.nodes[agent.node]
        env = self._world.env
        self._world.recorder.emit(
            TunnelClosed(t=env.now, cluster=agent.cluster.name, agent=agent.name, reason=reason)
        )
        session.notify()
        agent.session_ended(session, reason)
        self._check_failover(state)

    def drop_all(self, reason: str) -> None:
        for state in self._clusters.values():
            state.lost_at = None
            for session in [*state.mains, *state.nodes.values()]:
                session.alive = False
                self.close(session, reason)

    def _check_failover(self, state: _ClusterSessions) -> None:
        if state.lost_at is None or not self._world.server.up:
            return
        session = self.pick(state.cluster)
        if session is not None and session.alive:
            now = self._world.env.now
            self._world.recorder.emit(
                FailoverCompleted(
                    t=now,
                    cluster=state.cluster.name,
                    from_agent=state.lost_from,
                    to_agent=session.agent.name,
                    duration_seconds=now - state.lost_at,
                )
            )
            state.lost_at = None

    # -- partitions and the read deadline -------------------------------------------------------

    def _link_changed(self, a: str, b: str, cut: bool) -> None:
        server_region = self._world.server.region
        if server_region not in (a, b) or a == b:
            return
        other = b if a == server_region else a
        for state in self._by_region.get(other, []):
            for session in [*state.mains, *state.nodes.values()]:
                if cut:
                    self.lose(session)
                    self._schedule_deadline(session)
                elif not session.closed and not session.agent.killed:
                    session.alive = True
                    session.notify()
            if not cut:
                self._check_failover(state)

    def _schedule_deadline(self, session: Session) -> None:
        env = self._world.env
        protocol = self._world.calibration.protocol
        deadline = session.last_ping(env.now, protocol.ping_interval_seconds) + protocol.read_deadline_seconds
        session.cuts += 1
        cut = session.cuts
        env.timeout(max(deadline - env.now, 0.0)).callbacks.append(lambda _: self._deadline(session, cut))

    def _deadline(self, session: Session, cut: int) -> None:
        if session.closed or session.alive or cut != session.cuts:
            return  # healed in time: pings got through again and extended the deadline
        self.close(session, "read deadline")

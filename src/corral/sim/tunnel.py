"""Tunnels: agents dialling out to the server, sessions, keepalive and the server's session registry.

Each cluster-agent replica (two on clusters of two or more nodes, as Rancher runs them) and, for
`rke1`, each node agent runs remotedialer's connect loop: handshake (a few round trips) to the
replica the load balancer picks, then hold the session; after an error wait ~10 s, with no
backoff. All replicas of a cluster agent register under the cluster's key and dials use the
first registered session, live or not: losing the other one costs nothing.

An attempt that cannot succeed (nothing listens: every server replica is down; or the link to the
server is cut) fails the same way at every retry until the server, a link or the agent changes, so
the agent waits for such a change instead of retrying, and then resumes at the first retry that
comes after it, at the instant its chain of failed retries would have reached: a server outage
costs no events per failed retry, with the same retries, reconnects and trace.

The agent pings every 5 s and both ends drop a session they have not heard from for 60 s. Pings
are not simulated one by one: while a link is healthy they change nothing, so only silence (a
partition, a crash) schedules the read-deadline check (at the last ping heard + 60 s). A clean
stop closes the connection, which the other end sees one way-trip later. That keeps a fleet of
20,000 agents cheap.

`SessionManager` is the server's view: which sessions exist per cluster, which one a dial uses,
and when a cluster whose cluster-agent session was lost becomes reachable again (failover).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

from corral.model import Cluster, FailoverCompleted, TunnelClosed, TunnelOpened
from corral.sim.kernel import timeout_at
from corral.sim.world import World

if TYPE_CHECKING:
    from corral.sim.server import Replica

CLUSTER_AGENT = "cluster-agent"


class _Retry(enum.Enum):
    NOW = "now"
    """A connect attempt failed and the retry delay has already passed: try again at once."""


class Session:
    """One agent's websocket tunnel session as the server holds it."""

    __slots__ = (
        "_closing",
        "_waiter",
        "agent",
        "alive",
        "busy_until",
        "closed",
        "cuts",
        "dead",
        "idle",
        "opened_at",
        "replica",
    )

    def __init__(self, agent: Agent, opened_at: float, replica: Replica) -> None:
        self.agent = agent
        self.opened_at = opened_at
        self.replica = replica
        """The server replica that holds the session (others reach it through their peer)."""
        self.alive = True
        """Frames get through both ways (false while the agent is gone or the link is cut)."""
        self.dead = False
        """The agent's process behind it is gone: the session never comes back to life."""
        self.closed = False
        self.cuts = 0
        """Silences seen; a read-deadline check belongs to the silence that scheduled it."""
        self.busy_until = 0.0
        """When the session's one TCP stream has sent every response body queued on it so far."""
        self.idle = 0
        """Idle proxy connections to the apiserver through this session (the server's pool)."""
        self._waiter: simpy.Event | None = None
        self._closing: simpy.Event | None = None

    def changed(self, env: simpy.Environment) -> simpy.Event:
        """An event that fires when the session comes back to life or is closed."""
        if self._waiter is None:
            self._waiter = env.event()
        return self._waiter

    def closing(self, env: simpy.Environment) -> simpy.Event:
        """An event that fires when the server drops the session (streams on it end)."""
        if self._closing is None:
            self._closing = env.event()
            if self.closed:
                self._closing.succeed()
        return self._closing

    def notify(self) -> None:
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.succeed()

    def ended(self) -> None:
        self.notify()
        if self._closing is not None and not self._closing.triggered:
            self._closing.succeed()

    def send(self, now: float, seconds: float) -> float:
        """Queue a body that takes `seconds` on the wire; returns when its last byte has left."""
        self.busy_until = max(now, self.busy_until) + seconds
        return self.busy_until

    def last_ping(self, now: float, interval: float) -> float:
        return self.opened_at + interval * math.floor((now - self.opened_at) / interval)


class Agent:
    """A cluster-agent replica (``node is None``) or a node agent, running remotedialer's connect loop."""

    __slots__ = (
        "_first_z",
        "_lost",
        "_parked",
        "_revived",
        "_world",
        "cluster",
        "down",
        "host",
        "name",
        "node",
        "session",
    )

    def __init__(
        self, world: World, cluster: Cluster, node: str | None = None, *, replica: int = 1, host: str = ""
    ) -> None:
        self._world = world
        self.cluster = cluster
        self.node = node
        if node is not None:
            self.name = f"node-agent/{node}"
            self.host = node
        else:
            self.name = CLUSTER_AGENT if replica == 1 else f"{CLUSTER_AGENT}-{replica}"
            self.host = host
        self.down = False
        """The process is gone (stopped or crashed) until the fault is lifted."""
        self._first_z: float | None = None
        self.session: Session | None = None
        self._lost: simpy.Event | None = None
        self._revived: simpy.Event | None = None
        self._parked: simpy.Event | None = None
        """Fires when something changes that a doomed connect attempt depends on."""

    def run(self, start_delay: float, first_z: float = 0.0) -> Generator[simpy.Event, Any, None]:
        """The connect loop; `first_z` draws the first authorisation's time, so an agent's first
        session opens at the same moment whatever other agents its cluster runs."""
        self._first_z = first_z
        env = self._world.env
        protocol = self._world.calibration.protocol
        yield env.sleep(start_delay)
        while True:
            if self.down:
                self._revived = env.event()
                yield self._revived
                yield env.sleep(self._world.calibration.tunnel.agent_start_seconds)
                continue
            session = yield from self._connect()
            if session is _Retry.NOW:
                continue
            if session is None:
                yield env.sleep(protocol.reconnect_after_error_seconds)
                continue
            self._lost = env.event()
            reason = yield self._lost
            self._lost = None
            self.session = None
            if reason == "down":
                continue
            # The server went away or the read deadline passed: both are errors to the client.
            yield env.sleep(protocol.reconnect_after_error_seconds)

    def _connect(self) -> Generator[simpy.Event, Any, Session | _Retry | None]:
        world = self._world
        env, network, server = world.env, world.network, world.server
        region = self.cluster.region
        if not network.reachable(region, server.region):
            return (yield from self._doomed(world.calibration.protocol.handshake_timeout_seconds))
        rtt = network.rtt(region, server.region)
        replica = server.route()
        if replica is None:
            return (yield from self._doomed(rtt))  # connection refused
        if not replica.running:
            # A crashed replica the load balancer still sends to: nothing answers the handshake.
            yield env.sleep(world.calibration.protocol.handshake_timeout_seconds)
            return None
        yield env.sleep(world.calibration.network.handshake_round_trips * rtt)
        if self.down or not replica.ready or not network.reachable(region, server.region):
            return None
        # The replica authorises the agent on a worker: after an outage every agent of the fleet
        # comes back within the same seconds and queues here.
        epoch = replica.epoch
        worker = replica.workers.take()
        if worker is not None:
            yield worker
        yield env.sleep(world.calibration.server.tunnel_authorize.at(self._authorize_z()))
        replica.workers.give_back()
        if self.down or replica.epoch != epoch or not network.reachable(region, server.region):
            return None
        self.session = Session(self, env.now, replica)
        world.sessions.register(self.session)
        return self.session

    def _doomed(self, failing_seconds: float) -> Generator[simpy.Event, Any, _Retry]:
        """An attempt that fails after `failing_seconds`, and the retries that would fail alike.

        Each retry comes `reconnect_after_error_seconds` after the previous attempt failed and
        fails again as long as nothing changes: the agent waits for a change (the session
        manager wakes every parked agent when a server replica becomes ready or crashes, a link
        changes, or one of them stops) and resumes at the first retry at or after it. Retries
        before the change saw the old state; the one after sees the new one, as it would have
        retrying all along.
        """
        world = self._world
        env = world.env
        attempt = env.now
        self._parked = env.event()
        world.sessions.park(self)
        yield self._parked
        again = world.calibration.protocol.reconnect_after_error_seconds
        retry = attempt + failing_seconds + again  # the same sums as the chain of timeouts makes
        while retry < env.now:
            retry = retry + failing_seconds + again
        yield timeout_at(env, retry)
        return _Retry.NOW

    def wake(self) -> None:
        """Something a doomed connect attempt depends on changed: resume retrying."""
        if self._parked is not None:
            parked, self._parked = self._parked, None
            parked.succeed()

    # -- faults ---------------------------------------------------------------------------------

    def _authorize_z(self) -> float:
        if self._first_z is not None:
            z, self._first_z = self._first_z, None
            return z
        return self._world.streams.get("tunnel-authorize").gauss(0.0, 1.0)

    def stop(self, *, crash: bool, reason: str = "agent stopped") -> None:
        """The agent's process ends: a stop closes its connection (the server sees it one way-trip
        later), a crash leaves the server to notice at the read deadline."""
        if self.down:
            return
        self.down = True
        if self._parked is not None:
            # All parked agents retry, not this one alone: agents that fail at the same instants
            # then keep the order they would have had in the event queue retrying every time.
            self._world.sessions.wake_parked()
        session = self.session
        if session is not None:
            world = self._world
            world.sessions.lose(session, dead=True)
            server_region = world.server.region
            if crash:
                world.sessions.schedule_deadline(session)
            elif world.network.reachable(self.cluster.region, server_region):
                delay = world.network.rtt(self.cluster.region, server_region) / 2
                world.env.timeout(delay).callbacks.append(lambda _: world.sessions.close(session, reason))
            # Over a cut link the FIN never arrives: the read deadline already scheduled drops it.
        if self._lost is not None and not self._lost.triggered:
            self._lost.succeed("down")

    def revive(self) -> None:
        self.down = False
        if self._revived is not None and not self._revived.triggered:
            self._revived.succeed()

    def session_ended(self, session: Session, reason: str) -> None:
        if session is self.session and self._lost is not None and not self._lost.triggered:
            self._lost.succeed(reason)


def _agent_deadline(session: Session) -> Callable[[simpy.Event], None]:
    """The agent's own read deadline for a session whose server end vanished."""

    def notice(_: simpy.Event) -> None:
        session.agent.session_ended(session, "read deadline")

    return notice


class _ClusterSessions:
    __slots__ = ("cluster", "lost_at", "lost_from", "mains", "nodes", "on_connect")

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.mains: list[Session] = []
        self.nodes: dict[str, Session] = {}
        self.lost_at: float | None = None
        self.lost_from = ""
        self.on_connect: list[Callable[[], None]] = []
        """Called once when a cluster-agent session opens next (token sync after a reconnect)."""


class SessionManager:
    """The server's registry of tunnel sessions (remotedialer's session manager plus the dialer's view)."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._clusters = {cluster.name: _ClusterSessions(cluster) for cluster in world.scenario.clusters}
        self._order = {name: index for index, name in enumerate(self._clusters)}
        self._changed: set[str] = set(self._clusters)
        """Clusters whose sessions changed since `take_changed` last asked (all, at first)."""
        self._by_region: dict[str, list[_ClusterSessions]] = {}
        for state in self._clusters.values():
            self._by_region.setdefault(state.cluster.region, []).append(state)
        self._parked: dict[Agent, None] = {}
        """Agents waiting for a change before they retry connecting, in the order they failed."""
        world.network.on_change(self._link_changed)
        world.network.on_any_change(self.wake_parked)

    # -- queries --------------------------------------------------------------------------------

    def pick(self, cluster: Cluster) -> Session | None:
        """The session a dial uses: the first cluster agent's, else (rke1) the first node agent's."""
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

    def take_changed(self) -> list[str]:
        """Clusters whose sessions changed since the last call, in the scenario's order.

        Every change of a session (opened, lost, closed, alive again) goes through
        `_check_failover`, which notes its cluster: the health tick asks only about these.
        """
        changed, self._changed = self._changed, set()
        return sorted(changed, key=self._order.__getitem__)

    def connected(self, cluster: str) -> bool:
        """A live cluster-agent session exists (the cluster's controllers can reach it)."""
        return any(session.alive for session in self._clusters[cluster].mains)

    def when_connected(self, cluster: str, action: Callable[[], None]) -> None:
        """Run `action` at the next cluster-agent connect of `cluster`."""
        self._clusters[cluster].on_connect.append(action)

    # -- changes --------------------------------------------------------------------------------

    def park(self, agent: Agent) -> None:
        """`agent`'s connect attempts fail until something changes (see `Agent._doomed`)."""
        self._parked[agent] = None

    def wake_parked(self) -> None:
        """A server replica became ready or crashed, a link changed or a parked agent stopped:
        every parked agent resumes at its next retry, woken in the order they parked."""
        parked, self._parked = self._parked, {}
        for agent in parked:
            agent.wake()

    def register(self, session: Session) -> None:
        agent = session.agent
        state = self._clusters[agent.cluster.name]
        if agent.node is None:
            state.mains.append(session)
        else:
            state.nodes[agent.node] = session
        env = self._world.env
        self._world.recorder.emit(TunnelOpened(t=env.now, cluster=agent.cluster.name, agent=agent.name))
        if agent.node is None and state.on_connect:
            actions, state.on_connect = state.on_connect, []
            for action in actions:
                action()
        self._check_failover(state)

    def lose(self, session: Session, *, dead: bool = False) -> None:
        """Frames stop getting through; the server does not know yet."""
        session.alive = False
        session.dead = session.dead or dead
        state = self._clusters[session.agent.cluster.name]
        self._note_loss(state, session)
        self._check_failover(state)

    def _note_loss(self, state: _ClusterSessions, session: Session) -> None:
        if session.agent.node is None and state.lost_at is None and self._world.server.up:
            state.lost_at = self._world.env.now
            state.lost_from = session.agent.name

    def close(self, session: Session, reason: str, *, agent_notices: bool = True) -> None:
        """The server drops a session (it closed, or its read deadline passed)."""
        if session.closed:
            return
        was_alive = session.alive
        session.closed = True
        session.alive = False
        agent = session.agent
        state = self._clusters[agent.cluster.name]
        if agent.node is None:
            if session in state.mains:
                state.mains.remove(session)
            if was_alive:  # a session lost earlier was counted then
                self._note_loss(state, session)
        elif state.nodes.get(agent.node) is session:
            del state.nodes[agent.node]
        env = self._world.env
        self._world.recorder.emit(
            TunnelClosed(t=env.now, cluster=agent.cluster.name, agent=agent.name, reason=reason)
        )
        session.ended()
        if agent_notices:
            agent.session_ended(session, reason)
        self._check_failover(state)

    def drop_replica(self, replica: Replica, *, crashed: bool) -> None:
        """A server replica ended: its sessions are gone from the registry.

        After a stop the agents see the close at once; after a crash each finds out at its own
        read deadline (last pong + 60 s) and only then reconnects. With no replica left, losing
        sessions is an outage, not a failover.
        """
        env = self._world.env
        protocol = self._world.calibration.protocol
        outage = not self._world.server.up
        reason = "server crashed" if crashed else "server down"
        for state in self._clusters.values():
            if outage:
                state.lost_at = None
            for session in [*state.mains, *state.nodes.values()]:
                if session.replica is not replica:
                    continue
                if outage:
                    session.alive = False
                self.close(session, reason, agent_notices=not crashed)
                if crashed:
                    deadline = session.last_ping(env.now, protocol.ping_interval_seconds)
                    deadline += protocol.read_deadline_seconds
                    env.timeout(max(deadline - env.now, 0.0)).callbacks.append(_agent_deadline(session))
            if outage:
                state.lost_at = None

    def _check_failover(self, state: _ClusterSessions) -> None:
        self._changed.add(state.cluster.name)
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
                    self.schedule_deadline(session)
                elif not session.closed and not session.dead:
                    session.alive = True
                    session.notify()
            if not cut:
                self._check_failover(state)

    def schedule_deadline(self, session: Session) -> None:
        """Drop a silent session at its read deadline unless it speaks again before."""
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

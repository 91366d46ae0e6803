"""The authentication proxy: `/k8s/clusters/<id>/...` from the user, through a tunnel, to the apiserver.

A request opens a new connection to the server (TCP + TLS), goes to the replica the load balancer
picks, waits for one of its workers, has its token authenticated and the proxy's CPU work done
(per request and per byte of body), ensures the user's impersonation account downstream on the
first request to a cluster (a few writes through the tunnel), is dialled through the cluster's
session (with the bounded wait when there is none), takes an idle connection to the apiserver from
the server's pool or dials a new one through the tunnel (a TLS handshake across it), crosses the
tunnel, is served by the apiserver's priority-and-fairness queue, and streams back (slow start on
the user's new connection). Statuses: 200, 403 (revoked token), 429 (apiserver queue full), 500
("cluster agent disconnected" after the dial wait, or the tunnel dropped mid-request), 0 (no
answer: server down, link cut, crashed replica).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from corral.model import Cluster, ImpersonationAccountEnsured, User
from corral.sim.apiserver import NO_ANSWER, OK
from corral.sim.dialer import dial, wait_alive
from corral.sim.request import (
    ERROR_BODY_BYTES,
    FORBIDDEN,
    NO_RESPONSE,
    UNAVAILABLE,
    complete,
    record,
    slow_start_round_trips,
)
from corral.sim.tunnel import Session
from corral.sim.world import World

if TYPE_CHECKING:
    from corral.sim.server import Replica

REJECTED = 429
LOST = -1
"""Internal: no answer will ever come; the client gives up at its timeout."""


class AuthProxy:
    """The proxy route of the management server."""

    def __init__(self, world: World) -> None:
        self._world = world
        times = world.calibration.server
        self._authn = times.token_authn
        self._overhead = times.proxy_overhead
        self._cpu = times.cpu_per_request
        self._cpu_per_byte = times.cpu_per_megabyte_seconds / 1e6
        self._pool = times.idle_connections_per_cluster
        self._hop = world.calibration.tunnel.hop
        network = world.calibration.network
        self._setup = network.client_handshake_round_trips
        self._window = network.initial_window_bytes

    def handle(
        self, user: User, cluster: Cluster, verb: str, size_bytes: int, *, z_api: float, z_auth: float
    ) -> Generator[simpy.Event, Any, None]:
        """One request, start to end, recorded; one generator for the whole path (a fleet resumes
        it a few million times, and every generator it is delegating through costs on each)."""
        world = self._world
        env, network, server = world.env, world.network, world.server
        start = env.now
        replica, status = yield from self._arrive(user, size_bytes, z_auth=z_auth)
        if replica is not None and status == OK:
            epoch = replica.epoch
            user_rtt = network.rtt(user.region, server.region)
            key = (user.name, cluster.name)
            if key not in server.accounts:
                status = yield from self._ensure_account(replica, key, cluster, z_api=z_api)
            session: Session | None = None
            if status == OK:
                session = world.sessions.pick(cluster) or (yield from dial(world, cluster, replica))
                status = UNAVAILABLE if session is None else OK
            if status == OK and session is not None:
                status = yield from self._through_tunnel(
                    replica,
                    session,
                    verb,
                    size_bytes,
                    flow=user.name,
                    level="workload",
                    z_api=z_api,
                    z_auth=z_auth,
                )
            if status in (OK, REJECTED):
                # The body was streamed on to the user as it came through the tunnel; a large one
                # waits for the new connection's window to open (slow start).
                body = size_bytes if status == OK else ERROR_BODY_BYTES
                rounds = 0.5 + slow_start_round_trips(body, self._window) if body > self._window else 0.5
                yield env.sleep(user_rtt * rounds)
            if status != LOST:
                if replica.epoch != epoch:
                    status = LOST if replica.crashed_at is not None else NO_RESPONSE
                elif not network.reachable(user.region, server.region):
                    status = LOST
        if status != LOST:
            record(world, path="proxy", user=user, cluster=cluster, verb=verb, status=status, start=start)
            return
        # Nothing comes back over a cut link or from a crashed replica: the client gives up at its timeout.
        yield from complete(
            world,
            path="proxy",
            user=user,
            cluster=cluster,
            verb=verb,
            status=NO_RESPONSE,
            start=start,
            lost=True,
        )

    def open_stream(  # noqa: PLR0911 - one return per way a stream fails to open
        self, user: User, cluster: Cluster
    ) -> Generator[simpy.Event, Any, tuple[int, Replica | None, Session | None]]:
        """Open a watch, logs or exec stream: ``(200, replica, session)`` while it holds, else the status.

        A stream takes no priority-and-fairness seat (long-running requests are exempt) and no
        pooled connection: it dials its own through the tunnel.
        """
        world = self._world
        env, network, server = world.env, world.network, world.server
        replica, status = yield from self._arrive(user, 0, z_auth=0.0)
        if replica is None or status != OK:
            return status, None, None
        epoch = replica.epoch
        key = (user.name, cluster.name)
        if key not in world.server.accounts:
            status = yield from self._ensure_account(replica, key, cluster, z_api=0.0)
            if status != OK:
                return status, None, None
        session = yield from dial(world, cluster, replica)
        if session is None:
            return UNAVAILABLE, None, None
        yield env.sleep(2 * network.rtt(cluster.region, server.region))  # TLS across the tunnel, request
        if replica.epoch != epoch:
            return LOST if replica.crashed_at is not None else NO_RESPONSE, None, None
        if session.closed:
            return UNAVAILABLE, None, None
        reach = world.apiservers[cluster.name].reach("service")
        if reach != OK:
            return LOST if reach == NO_ANSWER else UNAVAILABLE, None, None
        yield env.sleep(network.rtt(user.region, server.region) / 2)
        return OK, replica, session

    # -- the request ----------------------------------------------------------------------------

    def _arrive(  # noqa: PLR0911 - one return per way a connection fails
        self, user: User, size_bytes: int, *, z_auth: float
    ) -> Generator[simpy.Event, Any, tuple[Replica | None, int]]:
        """Connect (TCP + TLS), reach a replica and get authenticated and processed by one of its workers."""
        world = self._world
        env, network, server = world.env, world.network, world.server
        if not network.reachable(user.region, server.region):
            return None, LOST
        user_rtt = network.rtt(user.region, server.region)
        replica = server.route()
        if replica is None:
            yield env.sleep(user_rtt)  # connection refused
            return None, NO_RESPONSE
        if not replica.running:
            return None, LOST  # a crashed replica still in rotation: the handshake never completes
        epoch = replica.epoch
        yield env.sleep(user_rtt * (self._setup + 0.5))
        if replica.epoch != epoch:
            return None, LOST if replica.crashed_at is not None else NO_RESPONSE
        worker = replica.workers.take()
        if worker is not None:
            yield worker
        core = replica.cpu.take()
        if core is not None:
            yield core
        yield env.sleep(
            self._authn.at(z_auth)
            + self._overhead.at(z_auth)
            + self._cpu.at(z_auth)
            + size_bytes * self._cpu_per_byte
        )
        replica.cpu.give_back()
        replica.workers.give_back()
        if replica.epoch != epoch:
            return None, LOST if replica.crashed_at is not None else NO_RESPONSE
        if user.name in server.revoked:
            yield env.sleep(user_rtt / 2)
            return None, FORBIDDEN
        return replica, OK

    def _through_tunnel(
        self,
        replica: Replica,
        session: Session,
        verb: str,
        size_bytes: int,
        *,
        flow: str,
        level: str,
        z_api: float,
        z_auth: float,
    ) -> Generator[simpy.Event, Any, int]:
        """Server -> agent -> apiserver -> agent -> server; 500 if the session is dropped meanwhile.

        The proxy reuses an idle connection to the apiserver if its pool has one, else it dials a
        new one through the tunnel: a TLS handshake across it (the agent's TCP dial is local).
        Response bodies share the session's single stream: a large list delays the bodies queued
        behind it on the same tunnel (first come, first served at the link's bandwidth).
        """
        world = self._world
        env = world.env
        cluster = session.agent.cluster
        hop = self._hop.at(z_auth)
        rtt = world.network.rtt(cluster.region, world.server.region)
        if session.replica is not replica:
            rtt += world.network.rtt(world.server.region, world.server.region)  # through the peer
        if session.idle:
            session.idle -= 1
            setup = 0.0
        else:
            setup = rtt
        yield env.sleep(setup + rtt / 2 + hop)
        if not session.alive:
            ok = yield from wait_alive(world, session)
            if not ok:
                return UNAVAILABLE
        apiserver = world.apiservers[cluster.name]
        if apiserver.down:
            reach = apiserver.reach("service")
            if reach != OK:
                return LOST if reach == NO_ANSWER else UNAVAILABLE
        status = yield from apiserver.serve(verb, flow=flow, level=level, z=z_api)
        body = world.network.transfer_seconds(size_bytes if status == OK else ERROR_BODY_BYTES)
        sent = session.send(env.now, body)
        yield env.sleep(sent - env.now + rtt / 2 + hop)
        if not session.alive:
            ok = yield from wait_alive(world, session)
            if not ok:
                return UNAVAILABLE
        if session.idle < self._pool:
            session.idle += 1
        return status

    def _ensure_account(
        self, replica: Replica, key: tuple[str, str], cluster: Cluster, *, z_api: float
    ) -> Generator[simpy.Event, Any, int]:
        """First request of a user to a cluster: create (or, after a restart, find) the account."""
        world = self._world
        pending = world.server.pending_accounts.get(key)
        if pending is not None:
            ok = yield pending
            return OK if ok else UNAVAILABLE
        done = world.server.pending_accounts[key] = world.env.event()
        exists = key in world.downstream_accounts
        times = world.calibration.server
        calls = times.impersonation_check_calls if exists else times.impersonation_setup_calls
        status = UNAVAILABLE
        session = yield from dial(world, cluster, replica)
        if session is not None:
            status = OK
            for _ in range(calls):
                verb = "get" if exists else "create"
                status = yield from self._through_tunnel(
                    replica,
                    session,
                    verb,
                    ERROR_BODY_BYTES,
                    flow="system:rancher",
                    level="system",
                    z_api=z_api,
                    z_auth=0.0,
                )
                if status != OK:
                    break
        world.server.pending_accounts.pop(key, None)
        ok = status == OK
        if ok:
            world.downstream_accounts.add(key)
            world.server.accounts.add(key)
            world.recorder.emit(
                ImpersonationAccountEnsured(
                    t=world.env.now, cluster=cluster.name, user=key[0], created=not exists
                )
            )
        done.succeed(ok)
        return status

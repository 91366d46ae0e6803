"""The authentication proxy: `/k8s/clusters/<id>/...` from the user, through a tunnel, to the apiserver.

A request crosses the user-server link, waits for a server worker, has its token authenticated,
ensures the user's impersonation account downstream on the first request to a cluster (a few
writes through the tunnel), is dialled through the cluster's session (with the bounded wait when
there is none), crosses the tunnel, is served by the apiserver's priority-and-fairness queue, and
streams back. Statuses: 200, 429 (apiserver queue full), 502 (tunnel dropped mid-request), 503
(cluster agent disconnected), 0 (no answer: server down or link cut).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, ImpersonationAccountEnsured, User
from corral.sim.dialer import dial, wait_alive
from corral.sim.request import ERROR_BODY_BYTES, NO_RESPONSE, complete
from corral.sim.tunnel import Session
from corral.sim.world import World

REJECTED = 429
BAD_GATEWAY = 502
UNAVAILABLE = 503


class AuthProxy:
    """The proxy route of the management server."""

    def __init__(self, world: World) -> None:
        self._world = world
        times = world.calibration.server
        self._authn = times.token_authn
        self._overhead = times.proxy_overhead
        self._hop = world.calibration.tunnel.hop

    def handle(
        self, user: User, cluster: Cluster, verb: str, size_bytes: int, *, z_api: float, z_auth: float
    ) -> Generator[simpy.Event, Any, None]:
        world = self._world
        env, network, server = world.env, world.network, world.server
        start = env.now
        status = yield from self._serve(user, cluster, verb, size_bytes, z_api=z_api, z_auth=z_auth)
        # Nothing comes back over a cut link: the client gives up at its timeout.
        yield from complete(
            world,
            path="proxy",
            user=user,
            cluster=cluster,
            verb=verb,
            status=status,
            start=start,
            lost=status == NO_RESPONSE and not network.reachable(user.region, server.region),
        )

    def _serve(
        self, user: User, cluster: Cluster, verb: str, size_bytes: int, *, z_api: float, z_auth: float
    ) -> Generator[simpy.Event, Any, int]:
        world = self._world
        env, network, server = world.env, world.network, world.server
        if not network.reachable(user.region, server.region):
            return NO_RESPONSE
        epoch = server.epoch
        user_rtt = network.rtt(user.region, server.region)
        arrived = yield from self._arrive(user_rtt, z_auth=z_auth)
        status = 200 if arrived else NO_RESPONSE
        session: Session | None = None
        if status == 200 and (user.name, cluster.name) not in server.accounts:
            status = yield from self._ensure_account((user.name, cluster.name), cluster, z_api=z_api)
        if status == 200:
            session = yield from dial(world, cluster)
            status = UNAVAILABLE if session is None else 200
        if status == 200 and session is not None:
            status = yield from self._through_tunnel(
                session, verb, size_bytes, flow=user.name, level="workload", z_api=z_api, z_auth=z_auth
            )
        if status in (200, REJECTED):
            # The body was streamed on to the user as it came through the tunnel.
            yield env.timeout(user_rtt / 2)
        if server.epoch != epoch or not network.reachable(user.region, server.region):
            return NO_RESPONSE
        return status

    def _arrive(self, user_rtt: float, *, z_auth: float) -> Generator[simpy.Event, Any, bool]:
        """Reach the server and get authenticated by a worker; ``False`` if the server is gone."""
        world = self._world
        env, server = world.env, world.server
        if not server.up:
            yield env.timeout(user_rtt)  # connection refused
            return False
        epoch = server.epoch
        yield env.timeout(user_rtt / 2)
        if server.epoch != epoch:
            return False
        with server.workers.request() as worker:
            yield worker
            yield env.timeout(self._authn.at(z_auth) + self._overhead.at(z_auth))
        return server.epoch == epoch

    def _through_tunnel(
        self,
        session: Session,
        verb: str,
        size_bytes: int,
        *,
        flow: str,
        level: str,
        z_api: float,
        z_auth: float,
    ) -> Generator[simpy.Event, Any, int]:
        """Server -> agent -> apiserver -> agent -> server; 502 if the session is dropped meanwhile.

        Response bodies share the session's single stream: a large list delays the bodies queued
        behind it on the same tunnel (first come, first served at the link's bandwidth).
        """
        world = self._world
        env = world.env
        cluster = session.agent.cluster
        hop = self._hop.at(z_auth)
        half = world.network.rtt(cluster.region, world.server.region) / 2
        yield env.timeout(half + hop)
        if not session.alive:
            ok = yield from wait_alive(world, session)
            if not ok:
                return BAD_GATEWAY
        status = yield from world.apiservers[cluster.name].serve(verb, flow=flow, level=level, z=z_api)
        half = world.network.rtt(cluster.region, world.server.region) / 2
        body = world.network.transfer_seconds(size_bytes if status == 200 else ERROR_BODY_BYTES)
        sent = session.send(env.now, body)
        yield env.timeout(sent - env.now + half + hop)
        if not session.alive:
            ok = yield from wait_alive(world, session)
            if not ok:
                return BAD_GATEWAY
        return status

    def _ensure_account(
        self, key: tuple[str, str], cluster: Cluster, *, z_api: float
    ) -> Generator[simpy.Event, Any, int]:
        """First request of a user to a cluster: create (or, after a restart, find) the account."""
        world = self._world
        server = world.server
        pending = server.pending_accounts.get(key)
        if pending is not None:
            ok = yield pending
            return 200 if ok else BAD_GATEWAY
        done = server.pending_accounts[key] = world.env.event()
        exists = key in world.downstream_accounts
        times = world.calibration.server
        calls = times.impersonation_check_calls if exists else times.impersonation_setup_calls
        status = UNAVAILABLE
        session = yield from dial(world, cluster)
        if session is not None:
            status = 200
            for _ in range(calls):
                verb = "get" if exists else "create"
                status = yield from self._through_tunnel(
                    session,
                    verb,
                    ERROR_BODY_BYTES,
                    flow="system:rancher",
                    level="system",
                    z_api=z_api,
                    z_auth=0.0,
                )
                if status != 200:
                    break
        server.pending_accounts.pop(key, None)
        ok = status == 200
        if ok:
            world.downstream_accounts.add(key)
            server.accounts.add(key)
            world.recorder.emit(
                ImpersonationAccountEnsured(
                    t=world.env.now, cluster=cluster.name, user=key[0], created=not exists
                )
            )
        done.succeed(ok)
        return status

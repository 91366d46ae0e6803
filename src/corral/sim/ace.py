"""The paths that skip the server: Authorized Cluster Endpoint (ACE) and direct admin access.

ACE: kubectl opens a new connection to the cluster's kube-apiserver (through the control plane's
load balancer when the cluster has an ACE FQDN, else to the first control-plane node its
kubeconfig names), which asks kube-api-auth (TokenReview, cached) who the Rancher token belongs
to; the server is not involved, so ACE works while it is down. Direct: the admin kubeconfig
(client certificate, first control-plane node), the baseline without any token review.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, User
from corral.sim.apiserver import NO_ANSWER, OK, Entry
from corral.sim.request import ERROR_BODY_BYTES, NO_RESPONSE, UNAUTHORIZED, complete, slow_start_round_trips
from corral.sim.world import World


class ClusterEndpoint:
    """A cluster's own API endpoint as users reach it over ACE or with the admin kubeconfig."""

    def __init__(self, world: World) -> None:
        self._world = world
        network = world.calibration.network
        self._setup = network.client_handshake_round_trips
        self._window = network.initial_window_bytes

    def handle(
        self,
        user: User,
        cluster: Cluster,
        verb: str,
        size_bytes: int,
        *,
        path: str,
        z_api: float,
        z_auth: float,
    ) -> Generator[simpy.Event, Any, None]:
        world = self._world
        env, network = world.env, world.network
        start = env.now
        status = NO_RESPONSE
        lost = not network.reachable(user.region, cluster.region)
        if not lost:
            rtt = network.rtt(user.region, cluster.region)
            apiserver = world.apiservers[cluster.name]
            reach = apiserver.reach(self.entry(cluster, path))
            if reach == NO_ANSWER:
                lost = True
            elif reach != OK:
                yield env.sleep(rtt)  # connection refused
            else:
                yield env.sleep(rtt * (self._setup + 0.5))
                authenticated = True
                if path == "ace":
                    authenticated = yield from world.webhooks[cluster.name].authenticate(
                        user.name, token=world.tokens.current(user.name), z=z_auth
                    )
                if authenticated:
                    status = yield from apiserver.serve(verb, flow=user.name, level="workload", z=z_api)
                else:
                    status = UNAUTHORIZED
                body = size_bytes if status == OK else ERROR_BODY_BYTES
                rounds = 0.5 + slow_start_round_trips(body, self._window)
                yield env.sleep(rtt * rounds + network.transfer_seconds(body))
                lost = not network.reachable(user.region, cluster.region)
        yield from complete(
            world,
            path=path,
            user=user,
            cluster=cluster,
            verb=verb,
            status=status,
            start=start,
            lost=lost,
        )

    @staticmethod
    def entry(cluster: Cluster, path: str) -> Entry:
        """How the client's kubeconfig reaches the control plane."""
        return "fqdn" if path == "ace" and cluster.ace_fqdn else "first"

    def open_stream(
        self, user: User, cluster: Cluster, *, path: str
    ) -> Generator[simpy.Event, Any, tuple[int, str]]:
        """Open a stream straight to an apiserver: ``(200, node)`` while it holds, else ``(status, "")``."""
        world = self._world
        env, network = world.env, world.network
        if not network.reachable(user.region, cluster.region):
            return NO_RESPONSE, ""
        rtt = network.rtt(user.region, cluster.region)
        apiserver = world.apiservers[cluster.name]
        node = apiserver.pick(self.entry(cluster, path))
        if node is None or node in apiserver.down:
            yield env.sleep(rtt)
            return NO_RESPONSE, ""
        yield env.sleep(rtt * (self._setup + 1.0))
        if path == "ace":
            ok = yield from world.webhooks[cluster.name].authenticate(
                user.name, token=world.tokens.current(user.name), z=0.0
            )
            if not ok:
                return UNAUTHORIZED, ""
        if node in apiserver.down:
            return NO_RESPONSE, ""
        return OK, node

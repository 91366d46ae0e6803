"""The paths that skip the server: Authorized Cluster Endpoint (ACE) and direct admin access.

ACE: kubectl talks to the cluster's kube-apiserver, which asks kube-api-auth (TokenReview, cached)
who the Rancher token belongs to; the server is not involved, so ACE works while it is down.
Direct: the admin kubeconfig (client certificate), the baseline without any token review.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, User
from corral.sim.request import ERROR_BODY_BYTES, NO_RESPONSE, complete
from corral.sim.world import World


class ClusterEndpoint:
    """A cluster's own API endpoint as users reach it over ACE or with the admin kubeconfig."""

    def __init__(self, world: World) -> None:
        self._world = world

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
        if network.reachable(user.region, cluster.region):
            rtt = network.rtt(user.region, cluster.region)
            yield env.timeout(rtt / 2)
            if path == "ace":
                yield from world.webhooks[cluster.name].authenticate(user.name, z=z_auth)
            status = yield from world.apiservers[cluster.name].serve(
                verb, flow=user.name, level="workload", z=z_api
            )
            yield env.timeout(
                rtt / 2 + network.transfer_seconds(size_bytes if status == 200 else ERROR_BODY_BYTES)
            )
        yield from complete(
            world,
            path=path,
            user=user,
            cluster=cluster,
            verb=verb,
            status=status,
            start=start,
            lost=not network.reachable(user.region, cluster.region),
        )

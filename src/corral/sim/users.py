"""Users sending requests: Poisson arrivals per workload entry, a request mix, a path per entry.

An entry with a `stream` opens held streams instead (`streams`), drawing the same numbers.

One arrival process serves a whole workload entry (the sum of its users' Poisson streams is one
Poisson stream), which keeps 5,000 users as cheap as five. Every request draws the same numbers in
the same order whatever its path (user, cluster, verb, then the service-time draws), so a scenario
run once over the proxy and once over ACE compares the same requests.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Cluster, WorkloadEntry
from corral.sim.ace import ClusterEndpoint
from corral.sim.kernel import FastEnvironment
from corral.sim.proxy import AuthProxy
from corral.sim.streams import hold_stream
from corral.sim.world import World


class Users:
    """The scenario's workload, turned into request processes."""

    def __init__(self, world: World, proxy: AuthProxy, endpoint: ClusterEndpoint) -> None:
        self._world = world
        self._proxy = proxy
        self._endpoint = endpoint

    def start(self) -> None:
        for index, entry in enumerate(self._world.scenario.workload):
            self._world.env.process(self._arrivals(index, entry))

    def _arrivals(self, index: int, entry: WorkloadEntry) -> Generator[simpy.Event, Any, None]:
        world = self._world
        env = world.env
        users = entry.select_users(world.scenario.users)
        clusters = entry.select_clusters(world.scenario.clusters)
        if not users or not clusters:
            return
        rng = world.streams.get(f"workload/{index}")
        assigner = world.streams.get(f"assignment/{index}")
        assigned: list[tuple[Cluster, ...] | None] = [None] * len(users)
        """By the user's index: the clusters it works with (users are distinct, so as by name)."""
        per_user = entry.clusters_per_user
        cumulative = list(itertools.accumulate(kind.weight for kind in entry.mix))
        total_weight = cumulative[-1]
        rate = entry.rate_per_second * len(users)
        path = entry.path
        if entry.start_seconds:
            yield env.sleep(entry.start_seconds)
        end = entry.end_seconds
        spawn = env.spawn if isinstance(env, FastEnvironment) else env.process
        # Bound once: this loop runs once per request of a fleet.
        expovariate, uniform, gauss = rng.expovariate, rng.random, rng.gauss
        user_count = len(users)
        mix, stream = entry.mix, entry.stream
        count = len(clusters) if per_user is None else per_user
        by_user = count < len(clusters)
        proxy, endpoint = self._proxy.handle, self._endpoint.handle
        while True:
            gap = expovariate(rate)
            if env.now + gap >= end:
                return
            yield env.sleep(gap)
            drawn = int(uniform() * user_count)
            user = users[drawn]
            targets = clusters
            if by_user:
                mine = assigned[drawn]
                if mine is None:
                    mine = assigned[drawn] = _assign(assigner, clusters, count)
                targets = mine
            cluster = targets[int(uniform() * len(targets))]
            kind = mix[bisect.bisect_right(cumulative, uniform() * total_weight)]
            z_api = gauss(0.0, 1.0)
            z_auth = gauss(0.0, 1.0)
            if stream is not None:
                request = hold_stream(
                    world,
                    self._proxy,
                    self._endpoint,
                    user=user,
                    cluster=cluster,
                    path=path,
                    kind=stream,
                    hold_seconds=entry.hold_seconds,
                )
            elif path == "proxy":
                request = proxy(user, cluster, kind.verb, kind.response_bytes, z_api=z_api, z_auth=z_auth)
            else:
                request = endpoint(
                    user, cluster, kind.verb, kind.response_bytes, path=path, z_api=z_api, z_auth=z_auth
                )
            spawn(request)


def _assign(rng: random.Random, clusters: tuple[Cluster, ...], count: int) -> tuple[Cluster, ...]:
    return tuple(rng.sample(clusters, count))

"""The server's place and size in a scenario: region, replicas and workers per replica.

The server stands for Rancher's: where the authentication proxy, the tunnel endpoint and the
cluster controllers run (the SimPy model simulates it; corral has no server of its own yet).
Its region decides how far users and agents are from it; its workers bound how many requests it
authenticates and rewrites at once (waiting on a downstream cluster does not hold a worker), its
CPUs how fast it does the proxy's work (TLS, framing, copying bodies). Replicas sit behind a load
balancer; each holds the tunnel sessions of the agents that reached it.

    server: {region: us, replicas: 3, workers: 64, cpus: 4}
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.model._fields import Field


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """Where the Rancher-like server runs and how many requests it handles at once."""

    region: str
    replicas: int = 1
    workers: int = 64
    """Concurrent request handlers per replica (authentication, impersonation, header rewrite)."""
    cpus: int = 4
    """CPU cores per replica for the proxy's work per request and per byte (Rancher's smallest
    recommended server size has 4 vCPUs)."""

    @property
    def capacity(self) -> int:
        """Workers over all replicas."""
        return self.replicas * self.workers


def read_server(node: Field, regions: tuple[str, ...]) -> Server:
    """The `server:` section; without one the server sits in the first region with defaults."""
    if node.value is None:
        return Server(region=regions[0])
    node.only("region", "replicas", "workers", "cpus")
    return Server(
        region=node.get("region", regions[0]).string(choices=regions),
        replicas=node.get("replicas", 1).integer(min=1, max=64),
        workers=node.get("workers", 64).integer(min=1, max=100_000),
        cpus=node.get("cpus", 4).integer(min=1, max=1_024),
    )

"""Stand-ins for the tunnel endpoints' seams and in-memory agents registered in their manager."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from corral.server.connect import ClusterParams, TunnelEndpoints
from corral.server.proxy_interfaces import ClusterTarget
from corral.tunnel import Session, Stream, memory_pair, stream_pair
from corral.tunnel.testing import allow_all

TOKEN = "bcdfghjklmnpqrstvwxz2456789bcdfghjklmnpqrstvwxz2456"


@dataclass
class Tokens:
    known: dict[str, str] = field(default_factory=lambda: {TOKEN: "c-1"})

    async def cluster_for(self, token: str) -> str | None:
        return self.known.get(token)


@dataclass
class Registrar:
    registered: list[tuple[str, ClusterParams]] = field(default_factory=list)

    async def register(self, cluster: str, params: ClusterParams) -> None:
        self.registered.append((cluster, params))


@dataclass
class Clusters:
    endpoint: str = "https://10.43.0.1:443"

    async def can_access(self, cluster: str, user: object) -> bool:
        return True

    async def get(self, cluster: str) -> ClusterTarget | None:
        return ClusterTarget(name=cluster, api_endpoint=self.endpoint)


class MemoryAgent:
    """An agent's client session over an in-memory transport, served under ``key`` by the endpoints."""

    def __init__(self, endpoints: TunnelEndpoints, key: str) -> None:
        server_end, client_end = memory_pair()
        self.key = key
        self.dialed: list[str] = []
        self._peers: list[Stream] = []
        self.server = Session(server_end, role="server", client_key=key, settings=endpoints.settings)
        self.client = Session(
            client_end, role="client", connect_authorizer=allow_all, local_dialer=self._dial
        )
        self.tasks = [
            asyncio.ensure_future(endpoints.manager.serve(key, self.server)),
            asyncio.ensure_future(self.client.serve()),
        ]

    async def _dial(self, proto: str, address: str) -> Stream:
        self.dialed.append(f"{proto}/{address}")
        ours, theirs = stream_pair()
        self._peers.append(theirs)
        return ours

    async def stop(self, reason: str = "agent stopped") -> None:
        await self.client.close(reason)
        await self.server.close(reason)
        await asyncio.gather(*self.tasks, return_exceptions=True)

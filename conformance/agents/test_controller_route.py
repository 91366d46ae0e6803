"""The cluster controllers reach a cluster with agents through its tunnel, as the proxy does.

An upstream with the management CRDs holds the Cluster; the downstream cluster is registered with
its ``cattle`` credential. While no agent ever connected, the controllers dial it directly. Once
the cluster agent connects, they move onto the tunnel dialer; when the agent stops, the cluster
turns Ready=False and stays so through later status checks (a direct dial would turn it Ready
again), and it is Ready once more after the agent reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance.server.test_cluster_controllers import install_management
from corral.agent import fleet
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.errors import AlreadyExistsError
from corral.k8s.aio import AsyncKubeClient
from corral.server.cattle import ensure_cattle_credential
from corral.server.controllers import ClusterControllers
from corral.server.proxy_interfaces import Dialer, DialError
from corral.server.registration import condition_true, register_cluster
from corral.server.tunnel_dialer import DialPolicy, TunnelDialer
from corral.tunnel.testing import wait_until

from ._harness import tunnel_server
from .conftest import start_cluster_agent

pytestmark = pytest.mark.timeout(300)

MGMT = "/apis/management.cattle.io/v3"
CHECKS_WHILE_GONE = 3
"""Status checks that must find the cluster unreachable after its agent stopped."""


@dataclass
class CountingRoutes:
    """The tunnel dialer as the controllers' routes, counting the dials that find no agent."""

    dialer: TunnelDialer
    refused: int = 0
    dialed: int = 0
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def route(self, cluster: str) -> Dialer | None:
        return self if self.dialer.route(cluster) is not None else None

    def on_route_change(self, callback: Callable[[str], None]) -> None:
        self.dialer.on_route_change(callback)

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        self.dialed += 1
        try:
            return await self.dialer.dial(cluster, host, port)
        except DialError:
            self.refused += 1
            raise


@pytest.mark.requirement("HEALTH-004", "HEALTH-006", "TUN-013")
async def test_the_controllers_reach_a_cluster_with_agents_only_through_its_tunnel(
    cluster_set: ClusterSet, handle: ClusterHandle, run_dir: Path, tmp_path: Path
) -> None:
    upstream_handle = next(c for c in cluster_set if c.name != handle.name)
    with upstream_handle.client() as upstream:
        install_management(upstream)
        with contextlib.suppress(AlreadyExistsError):
            upstream.create(
                f"{MGMT}/clusters",
                {
                    "apiVersion": "management.cattle.io/v3",
                    "kind": "Cluster",
                    "metadata": {"name": handle.name},
                    "spec": {"displayName": handle.name},
                },
            )
        config = upstream.config
    with handle.client() as admin:
        sa_token = ensure_cattle_credential(admin)
    quick = DialPolicy(wait_polls=1, wait_seconds=0.2)
    async with (
        tunnel_server(handle.name, tmp_path, policy=quick) as server,
        AsyncKubeClient(config) as client,
    ):
        await register_cluster(
            client,
            handle.name,
            address=handle.server.removeprefix("https://"),
            sa_token=sa_token,
            ca_cert_pem=handle.ca_pem or b"",
        )
        routes = CountingRoutes(server.dialer)
        controllers = ClusterControllers(client, routes=routes, status_interval_seconds=0.5)
        await controllers.start()
        try:
            clusters = controllers.informers["clusters"]

            def ready() -> bool:
                cluster = clusters.get(handle.name)
                return cluster is not None and condition_true(cluster, "Ready")

            await wait_until(ready, "Ready through a direct dial", timeout_seconds=60)
            assert routes.dialed == 0, "no agent has connected yet: the controllers dial directly"

            start_cluster_agent(run_dir, server, handle)
            await server.wait_sessions(handle.name)
            await wait_until(lambda: routes.dialed > 0, "the controllers' first dial through the tunnel")
            session = server.endpoints.manager.first(handle.name)
            await wait_until(lambda: len(session.conns) > 0, "the controllers' connections in the tunnel")
            await wait_until(ready, "Ready through the tunnel", timeout_seconds=60)

            await asyncio.to_thread(fleet.fault, run_dir, "stop", cluster=handle.name)
            await wait_until(lambda: not ready(), "Ready=False once the agent is gone", timeout_seconds=60)
            refused = routes.refused
            await wait_until(
                lambda: routes.refused >= refused + CHECKS_WHILE_GONE,
                "status checks finding no agent",
                timeout_seconds=60,
            )
            assert not ready(), "the cluster turned Ready while its agent was gone"

            await asyncio.to_thread(fleet.fault, run_dir, "start", cluster=handle.name)
            await server.wait_sessions(handle.name)
            await wait_until(ready, "Ready again after the agent reconnected", timeout_seconds=60)
        finally:
            await controllers.stop()

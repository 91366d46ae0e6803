"""Fixtures of the agent conformance tests: one downstream cluster prepared for agents, a run folder."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent import fleet
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.server.cattle import ensure_cattle_credential

from ._harness import REGISTRATION_TOKEN, TunnelServer, grant_user


@pytest.fixture
def handle(cluster_set: ClusterSet) -> ClusterHandle:
    """The first cluster, with Rancher's cattle account installed and the proxy's user granted."""
    cluster = next(iter(cluster_set))
    with cluster.client() as admin:
        ensure_cattle_credential(admin)
    grant_user(cluster)
    return cluster


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run folder whose agents are all stopped after the test."""
    folder = tmp_path / "run"
    folder.mkdir()
    try:
        yield folder
    finally:
        fleet.stop_all(folder)


def start_cluster_agent(
    run_dir: Path,
    server: TunnelServer,
    handle: ClusterHandle,
    *,
    replica: int = 0,
    checksum: str | None = None,
) -> fleet.AgentProcess:
    return fleet.start_agent(
        run_dir,
        name=f"cluster-agent-{handle.name}-{replica}",
        cluster=handle.name,
        kind="cluster",
        replica=replica,
        server=server.url,
        token=REGISTRATION_TOKEN,
        ca_checksum=server.checksum if checksum is None else checksum,
        kubeconfig=handle.kubeconfig,
    )


def start_node_agent(
    run_dir: Path, server: TunnelServer, handle: ClusterHandle, node: str, *, extra_args: tuple[str, ...] = ()
) -> fleet.AgentProcess:
    return fleet.start_agent(
        run_dir,
        name=f"node-agent-{handle.name}-{node}",
        cluster=handle.name,
        kind="node",
        node=node,
        server=server.url,
        token=REGISTRATION_TOKEN,
        ca_checksum=server.checksum,
        kubeconfig=handle.kubeconfig,
        extra_args=extra_args,
    )


async def kubectl(binaries: build.Built, kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(binaries["kubectl"]),
        f"--kubeconfig={kubeconfig}",
        "--request-timeout=90s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, out.decode(), err.decode()

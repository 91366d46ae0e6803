"""A server restart on a real kube-apiserver: every agent reconnects, and the proxy serves through them again.

The server (the harness of `._harness`) stops with a cluster agent and a node agent connected, and a
new one starts on the same address with the same CA and empty stand-ins: the proxy can only serve
again once the cluster agent has registered anew and its session is back. The agents are
``corral agent`` processes on Rancher's reconnect cadence (5 s after the session ends, 5 s more).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from corral.agent import fleet
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle
from corral.k8s import KubeClient

from ._harness import tunnel_server
from .conftest import kubectl, start_cluster_agent, start_node_agent

pytestmark = pytest.mark.timeout(240)

RECONNECT_SECONDS = 60.0
"""Rancher's cadence reconnects within 20 s of the server's return (one failed try while it was
down costs 10 s); the rest is slack for a loaded machine."""


def _first_node(handle: ClusterHandle) -> str:
    if handle.nodes:
        return handle.nodes[0]
    with KubeClient(handle.admin_config()) as admin:
        return str(admin.list("/api/v1/nodes")["items"][0]["metadata"]["name"])


@pytest.mark.requirement("TUN-016", "TUN-013")
async def test_every_agent_reconnects_after_a_server_restart_and_the_proxy_serves_again(
    handle: ClusterHandle, run_dir: Path, tmp_path: Path, corral_binaries: build.Built
):
    node = _first_node(handle)
    keys = (handle.name, f"{handle.name}:{node}")
    async with tunnel_server(handle.name, tmp_path) as first:
        start_cluster_agent(run_dir, first, handle)
        await first.wait_sessions(handle.name)
        start_node_agent(run_dir, first, handle, node)
        for key in keys:
            await first.wait_sessions(key)
        kubeconfig = first.kubeconfig(tmp_path / "proxy.kubeconfig")
        code, before, err = await kubectl(corral_binaries, kubeconfig, "get", "namespaces", "-o", "name")
        assert code == 0, err
        port = urlsplit(first.url).port
        authority = first.authority
    assert port is not None
    agents = fleet.list_agents(run_dir)
    assert len(agents) == 2
    assert all(agent.alive() for agent in agents), "an agent must outlive the server it served"

    async with tunnel_server(handle.name, tmp_path, port=port, authority=authority) as second:
        assert second.url == first.url
        assert not second.seams.registered, "the restarted server starts knowing no agent"
        for key in keys:
            await second.wait_sessions(key, timeout_seconds=RECONNECT_SECONDS)
        assert second.seams.registered[handle.name].address == handle.server.removeprefix("https://")
        code, after, err = await kubectl(corral_binaries, kubeconfig, "get", "namespaces", "-o", "name")
        assert code == 0, err
        assert "namespace/kube-system" in after.split()
        assert set(before.split()) <= set(after.split())
        code, _, err = await kubectl(corral_binaries, kubeconfig, "create", "namespace", "after-a-restart")
        assert code == 0, err
        with handle.client() as admin:
            assert admin.exists("/api/v1/namespaces/after-a-restart")
            admin.delete("/api/v1/namespaces/after-a-restart")
    assert all(agent.alive() for agent in fleet.list_agents(run_dir))

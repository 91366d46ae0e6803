"""Agents on a real kube-apiserver: register, kubectl through the proxy and the tunnel, refusals, node agents.

The server is the harness of `._harness` (corral's endpoints, dialer and proxy with stand-in token
lookup and registration); the agents are ``corral agent`` processes.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import aiohttp
import pytest

from corral.agent import fleet
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle
from corral.k8s import KubeClient
from corral.model.trace import TunnelClosed, TunnelOpened
from corral.server.connect import encode_params
from corral.server.tunnel_dialer import DialPolicy
from corral.tunnel.testing import wait_until

from ._harness import REGISTRATION_TOKEN, tunnel_server
from .conftest import kubectl, start_cluster_agent, start_node_agent

pytestmark = pytest.mark.timeout(300)


def _address(handle: ClusterHandle) -> str:
    return handle.server.removeprefix("https://")


@pytest.mark.requirement("TUN-004", "TUN-005", "TUN-013")
async def test_a_cluster_agent_registers_and_kubectl_travels_its_tunnel(
    handle: ClusterHandle, run_dir: Path, tmp_path: Path, corral_binaries: build.Built
):
    quick = DialPolicy(wait_polls=1, wait_seconds=0.2)
    async with tunnel_server(handle.name, tmp_path, policy=quick) as server:
        start_cluster_agent(run_dir, server, handle)
        await server.wait_sessions(handle.name)
        params = server.seams.registered[handle.name]
        assert params.address == _address(handle)
        assert "-----BEGIN CERTIFICATE-----" in params.ca_pem
        marker = run_dir / "agents" / f"cluster-agent-{handle.name}-0" / "connected"
        await wait_until(marker.exists, "the agent's connected marker")
        kubeconfig = server.kubeconfig(tmp_path / "proxy.kubeconfig")
        code, out, err = await kubectl(corral_binaries, kubeconfig, "get", "namespaces", "-o", "name")
        assert code == 0, err
        assert "namespace/default" in out.split()
        code, _, err = await kubectl(corral_binaries, kubeconfig, "create", "namespace", "through-the-tunnel")
        assert code == 0, err
        with handle.client() as admin:
            assert admin.exists("/api/v1/namespaces/through-the-tunnel")
            admin.delete("/api/v1/namespaces/through-the-tunnel")

        fleet.fault(run_dir, "stop", cluster=handle.name)
        await wait_until(lambda: not server.endpoints.manager.has_session(handle.name), "the session's end")
        code, _, err = await kubectl(corral_binaries, kubeconfig, "get", "namespaces")
        assert code != 0
        assert "cluster agent disconnected" in err
        kinds = [
            (type(e), getattr(e, "agent", ""))
            for e in server.events
            if isinstance(e, TunnelOpened | TunnelClosed)
        ]
        assert kinds == [(TunnelOpened, "cluster-agent"), (TunnelClosed, "cluster-agent")]


@pytest.mark.requirement("TUN-006")
async def test_a_wrong_ca_checksum_stops_the_agent_with_a_clear_message(
    handle: ClusterHandle, run_dir: Path, tmp_path: Path
):
    async with tunnel_server(handle.name, tmp_path) as server:
        agent = start_cluster_agent(run_dir, server, handle, checksum="ab" * 32)
        await wait_until(lambda: not agent.alive(), "the agent's exit", timeout_seconds=60)
        log = await asyncio.to_thread(Path(agent.log).read_text)
        assert f"does not match given --ca-checksum ({'ab' * 32})" in log
        assert server.checksum in log
        assert REGISTRATION_TOKEN not in log
        assert not server.endpoints.manager.client_keys()


@pytest.mark.requirement("TUN-001", "TUN-002", "TUN-003")
async def test_handshakes_without_a_token_with_an_unknown_one_or_bad_params_are_refused(
    handle: ClusterHandle, tmp_path: Path
):
    async with tunnel_server(handle.name, tmp_path) as server:
        ssl_context = __import__("ssl").create_default_context(cadata=server.ca_pem.decode())
        good = encode_params({"cluster": {"address": "10.43.0.1:443", "token": "t", "caCert": "Y2E="}})
        cases = [
            ({}, 401, "failed authentication"),
            ({"X-API-Tunnel-Token": "nope", "X-API-Tunnel-Params": good}, 400, "cluster not found"),
            ({"X-API-Tunnel-Token": REGISTRATION_TOKEN, "X-API-Tunnel-Params": "%%"}, 400, "illegal base64"),
            (
                {"X-API-Tunnel-Token": REGISTRATION_TOKEN, "X-API-Tunnel-Params": encode_params({})},
                400,
                "missing node or cluster registration info",
            ),
        ]
        async with aiohttp.ClientSession() as http:
            for headers, status, text in cases:
                for path in ("/v3/connect", "/v3/connect/register"):
                    async with http.get(server.url + path, headers=headers, ssl=ssl_context) as response:
                        assert response.status == status
                        assert text in await response.text()


@pytest.mark.requirement("NODE-001", "NODE-002")
async def test_a_node_agent_keeps_its_node_ready_and_serves_without_the_cluster_agent(
    handle: ClusterHandle, run_dir: Path, tmp_path: Path, corral_binaries: build.Built
):
    node = handle.nodes[0] if handle.nodes else None
    if node is None:
        with KubeClient(handle.admin_config()) as admin:
            node = admin.list("/api/v1/nodes")["items"][0]["metadata"]["name"]
    async with tunnel_server(handle.name, tmp_path) as server:
        # The node agent needs the cluster's API endpoint to rewrite: register it as a cluster agent would.
        start_cluster_agent(run_dir, server, handle)
        await server.wait_sessions(handle.name)
        fleet.fault(run_dir, "stop", cluster=handle.name)
        start_node_agent(run_dir, server, handle, node)
        await server.wait_sessions(f"{handle.name}:{node}")
        assert not server.endpoints.manager.has_session(handle.name)
        kubeconfig = server.kubeconfig(tmp_path / "proxy.kubeconfig")
        code, out, err = await kubectl(corral_binaries, kubeconfig, "get", "nodes", "--no-headers")
        assert code == 0, err
        line = next(line for line in out.splitlines() if line.split()[0] == node)
        assert line.split()[1] == "Ready"
        with handle.client() as admin:
            lease = admin.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
        assert lease["spec"]["holderIdentity"] == node
        assert server.seams.registered[handle.name].address == _address(handle)


@pytest.mark.requirement("TUN-009")
async def test_a_go_remotedialer_client_connects_to_corral_s_connect_and_carries_kube_api_traffic(
    handle: ClusterHandle, tmp_path: Path, corral_binaries: build.Built
):
    built = build.ensure_built(["remotedialer-client"])
    with handle.client() as admin:
        secrets = admin.list("/api/v1/namespaces/cattle-system/secrets")["items"]
    token = next(
        base64.b64decode(s["data"]["token"]).decode()
        for s in secrets
        if s.get("type") == "kubernetes.io/service-account-token" and (s.get("data") or {}).get("token")
    )
    ca_b64 = base64.b64encode(handle.ca_pem or b"").decode()
    params = encode_params({"cluster": {"address": _address(handle), "token": token, "caCert": ca_b64}})
    async with tunnel_server(handle.name, tmp_path) as server:
        ca_file = tmp_path / "server-ca.pem"
        ca_file.write_bytes(server.ca_pem)
        process = await asyncio.create_subprocess_exec(
            str(built["remotedialer-client"]),
            "-connect",
            server.url.replace("https", "wss") + "/v3/connect/register",
            "-header",
            f"X-API-Tunnel-Token: {REGISTRATION_TOKEN}",
            "-header",
            f"X-API-Tunnel-Params: {params}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "SSL_CERT_FILE": str(ca_file)},
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line.decode().startswith("connected "), line
            await server.wait_sessions(handle.name)
            kubeconfig = server.kubeconfig(tmp_path / "proxy.kubeconfig")
            code, out, err = await kubectl(corral_binaries, kubeconfig, "get", "namespaces", "-o", "name")
            assert code == 0, err
            assert "namespace/kube-system" in out.split()
        finally:
            process.kill()
            await process.wait()

"""A Go remotedialer server dialing a real kube-apiserver through a corral agent's tunnel session.

rd-server (rancher/remotedialer's server, built by corral) forwards a local TCP port through the
session of one client key to the apiserver's address; the client is corral's agent end of the
tunnel with the cluster agent's connect policy. kubectl, pointed at the forwarder, must see what it
sees on the apiserver directly: TLS end to end through the tunnel, the same version and the same
namespaces, and a write through the tunnel that the apiserver keeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from corral.agent.loop import rancher_connect_authorizer
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle
from corral.tunnel.websocket import TunnelClient

from .conftest import kubectl

pytestmark = pytest.mark.timeout(180)

CLIENT_KEY = "c-interop"


@asynccontextmanager
async def go_server_forwarding(target: str) -> AsyncIterator[tuple[str, str]]:
    """rd-server with one forwarder to ``target`` through ``CLIENT_KEY``; yields (connect URL, forwarder)."""
    built = build.ensure_built(["remotedialer-server"])
    process = await asyncio.create_subprocess_exec(
        str(built["remotedialer-server"]),
        "-listen",
        "127.0.0.1:0",
        "-allow",
        CLIENT_KEY,
        "-forward",
        f"127.0.0.1:0={CLIENT_KEY}/{target}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        forward = listen = ""
        async with asyncio.timeout(30):
            while not listen:
                line = (await process.stdout.readline()).decode()
                assert line, "rd-server exited before it listened"
                if line.startswith("forwarding "):
                    forward = line.split()[1]
                elif line.startswith("listening "):
                    listen = line.split()[1]
        assert forward, "rd-server printed no forwarder"
        yield f"ws://{listen}/connect", forward
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _wait_for_client(connect_url: str) -> None:
    """Until rd-server lists the session of ``CLIENT_KEY`` (/clients, polled 50 ms apart, 30 s at most)."""
    clients_url = connect_url.replace("ws://", "http://").removesuffix("/connect") + "/clients"
    seen: list[str] = []
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while CLIENT_KEY not in seen:
            async with http.get(clients_url) as response:
                response.raise_for_status()
                seen = json.loads(await response.text())
            if CLIENT_KEY not in seen:
                await asyncio.sleep(0.05)


async def _kubectl_json(binaries: build.Built, kubeconfig: Path, *args: str) -> object:
    code, out, err = await kubectl(binaries, kubeconfig, *args)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.requirement("TUN-009")
async def test_a_go_remotedialer_server_reaches_a_real_apiserver_through_a_corral_agent(
    handle: ClusterHandle, corral_binaries: build.Built
):
    address = urlsplit(handle.server)
    assert address.hostname is not None
    async with go_server_forwarding(address.netloc) as (connect_url, forward):
        client = TunnelClient(
            connect_url, headers={"X-Tunnel-ID": CLIENT_KEY}, connect_authorizer=rancher_connect_authorizer
        )
        async with client:
            through = ("--server", f"https://{forward}", "--tls-server-name", address.hostname)
            await _wait_for_client(connect_url)
            for args in (("get", "--raw", "/version"), ("get", "namespaces", "-o", "json")):
                direct = await _kubectl_json(corral_binaries, handle.kubeconfig, *args)
                tunnelled = await _kubectl_json(corral_binaries, handle.kubeconfig, *through, *args)
                if args[1] == "namespaces":
                    assert isinstance(direct, dict)
                    assert isinstance(tunnelled, dict)
                    direct = sorted(item["metadata"]["name"] for item in direct["items"])
                    tunnelled = sorted(item["metadata"]["name"] for item in tunnelled["items"])
                    assert "kube-system" in direct
                assert tunnelled == direct
            code, _, err = await kubectl(
                corral_binaries, handle.kubeconfig, *through, "create", "namespace", "via-go-remotedialer"
            )
            assert code == 0, err
            namespaces = await _kubectl_json(
                corral_binaries, handle.kubeconfig, "get", "namespaces", "-o", "json"
            )
            assert isinstance(namespaces, dict)
            assert "via-go-remotedialer" in {item["metadata"]["name"] for item in namespaces["items"]}
            # Waited for until it is gone: the session's next tests share this cluster, and a namespace
            # still terminating would be in their etcd snapshot and come back with a restore.
            code, _, err = await kubectl(
                corral_binaries,
                handle.kubeconfig,
                "delete",
                "namespace",
                "via-go-remotedialer",
                "--timeout=120s",
            )
            assert code == 0, err
            assert client.session.frames_received > 0

"""kubectl through the proxy and a cluster agent's tunnel, end to end: a held watch, 100 MB, 200 streams.

One topology for the module: corral's endpoints, tunnel dialer and proxy (`._harness`) and one
``corral agent --cluster`` process. A ``kubectl get --watch`` starts first and is checked last, so it
is held while the other tests run and at least ``CORRAL_WATCH_HOLD_SECONDS`` (75 s by default; set
it to 300 or more for the long version). A 100 MB list travels the tunnel while the resident memory
of the server (this process) and of the agent is measured, and 200 watches are held at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest
import pytest_asyncio

from corral.agent import fleet
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.server.cattle import ensure_cattle_credential

from ._harness import REGISTRATION_TOKEN, USER_TOKEN, TunnelServer, grant_user, tunnel_server

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

NAMESPACE = "tunnel-streams"
HOLD_SECONDS = float(os.environ.get("CORRAL_WATCH_HOLD_SECONDS", "75"))
DOWNLOAD_BYTES = 100 * 1000 * 1000
OBJECT_BYTES = 1000 * 1000
"""Each ConfigMap's data (under the 1 MiB object limit); 100 of them make the download."""
MEMORY_BOUND_BYTES = 48 * 1024 * 1024
"""Growth of a hop's resident memory while the 100 MB pass through it: under half of the download."""
STREAMS = 200


@dataclass
class Topology:
    handle: ClusterHandle
    server: TunnelServer
    agent: psutil.Process
    kubeconfig: Path
    kubectl: Path
    watch: asyncio.subprocess.Process
    watch_started: float
    folder: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def topology(
    cluster_set: ClusterSet, corral_binaries: build.Built, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Topology]:
    handle = next(iter(cluster_set))
    with handle.client() as admin:
        ensure_cattle_credential(admin)
        admin.apply(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
    grant_user(handle)
    folder = tmp_path_factory.mktemp("streams")
    run_dir = folder / "run"
    run_dir.mkdir()
    try:
        async with tunnel_server(handle.name, folder) as server:
            record = fleet.start_agent(
                run_dir,
                name=f"cluster-agent-{handle.name}-0",
                cluster=handle.name,
                kind="cluster",
                replica=0,
                server=server.url,
                token=REGISTRATION_TOKEN,
                ca_checksum=server.checksum,
                kubeconfig=handle.kubeconfig,
            )
            await server.wait_sessions(handle.name)
            kubeconfig = server.kubeconfig(folder / "proxy.kubeconfig")
            kubectl = corral_binaries["kubectl"]
            watch = await asyncio.create_subprocess_exec(
                str(kubectl),
                f"--kubeconfig={kubeconfig}",
                "get",
                "configmaps",
                "-n",
                NAMESPACE,
                "--watch",
                "-o",
                "name",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                yield Topology(
                    handle,
                    server,
                    psutil.Process(record.pid),
                    kubeconfig,
                    kubectl,
                    watch,
                    time.monotonic(),
                    folder,
                )
            finally:
                if watch.returncode is None:
                    watch.kill()
                await watch.wait()
                # the agent goes first: its session's end ends every stream the proxy still relays
                await asyncio.to_thread(fleet.stop_all, run_dir)
    finally:
        fleet.stop_all(run_dir)
        with handle.client() as admin:
            admin.delete(f"/api/v1/namespaces/{NAMESPACE}")


def _tree_rss(process: psutil.Process) -> int:
    """Resident bytes of an agent and its children (the agent may run under a wrapper)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        total += child.memory_info().rss
    return total


@pytest.mark.requirement("TUN-011")
async def test_a_100_mb_list_travels_the_tunnel_with_bounded_memory_on_every_hop(topology: Topology):
    payload = "x" * OBJECT_BYTES

    def fill() -> None:
        with topology.handle.client() as admin:
            for index in range(DOWNLOAD_BYTES // OBJECT_BYTES):
                admin.apply(
                    f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": f"big-{index:03d}", "labels": {"corral-test": "big"}},
                        "data": {"payload": payload},
                    },
                )

    await asyncio.to_thread(fill)
    server_process = psutil.Process()
    server_before, agent_before = server_process.memory_info().rss, _tree_rss(topology.agent)
    out = topology.folder / "list.json"
    with out.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(topology.kubectl),
            f"--kubeconfig={topology.kubeconfig}",
            "get",
            "--raw",
            f"/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector=corral-test%3Dbig",
            stdout=sink,
            stderr=asyncio.subprocess.PIPE,
        )
        peaks = [0, 0]
        while process.returncode is None:
            peaks[0] = max(peaks[0], server_process.memory_info().rss)
            peaks[1] = max(peaks[1], _tree_rss(topology.agent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.05)
        err = await process.stderr.read() if process.stderr else b""
    assert process.returncode == 0, err.decode()
    size = out.stat().st_size
    assert size >= DOWNLOAD_BYTES
    listed = json.loads(out.read_bytes())
    assert len(listed["items"]) == DOWNLOAD_BYTES // OBJECT_BYTES
    assert all(item["data"]["payload"] == "x" * OBJECT_BYTES for item in listed["items"])
    server_growth, agent_growth = peaks[0] - server_before, peaks[1] - agent_before
    report = (
        f"{size} bytes; server RSS {server_before >> 20} -> peak {peaks[0] >> 20} MiB,"
        f" agent RSS {agent_before >> 20} -> peak {peaks[1] >> 20} MiB"
    )
    print(report)
    assert server_growth < MEMORY_BOUND_BYTES, report
    assert agent_growth < MEMORY_BOUND_BYTES, report


@pytest.mark.requirement("TUN-011")
async def test_200_watches_are_held_at_once_through_the_tunnel(topology: Topology):
    server = topology.server
    context = ssl.create_default_context(cadata=server.ca_pem.decode())
    base = f"{server.url}/k8s/clusters/{topology.handle.name}/api/v1/namespaces/{NAMESPACE}/configmaps"
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    name = f"ping-{uuid.uuid4().hex[:8]}"
    opened = asyncio.Event()
    ready = 0

    async def watch(http: aiohttp.ClientSession) -> bool:
        nonlocal ready
        query = {"watch": "1", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": "120"}
        async with http.get(base, params=query, headers=headers) as response:
            assert response.status == 200
            ready += 1
            if ready == STREAMS:
                opened.set()
            async for line in response.content:
                event = json.loads(line)
                if event["type"] == "ADDED" and event["object"]["metadata"]["name"] == name:
                    return True
        return False

    connector = aiohttp.TCPConnector(ssl=context, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        watches = [asyncio.ensure_future(watch(http)) for _ in range(STREAMS)]
        try:
            await asyncio.wait_for(opened.wait(), 120)
            session = server.endpoints.manager.first(topology.handle.name)
            assert len(session.conns) >= STREAMS, "each watch holds its own connection in the tunnel"
            with topology.handle.client() as admin:
                admin.apply(
                    f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}},
                )
            results = await asyncio.wait_for(asyncio.gather(*watches), 120)
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
    assert results == [True] * STREAMS


@pytest.mark.requirement("TUN-011")
async def test_a_kubectl_watch_held_through_the_module_sees_an_object_made_at_its_end(topology: Topology):
    remaining = HOLD_SECONDS - (time.monotonic() - topology.watch_started)
    if remaining > 0:
        await asyncio.sleep(remaining)  # the hold is what this test is about
    assert topology.watch.returncode is None, "kubectl's watch ended early"
    name = f"end-of-hold-{uuid.uuid4().hex[:8]}"
    with topology.handle.client() as admin:
        admin.apply(
            f"/api/v1/namespaces/{NAMESPACE}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}},
        )
    assert topology.watch.stdout is not None
    seen: list[str] = []

    async def until_seen() -> None:
        assert topology.watch.stdout is not None
        while True:
            line = (await topology.watch.stdout.readline()).decode().strip()
            if not line:
                raise AssertionError(f"kubectl's watch ended; it printed {seen[-5:]}")
            seen.append(line)
            if line == f"configmap/{name}":
                return

    try:
        await asyncio.wait_for(until_seen(), 60)
    except TimeoutError:
        raise AssertionError(f"kubectl's watch did not show {name}; its last lines: {seen[-5:]}") from None
    held = time.monotonic() - topology.watch_started
    print(f"kubectl's watch held {held:.0f} s through the tunnel; {len(seen)} lines")

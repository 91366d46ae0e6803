"""Node stats on real kube-apiservers, split as Rancher splits them.

The cluster agent (a ``corral agent --cluster`` process) writes each downstream node's pod requests and
limits into its annotations; a node agent fills its virtual node's capacity and node info as a kubelet
would; the cluster controller of the server keeps a ``management.cattle.io/v3`` Node per downstream node
in the cluster's namespace upstream and sums them into the Cluster's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conformance.server.test_cluster_controllers import install_management
from corral.controlplane.clusters import ClusterSet
from corral.errors import AlreadyExistsError
from corral.k8s import wait_for
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.quantity import parse_quantity
from corral.server.cattle import ensure_cattle_credential
from corral.server.controllers import ClusterControllers
from corral.server.registration import register_cluster

from ._harness import tunnel_server
from .conftest import start_cluster_agent, start_node_agent

pytestmark = pytest.mark.timeout(240)

MGMT = "/apis/management.cattle.io/v3"
CLUSTER_ID = "c-nst01"
REQUESTS = "management.cattle.io/pod-requests"
T = TypeVar("T")


async def eventually(predicate: Callable[[], T], *, what: str, timeout_seconds: float = 60) -> T:
    return await asyncio.to_thread(wait_for, predicate, timeout_seconds=timeout_seconds, what=what)


def _pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "c",
                    "image": "corral.invalid/none:0",
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "64Mi"},
                    },
                }
            ],
        },
    }


@pytest.mark.requirement("SRV-030", "NODE-007")
async def test_agent_reports_become_management_nodes_and_cluster_sums(
    cluster_set: ClusterSet, run_dir: Path, tmp_path: Path
) -> None:
    upstream_handle, downstream = cluster_set["c-au"], cluster_set["c-us"]
    node = downstream.nodes[0]
    pod = f"stats-{uuid.uuid4().hex[:6]}"
    with downstream.client() as admin, upstream_handle.client() as upstream:
        token = ensure_cattle_credential(admin)
        install_management(upstream)
        upstream.apply(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CLUSTER_ID}}
        )
        with contextlib.suppress(AlreadyExistsError):
            upstream.create(
                f"{MGMT}/clusters",
                {
                    "apiVersion": "management.cattle.io/v3",
                    "kind": "Cluster",
                    "metadata": {"name": CLUSTER_ID},
                    "spec": {"displayName": downstream.name},
                },
            )
        admin.create("/api/v1/namespaces/default/pods", _pod(pod, node))
        try:
            async with tunnel_server(downstream.name, tmp_path) as server:
                start_cluster_agent(run_dir, server, downstream)
                start_node_agent(run_dir, server, downstream, node)

                # The cluster agent's report: the pod's figures on its node.
                def annotated() -> dict[str, str] | None:
                    text = admin.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations", {}).get(REQUESTS)
                    figures = json.loads(text) if text else {}
                    return figures if figures.get("pods") else None

                figures = await eventually(annotated, what="the node's pod-requests annotation")
                assert parse_quantity(figures["cpu"]).value >= parse_quantity("250m").value
                # The node agent's report: what a kubelet would post.
                status = await eventually(
                    lambda: admin.get(f"/api/v1/nodes/{node}")["status"].get("capacity") or None,
                    what="the virtual node's capacity",
                )
                assert parse_quantity(status["memory"]).value > 0

                async with AsyncKubeClient(upstream.config) as client:
                    await register_cluster(
                        client,
                        CLUSTER_ID,
                        address=downstream.server.removeprefix("https://"),
                        sa_token=token,
                        ca_cert_pem=downstream.ca_pem or b"",
                    )
                    controllers = ClusterControllers(client, status_interval_seconds=0.5)
                    await controllers.start()
                    try:

                        def machines() -> list[dict[str, Any]] | None:
                            items = upstream.list(f"{MGMT}/namespaces/{CLUSTER_ID}/nodes")["items"]
                            mine = [m for m in items if m.get("status", {}).get("nodeName") == node]
                            return (
                                items if mine and mine[0]["status"].get("requested", {}).get("pods") else None
                            )

                        items = await eventually(machines, what="the cluster's management Nodes")
                        assert sorted(m["status"]["nodeName"] for m in items) == sorted(downstream.nodes)
                        mine = next(m for m in items if m["status"]["nodeName"] == node)
                        assert mine["metadata"]["name"].startswith("machine-")
                        assert mine["metadata"]["labels"]["management.cattle.io/nodename"] == node
                        assert mine["status"]["requested"] == figures
                        assert mine["status"]["internalNodeStatus"]["capacity"]["memory"] == status["memory"]
                        assert mine["status"]["internalNodeStatus"]["nodeInfo"]["kubeletVersion"].startswith(
                            "v1."
                        )
                        assert any(c["type"] == "Registered" for c in mine["status"]["conditions"])

                        def summed() -> dict[str, Any] | None:
                            got = upstream.get(f"{MGMT}/clusters/{CLUSTER_ID}").get("status", {})
                            return got if got.get("requested", {}).get("pods", "0") != "0" else None

                        cluster = await eventually(summed, what="the Cluster's sums")
                        assert cluster["nodeCount"] == len(downstream.nodes)
                        assert set(cluster["allocatable"]) == {"cpu", "memory", "pods"}
                        assert (
                            parse_quantity(cluster["allocatable"]["memory"]).value
                            >= parse_quantity(status["memory"]).value
                        )
                        assert (
                            parse_quantity(cluster["requested"]["cpu"]).value >= parse_quantity("250m").value
                        )
                        assert parse_quantity(cluster["limits"]["cpu"]).value >= parse_quantity("500m").value
                    finally:
                        await controllers.stop()
        finally:
            admin.delete(f"/api/v1/namespaces/default/pods/{pod}", missing_ok=True)
            upstream.delete(f"{MGMT}/clusters/{CLUSTER_ID}", missing_ok=True)

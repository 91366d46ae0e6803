"""The agents on real nodes, deployed as Rancher deploys them, checked with the real kubectl.

``corral up`` of the real-nodes topology (shared with the proxy's tests) applies the agents'
manifest: the ``cattle-cluster-agent`` Deployment (two replicas: the cluster has two nodes) and, the
cluster being ``rke1``, the ``cattle-node-agent`` DaemonSet on the host network. Their Pods reach the
server where the nodes reach the host, hold the tunnel sessions the trace records, report node
stats into the management Nodes, and a deleted replica is replaced and reconnects.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conformance.real_topology import CLUSTER, RealTopology, wait_until
from corral.k8s import KubeClient, KubeConfig

pytestmark = [pytest.mark.local_only, pytest.mark.real_nodes, pytest.mark.timeout(600)]

MGMT = "/apis/management.cattle.io/v3"
T = TypeVar("T")


def _kubectl(topology: RealTopology, *args: str, output: bool = True) -> Any:
    kubeconfig = topology.doc["clusters"][CLUSTER]["admin_kubeconfig"]
    done = subprocess.run(
        [str(topology.kubectl), "--kubeconfig", kubeconfig, *args, *(("-o", "json") if output else ())],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if output else None


def _opened(topology: RealTopology) -> list[dict[str, Any]]:
    cluster_id = topology.doc["clusters"][CLUSTER]["id"]
    lines = Path(topology.doc["server"]["trace_file"]).read_text().splitlines()
    events = [json.loads(line) for line in lines if '"TunnelOpened"' in line]
    return [e for e in events if e.get("cluster") == cluster_id]


@pytest.mark.requirement("TUN-019", "NODE-008")
def test_the_agents_run_as_rancher_deploys_them(real_topology: RealTopology) -> None:
    deployment = _kubectl(real_topology, "-n", "cattle-system", "get", "deployment", "cattle-cluster-agent")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"]["readyReplicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cattle"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["CATTLE_SERVER"].startswith("https://10.")
    assert len(env["CATTLE_CA_CHECKSUM"]) == 64
    assert "CATTLE_TOKEN" not in env  # the token comes from the mounted Secret only
    daemonset = _kubectl(real_topology, "-n", "cattle-system", "get", "daemonset", "cattle-node-agent")
    assert daemonset["spec"]["template"]["spec"]["hostNetwork"] is True
    assert daemonset["status"]["numberReady"] == daemonset["status"]["desiredNumberScheduled"] == 2
    binding = _kubectl(real_topology, "get", "clusterrolebinding", "cattle-admin-binding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cattle", "namespace": "cattle-system"}]
    # No agent process was started on the host: the agents are these Pods.
    assert not (Path(real_topology.doc["server"]["trace_file"]).parent / "agents.json").exists()
    opened = wait_until(
        lambda: (
            (o := _opened(real_topology))
            and sum(e["agent"] == "cluster-agent" for e in o) >= 2
            and {e["agent"] for e in o} >= {"node-agent/c-real-cp", "node-agent/c-real-w1"}
            and o
        ),
        timeout=60,
        what="the agents' sessions in the trace",
    )
    assert opened


@pytest.mark.requirement("SRV-030")
def test_the_real_nodes_stats_reach_the_management_nodes(real_topology: RealTopology) -> None:
    cluster_id = real_topology.doc["clusters"][CLUSTER]["id"]
    with KubeClient(KubeConfig.load(real_topology.doc["upstream"]["admin_kubeconfig"])) as upstream:

        def synced() -> list[dict[str, Any]] | None:
            items = upstream.list(f"{MGMT}/namespaces/{cluster_id}/nodes")["items"]
            return items if len(items) == 2 and all(m["status"].get("requested") for m in items) else None

        machines = wait_until(synced, timeout=60, what="the management Nodes with the agents' pod figures")
        assert sorted(m["status"]["nodeName"] for m in machines) == ["c-real-cp", "c-real-w1"]
        for machine in machines:
            assert machine["status"]["internalNodeStatus"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
        status = wait_until(
            lambda: (s := upstream.get(f"{MGMT}/clusters/{cluster_id}")["status"]).get("allocatable") and s,
            timeout=60,
            what="the Cluster's sums",
        )
        assert status["allocatable"]["pods"] != "0"


@pytest.mark.requirement("TUN-019")
def test_a_deleted_cluster_agent_pod_is_replaced_and_reconnects(real_topology: RealTopology) -> None:
    before = sum(e["agent"] == "cluster-agent" for e in _opened(real_topology))
    pods = _kubectl(real_topology, "-n", "cattle-system", "get", "pods", "-l", "app=cattle-cluster-agent")
    victim = pods["items"][0]["metadata"]["name"]
    _kubectl(real_topology, "-n", "cattle-system", "delete", "pod", victim, "--wait=false", output=False)
    wait_until(
        lambda: sum(e["agent"] == "cluster-agent" for e in _opened(real_topology)) > before,
        timeout=90,
        what="the replacement replica's session",
    )
    # The user's kubectl goes on working through the proxy meanwhile and after.
    listed = real_topology.as_user("-n", "team-a", "get", "pods")
    assert listed.returncode == 0, listed.stderr

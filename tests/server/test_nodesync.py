"""Management Nodes from downstream Nodes, and the Cluster's sums, as Rancher's server computes them."""

from __future__ import annotations

import json
from typing import Any

from corral.server.nodesync import cluster_stats, management_node, same_node


def downstream(name: str, *, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/os": "linux", **(labels or {})},
            "annotations": {
                "management.cattle.io/pod-requests": json.dumps(
                    {"cpu": "250m", "memory": "64Mi", "pods": "2"}
                ),
                "management.cattle.io/pod-limits": json.dumps({"cpu": "500m"}),
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "1900m", "memory": "3Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "v1.31.0"},
            "images": [{"names": ["pause"]}],
            "volumesInUse": ["x"],
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": "2026-11-29T14:00:00Z",
                    "lastTransitionTime": "2026-11-29T13:00:00Z",
                },
            ],
        },
    }
    node.update(extra)
    return node


def test_a_new_management_node_carries_the_nodes_status_roles_and_pod_figures() -> None:
    machine = management_node(
        downstream("n1", labels={"node-role.kubernetes.io/etcd": "true"}), None, cluster="c-1"
    )
    assert machine["apiVersion"] == "management.cattle.io/v3"
    assert machine["kind"] == "Node"
    assert machine["metadata"]["generateName"] == "machine-"
    assert machine["metadata"]["namespace"] == "c-1"
    assert machine["metadata"]["labels"]["management.cattle.io/nodename"] == "n1"
    assert machine["metadata"]["annotations"]["management.cattle.io/nodesyncer"] == "true"
    assert machine["spec"]["requestedHostname"] == "n1"
    assert (machine["spec"]["etcd"], machine["spec"]["controlPlane"], machine["spec"]["worker"]) == (
        True,
        False,
        False,
    )
    status = machine["status"]
    assert status["nodeName"] == "n1"
    internal = status["internalNodeStatus"]
    assert internal["allocatable"] == {"cpu": "1900m", "memory": "3Gi", "pods": "110"}
    assert internal["nodeInfo"]["kubeletVersion"] == "v1.31.0"
    assert "images" not in internal
    assert "volumesInUse" not in internal
    assert [c["type"] for c in internal["conditions"]] == ["Ready"]
    assert status["requested"] == {"cpu": "250m", "memory": "64Mi", "pods": "2"}
    assert status["limits"] == {"cpu": "500m"}
    assert "management.cattle.io/pod-requests" not in status["nodeAnnotations"]
    assert status["nodeAnnotations"]["node.alpha.kubernetes.io/ttl"] == "0"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert ready["lastUpdateTime"] == "2026-11-29 14:00:00 +0000 UTC"
    registered = next(c for c in status["conditions"] if c["type"] == "Registered")
    assert registered == {"type": "Registered", "status": "True", "message": "registered with kubernetes"}


def test_a_node_without_role_labels_is_a_worker_and_control_plane_labels_count() -> None:
    assert management_node(downstream("n"), None, cluster="c")["spec"]["worker"] is True
    control = management_node(
        downstream("n", labels={"node-role.kubernetes.io/control-plane": ""}), None, cluster="c"
    )
    assert control["spec"]["controlPlane"] is True
    assert control["spec"]["worker"] is False


def test_updates_keep_the_existing_name_and_count_changes_as_rancher_compares_them() -> None:
    existing = management_node(downstream("n1"), None, cluster="c")
    existing["metadata"].update(name="machine-abcde", resourceVersion="7")
    again = management_node(downstream("n1"), existing, cluster="c")
    assert again["metadata"]["name"] == "machine-abcde"
    assert again["metadata"]["resourceVersion"] == "7"
    assert same_node(existing, again)
    changed = downstream("n1")
    changed["status"]["allocatable"]["pods"] = "100"
    assert not same_node(existing, management_node(changed, existing, cluster="c"))
    not_ready = downstream("n1")
    not_ready["status"]["conditions"][1]["status"] = "Unknown"
    assert not same_node(existing, management_node(not_ready, existing, cluster="c"))
    # A new heartbeat moves the Ready condition's lastUpdateTime: Rancher writes the object again.
    heartbeat = downstream("n1")
    heartbeat["status"]["conditions"][1]["lastHeartbeatTime"] = "2026-11-29T14:01:00Z"
    rewritten = management_node(heartbeat, existing, cluster="c")
    assert not same_node(existing, rewritten)
    assert (
        rewritten["status"]["internalNodeStatus"]["conditions"][0]["lastHeartbeatTime"]
        == "2026-11-29T14:01:00Z"
    )


def test_cluster_sums_skip_tainted_control_planes_and_cordoned_nodes() -> None:
    tainted = downstream(
        "cp",
        labels={"node-role.kubernetes.io/control-plane": ""},
        spec={"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
    )
    cordoned = downstream("off", spec={"unschedulable": True})
    machines = [
        management_node(n, None, cluster="c") for n in (downstream("a"), downstream("b"), tainted, cordoned)
    ]
    stats = cluster_stats(machines)
    assert stats["nodeCount"] == 4
    assert stats["linuxWorkerCount"] == 2
    assert stats["capacity"] == {"pods": "220", "memory": "8Gi", "cpu": "4"}
    assert stats["allocatable"] == {"pods": "220", "memory": "6Gi", "cpu": "3800m"}
    assert stats["requested"] == {"pods": "4", "memory": "128Mi", "cpu": "500m"}
    assert stats["limits"] == {"pods": "0", "memory": "0", "cpu": "1"}


def test_no_nodes_give_zero_sums() -> None:
    assert cluster_stats([]) == {
        "nodeCount": 0,
        "capacity": {"pods": "0", "memory": "0", "cpu": "0"},
        "allocatable": {"pods": "0", "memory": "0", "cpu": "0"},
        "requested": {"pods": "0", "memory": "0", "cpu": "0"},
        "limits": {"pods": "0", "memory": "0", "cpu": "0"},
    }

"""kube-api-auth's DaemonSet as Rancher deploys it, with a Role that reaches only the ACE objects."""

from __future__ import annotations

from typing import Any

import pytest

from corral.errors import ConfigError
from corral.kubeapiauth.manifests import KubeApiAuthDeployment, kube_api_auth_manifests


def _deployment(**changes: Any) -> KubeApiAuthDeployment:
    values: dict[str, Any] = {
        "cluster": "c-real",
        "image": "corral.local/corral:dev",
        "api_address": "10.200.255.1:6443",
        "trace_file": "/runs/x/trace.jsonl",
        "trace_epoch": 1700000000.5,
    }
    return KubeApiAuthDeployment(**{**values, **changes})


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_the_daemonset_runs_on_control_plane_nodes_on_the_host_network() -> None:
    objects = kube_api_auth_manifests(_deployment())
    assert [o["kind"] for o in objects] == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "DaemonSet"]
    daemonset = _by_kind(objects)["DaemonSet"]
    assert daemonset["metadata"] == {"name": "kube-api-auth", "namespace": "cattle-system"}
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["serviceAccountName"] == "kube-api-auth"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    keys = {term["matchExpressions"][0]["key"] for term in terms}
    assert keys == {"node-role.kubernetes.io/controlplane", "node-role.kubernetes.io/control-plane"}
    assert all(term["matchExpressions"][0]["values"] == ["true"] for term in terms)
    container = pod["containers"][0]
    command = container["command"]
    assert command[:4] == ["python3", "-m", "corral", "kube-api-auth"]
    assert command[command.index("--listen") + 1] == "$(NODE_IP):6440"
    assert command[command.index("--cluster") + 1] == "c-real"
    assert command[command.index("--trace-epoch") + 1] == "1700000000.500000"
    assert "--kubeconfig" not in command  # in-cluster credentials
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert env["KUBERNETES_SERVICE_HOST"]["value"] == "10.200.255.1"
    assert env["KUBERNETES_SERVICE_PORT"]["value"] == "6443"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthcheck", "port": 6440}
    assert pod["volumes"] == [{"name": "trace", "hostPath": {"path": "/runs/x/trace.jsonl", "type": "File"}}]


def test_the_role_reads_only_the_ace_objects_of_cattle_system() -> None:
    objects = _by_kind(kube_api_auth_manifests(_deployment()))
    role = objects["Role"]
    assert role["metadata"]["namespace"] == "cattle-system"
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert set(granted) == {
        ("cluster.cattle.io", "clusterauthtokens"),
        ("cluster.cattle.io", "clusteruserattributes"),
        ("", "secrets"),
        ("", "configmaps"),
    }
    assert all({"get", "list", "watch"} <= verbs for verbs in granted.values())
    assert "patch" in granted[("cluster.cattle.io", "clusterauthtokens")]  # lastUsedAt
    assert granted[("", "configmaps")] == {"get", "list", "watch"}
    assert not any("*" in verbs or "delete" in verbs for verbs in granted.values())
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kube-api-auth",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kube-api-auth", "namespace": "cattle-system"}
    ]


def test_without_a_trace_file_nothing_is_mounted() -> None:
    pod = _by_kind(kube_api_auth_manifests(_deployment(trace_file="", trace_epoch=None)))["DaemonSet"]
    spec = pod["spec"]["template"]["spec"]
    assert spec["volumes"] == []
    assert "--trace" not in spec["containers"][0]["command"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cluster": ""}, "cluster's name"),
        ({"image": ""}, "image"),
        ({"api_address": "10.0.0.1"}, "HOST:PORT"),
        ({"api_address": "10.0.0.1:99999"}, "HOST:PORT"),
        ({"port": 0}, "1-65535"),
        ({"trace_file": "trace.jsonl"}, "absolute"),
    ],
)
def test_bad_input_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _deployment(**changes)

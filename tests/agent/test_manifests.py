"""The agents' manifest for real nodes: Rancher's objects, names and settings."""

from __future__ import annotations

from typing import Any

import pytest

from corral.agent.config import AgentConfigError
from corral.agent.manifests import AgentDeployment, agent_manifests

TOKEN = "s3cr3t-registration-token"


def deployment(**overrides: Any) -> AgentDeployment:
    values: dict[str, Any] = {
        "server": "https://10.0.0.1:8443",
        "token": TOKEN,
        "ca_checksum": "ab" * 32,
        "nodes": 2,
        "image": "corral.local/corral:dev",
        "node_agents": True,
    }
    values.update(overrides)
    return AgentDeployment(**values)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_rancher_s_objects_in_apply_order() -> None:
    objects = agent_manifests(deployment())
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
        "Deployment",
        "DaemonSet",
    ]
    kinds = by_kind(objects)
    binding = kinds["ClusterRoleBinding"]
    assert binding["metadata"]["name"] == "cattle-admin-binding"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cattle", "namespace": "cattle-system"}]
    assert kinds["ClusterRole"]["rules"][0] == {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}


def test_the_token_lives_only_in_the_secret() -> None:
    objects = agent_manifests(deployment())
    secret = by_kind(objects)["Secret"]
    assert secret["metadata"]["name"].startswith("cattle-credentials-")
    assert TOKEN not in secret["metadata"]["name"]
    assert set(secret["data"]) == {"url", "token", "namespace"}
    others = [o for o in objects if o["kind"] != "Secret"]
    assert TOKEN not in repr(others)


def test_the_cluster_agent_deployment() -> None:
    spec = by_kind(agent_manifests(deployment()))["Deployment"]["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "cattle"
    assert "hostNetwork" not in pod
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "Never"
    assert container["command"][:5] == ["python3", "-m", "corral", "agent", "--cluster"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CATTLE_SERVER"] == "https://10.0.0.1:8443"
    assert env["CATTLE_CA_CHECKSUM"] == "ab" * 32
    assert env["CATTLE_CLUSTER"] == "true"
    assert "CATTLE_TOKEN" not in env
    assert container["volumeMounts"][0]["mountPath"] == "/cattle-credentials"


def test_one_replica_on_one_node_and_no_node_agents_for_rke2() -> None:
    objects = agent_manifests(deployment(nodes=1, node_agents=False))
    assert by_kind(objects)["Deployment"]["spec"]["replicas"] == 1
    assert "DaemonSet" not in by_kind(objects)


def test_node_agents_run_on_the_host_network_under_their_node_s_name() -> None:
    pod = by_kind(agent_manifests(deployment()))["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]
    container = pod["containers"][0]
    assert "--node" in container["command"]
    assert "--no-heartbeat" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CATTLE_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["CATTLE_CLUSTER"]["value"] == "false"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server": "http://x"}, "https URL"),
        ({"token": ""}, "registration token"),
        ({"ca_checksum": "ab"}, "sha256"),
        ({"nodes": 0}, "at least one node"),
        ({"api_address": "10.0.0.1"}, "HOST:PORT"),
        ({"api_address": "10.0.0.1:0"}, "HOST:PORT"),
    ],
)
def test_bad_settings_are_refused_precisely(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        deployment(**overrides)


def test_an_api_address_replaces_the_service_s_in_both_workloads() -> None:
    objects = by_kind(agent_manifests(deployment(api_address="10.7.255.1:6443")))
    for kind in ("Deployment", "DaemonSet"):
        container = objects[kind]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KUBERNETES_SERVICE_HOST"] == "10.7.255.1"
        assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    plain = by_kind(agent_manifests(deployment()))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "KUBERNETES_SERVICE_HOST" not in {e["name"] for e in plain["env"]}


def test_every_object_has_a_collection_to_go_to() -> None:
    from corral.run.agents import collection_of

    paths = [collection_of(o) for o in agent_manifests(deployment())]
    assert paths == [
        "/api/v1/namespaces",
        "/api/v1/namespaces/cattle-system/serviceaccounts",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/api/v1/namespaces/cattle-system/secrets",
        "/apis/apps/v1/namespaces/cattle-system/deployments",
        "/apis/apps/v1/namespaces/cattle-system/daemonsets",
    ]


def test_the_api_host_is_the_clusters_server_address(tmp_path: Any) -> None:
    from corral.controlplane.clusters import ClusterHandle
    from corral.errors import ControlPlaneError
    from corral.run.agents import api_host

    handle = ClusterHandle(name="c", server="https://10.7.255.1:6443", ca_pem=None, kubeconfig=tmp_path)
    assert api_host(handle) == "10.7.255.1"
    with pytest.raises(ControlPlaneError, match="no host"):
        api_host(ClusterHandle(name="c", server="https://", ca_pem=None, kubeconfig=tmp_path))

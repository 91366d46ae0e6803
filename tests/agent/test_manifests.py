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
    ],
)
def test_bad_settings_are_refused_precisely(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        deployment(**overrides)

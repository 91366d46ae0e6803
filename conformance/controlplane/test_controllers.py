"""Service accounts and the trimmed kube-controller-manager: tokens, namespaces, aggregated roles."""

from __future__ import annotations

import base64
import functools
import uuid
from typing import Any

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.k8s import KubeClient, KubeConfig, wait_for


def token_client(cluster_set: ClusterSet, cluster_name: str, token: str) -> KubeClient:
    handle = cluster_set[cluster_name]
    return KubeClient(KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=token))


def create_service_account(admin: KubeClient, namespace: str, name: str) -> None:
    admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})


@pytest.mark.requirement("CP-006")
def test_a_tokenrequest_token_authenticates_as_its_service_account(
    cluster_set: ClusterSet, cluster_name: str, admin: KubeClient, namespace: str
) -> None:
    create_service_account(admin, namespace, "robot")
    answer = admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/robot/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    token = answer["status"]["token"]
    with token_client(cluster_set, cluster_name, token) as robot:
        review = robot.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"


@pytest.mark.requirement("CP-006")
def test_a_legacy_service_account_token_secret_is_filled_by_the_controller_manager_and_authenticates(
    cluster_set: ClusterSet, cluster_name: str, admin: KubeClient, namespace: str
) -> None:
    create_service_account(admin, namespace, "legacy")
    admin.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "metadata": {
                "name": "legacy-token",
                "annotations": {"kubernetes.io/service-account.name": "legacy"},
            },
            "type": "kubernetes.io/service-account-token",
        },
    )
    path = f"/api/v1/namespaces/{namespace}/secrets/legacy-token"
    data = wait_for(lambda: admin.get(path).get("data", {}).get("token"), timeout_seconds=30, what=path)
    token = base64.b64decode(data).decode()
    with token_client(cluster_set, cluster_name, token) as legacy:
        assert legacy.can_i("create", "selfsubjectaccessreviews", group="authorization.k8s.io")
        review = legacy.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:legacy"


@pytest.mark.requirement("CP-007")
def test_every_new_namespace_gets_a_default_service_account_and_the_root_ca_configmap(
    admin: KubeClient, namespace: str
) -> None:
    sa = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"
    ca = f"/api/v1/namespaces/{namespace}/configmaps/kube-root-ca.crt"
    wait_for(lambda: admin.exists(sa), timeout_seconds=30, what=sa)
    config_map = wait_for(lambda: admin.get(ca) if admin.exists(ca) else None, timeout_seconds=30, what=ca)
    assert "BEGIN CERTIFICATE" in config_map["data"]["ca.crt"]


@pytest.mark.requirement("CP-007")
def test_deleting_a_namespace_with_content_completes(admin: KubeClient) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
    admin.create(f"/api/v1/namespaces/{name}/configmaps", {"metadata": {"name": "some"}, "data": {"a": "b"}})
    admin.delete(f"/api/v1/namespaces/{name}")
    wait_for(
        lambda: not admin.exists(f"/api/v1/namespaces/{name}"), timeout_seconds=60, what=f"deletion of {name}"
    )


@pytest.mark.requirement("CP-007")
def test_an_owned_object_is_garbage_collected_with_its_owner(admin: KubeClient, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = admin.create(base, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    admin.create(base, {"metadata": {"name": "owned", "ownerReferences": [ref]}})
    admin.delete(f"{base}/owner")
    wait_for(
        lambda: not admin.exists(f"{base}/owned"), timeout_seconds=60, what="garbage collection of owned"
    )


def rules_of(client: KubeClient, path: str) -> list[dict[str, Any]] | None:
    rules = client.get(path).get("rules")
    return list(rules) if rules else None


@pytest.mark.requirement("CP-008")
def test_the_admin_edit_and_view_clusterroles_are_aggregated(admin: KubeClient) -> None:
    for role in ("admin", "edit", "view"):
        path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}"
        rules = wait_for(functools.partial(rules_of, admin, path), timeout_seconds=30, what=path)
        assert any("configmaps" in rule.get("resources", []) for rule in rules), role

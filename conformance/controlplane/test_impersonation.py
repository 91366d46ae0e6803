"""Impersonation: headers work for a principal that holds `impersonate`, and are refused otherwise.

Each principal needs credentials of its own (client certificates the local provider mints); other
providers act as a user by impersonating it with the admin's credentials, which these headers
would replace: `local_only`.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.errors import KubeAPIError
from corral.k8s import KubeClient, wait_for

pytestmark = [pytest.mark.local_only, pytest.mark.requirement("CP-003")]

IMPERSONATOR_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "corral-test-impersonator"},
    "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}],
}


@pytest.fixture
def impersonator_binding(admin: KubeClient) -> str:
    admin.apply("/apis/rbac.authorization.k8s.io/v1/clusterroles", IMPERSONATOR_ROLE)
    admin.apply(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "corral-test-impersonator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "corral-test-impersonator",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "proxy-sa"}],
        },
    )
    for resource in ("users", "groups"):
        wait_for(
            lambda resource=resource: admin.allows("proxy-sa", [], "impersonate", resource),
            timeout_seconds=30,
            what=f"the ClusterRoleBinding to let proxy-sa impersonate {resource}",
        )
    return "proxy-sa"


def whoami(client: KubeClient) -> dict[str, Any]:
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = client.create("/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
    return dict(answer["status"]["userInfo"])


def test_impersonation_headers_act_as_the_named_user_and_groups_for_a_principal_allowed_to_impersonate(
    cluster_set: ClusterSet, cluster_name: str, impersonator_binding: str
) -> None:
    with cluster_set[cluster_name].client(impersonator_binding) as proxy:
        assert whoami(proxy)["username"] == "proxy-sa"
        with proxy.impersonating("alice", ["devs", "team-a"]) as acting:
            identity = whoami(acting)
    assert identity["username"] == "alice"
    assert {"devs", "team-a"} <= set(identity["groups"])
    assert "proxy-sa" not in str(identity.get("groups"))


def test_impersonation_is_forbidden_for_a_principal_without_the_impersonate_verb(
    cluster_set: ClusterSet, cluster_name: str
) -> None:
    with (
        cluster_set[cluster_name].client("mallory") as mallory,
        mallory.impersonating("admin", ["system:masters"]) as acting,
        pytest.raises(KubeAPIError) as refused,
    ):
        acting.get("/api/v1/namespaces")
    assert refused.value.status == 403
    assert "impersonate" in str(refused.value)

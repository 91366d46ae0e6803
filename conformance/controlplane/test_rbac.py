"""RBAC on a local apiserver: a user is denied until a RoleBinding allows it."""

from __future__ import annotations

import pytest

from corral.controlplane.providers import ClusterSet
from corral.errors import KubeAPIError
from corral.k8s import KubeClient
from fixtures.plugin import KubeClients


def subject_access_review(admin: KubeClient, user: str, groups: list[str], namespace: str) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {"verb": "list", "resource": "configmaps", "namespace": namespace},
        },
    }
    answer = admin.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"]["allowed"])


def test_a_user_is_denied_until_a_rolebinding_allows_listing_configmaps(
    cluster_set: ClusterSet, cluster_name: str, admin: KubeClient, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    with cluster_set[cluster_name].client("carol", ["qa"]) as carol:
        assert not subject_access_review(admin, "carol", ["qa"], namespace)
        with pytest.raises(KubeAPIError) as denied:
            carol.get(path)
        assert denied.value.status == 403

        admin.create(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            {
                "metadata": {"name": "carol-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}],
            },
        )
        assert subject_access_review(admin, "carol", ["qa"], namespace)
        assert carol.get(path)["kind"] == "ConfigMapList"


def test_a_group_binding_allows_every_member_and_no_one_else(
    kube: KubeClients, cluster_name: str, admin: KubeClient, namespace: str
) -> None:
    admin.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": "devs-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}],
        },
    )
    dave = kube.as_user(cluster_name, "dave", ["devs"])
    erin = kube.as_user(cluster_name, "erin", ["ops"])
    assert dave.can_i("list", "configmaps", namespace=namespace)
    assert not erin.can_i("list", "configmaps", namespace=namespace)
    assert kube.admin(cluster_name).can_i("delete", "namespaces")

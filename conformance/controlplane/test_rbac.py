"""RBAC on a local apiserver: a user is denied until a RoleBinding allows it."""

from __future__ import annotations

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.errors import KubeAPIError
from corral.k8s import KubeClient, wait_for
from corral.pytest_plugin import KubeClients

pytestmark = pytest.mark.requirement("CP-002")


def bind_view(admin: KubeClient, namespace: str, name: str, kind: str, subject: str) -> None:
    """Bind the built-in `view` ClusterRole in a namespace to one User or Group."""
    admin.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
        },
    )


def wait_until_allowed(admin: KubeClient, user: str, groups: list[str], namespace: str) -> None:
    """RBAC authorizes from informer caches: a new binding takes effect a moment after it is created."""
    wait_for(
        lambda: admin.allows(user, groups, "list", "configmaps", namespace=namespace),
        timeout_seconds=30,
        what=f"a RoleBinding to let {user} list configmaps in {namespace}",
    )


def test_a_user_is_denied_until_a_rolebinding_allows_listing_configmaps(
    cluster_set: ClusterSet, cluster_name: str, admin: KubeClient, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    with cluster_set[cluster_name].client("carol", ["qa"]) as carol:
        assert not admin.allows("carol", ["qa"], "list", "configmaps", namespace=namespace)
        with pytest.raises(KubeAPIError) as denied:
            carol.get(path)
        assert denied.value.status == 403

        bind_view(admin, namespace, "carol-view", "User", "carol")
        wait_until_allowed(admin, "carol", ["qa"], namespace)
        assert carol.get(path)["kind"] == "ConfigMapList"


def test_a_group_binding_allows_every_member_and_no_one_else(
    kube: KubeClients, cluster_name: str, admin: KubeClient, namespace: str
) -> None:
    bind_view(admin, namespace, "devs-view", "Group", "devs")
    wait_until_allowed(admin, "dave", ["devs"], namespace)
    dave = kube.as_user(cluster_name, "dave", ["devs"])
    erin = kube.as_user(cluster_name, "erin", ["ops"])
    assert dave.can_i("list", "configmaps", namespace=namespace)
    assert not erin.can_i("list", "configmaps", namespace=namespace)
    assert kube.admin(cluster_name).can_i("delete", "namespaces")

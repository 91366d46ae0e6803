"""The cluster controllers on real kube-apiservers: one is the upstream (management CRDs), one downstream.

The downstream cluster is registered as an agent would register it (the ``cattle`` credential, its
endpoint and CA), then role-template bindings written upstream become Rancher's bindings downstream,
a user's impersonation account appears with their first binding and goes with their last, project
namespaces get their label, and the cluster's status carries its nodes, namespaces and version.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from corral.auth.identity import AUTHENTICATED_GROUPS
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.errors import AlreadyExistsError
from corral.k8s import KubeClient, KubeConfig, wait_for
from corral.k8s.aio import AsyncKubeClient
from corral.model.trace import Event, ImpersonationAccountEnsured
from corral.server.cattle import ensure_cattle_credential
from corral.server.controllers import ClusterControllers
from corral.server.crds import crds
from corral.server.registration import register_cluster
from corral.server.roletemplates import BUILTIN, role_template

pytestmark = pytest.mark.asyncio(loop_scope="module")

MGMT = "/apis/management.cattle.io/v3"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
CLUSTER_ID = "c-ctl01"
T = TypeVar("T")


@dataclass
class World:
    upstream: KubeClient
    downstream: ClusterHandle
    controllers: ClusterControllers
    events: list[Event]


def install_management(upstream: KubeClient) -> None:
    for manifest in crds():
        upstream.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", manifest)
    for manifest in crds():
        name = manifest["metadata"]["name"]
        wait_for(
            lambda name=name: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in upstream.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                .get("status", {})
                .get("conditions", [])
            ),
            timeout_seconds=30,
            what=f"CRD {name}",
        )
    for spec in BUILTIN:
        upstream.apply(f"{MGMT}/roletemplates", role_template(spec))
    upstream.apply(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CLUSTER_ID}}
    )


def new_user(upstream: KubeClient, *groups: str) -> str:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    upstream.create(
        f"{MGMT}/users",
        {
            "apiVersion": "management.cattle.io/v3",
            "kind": "User",
            "metadata": {"name": user_id},
            "username": user_id,
            "displayName": "Test",
            "principalIds": [f"local://{user_id}"],
        },
    )
    upstream.create(
        f"{MGMT}/userattributes",
        {
            "apiVersion": "management.cattle.io/v3",
            "kind": "UserAttribute",
            "metadata": {"name": user_id},
            "UserName": user_id,
            "GroupPrincipals": {"local": {"items": [{"metadata": {"name": f"local://{g}"}} for g in groups]}},
            "ExtraByProvider": {"local": {"principalid": [f"local://{user_id}"], "username": [user_id]}},
        },
    )
    return user_id


@pytest.fixture(scope="module")
def upstream(cluster_set: ClusterSet) -> Iterator[KubeClient]:
    with cluster_set["c-au"].client() as client:
        install_management(client)
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(cluster_set: ClusterSet, upstream: KubeClient) -> AsyncIterator[World]:
    downstream = cluster_set["c-us"]
    with downstream.client() as admin:
        token = ensure_cattle_credential(admin)
    with contextlib.suppress(AlreadyExistsError):
        upstream.create(
            f"{MGMT}/clusters",
            {
                "apiVersion": "management.cattle.io/v3",
                "kind": "Cluster",
                "metadata": {"name": CLUSTER_ID},
                "spec": {"displayName": "c-us"},
            },
        )
    events: list[Event] = []
    async with AsyncKubeClient(upstream.config) as client:
        await register_cluster(
            client,
            CLUSTER_ID,
            address=downstream.server.removeprefix("https://"),
            sa_token=token,
            ca_cert_pem=downstream.ca_pem or b"",
        )
        controllers = ClusterControllers(client, trace=events.append, status_interval_seconds=0.5)
        await controllers.start()
        try:
            yield World(upstream=upstream, downstream=downstream, controllers=controllers, events=events)
        finally:
            await controllers.stop()


async def eventually(predicate: Callable[[], T], *, timeout_seconds: float, what: str) -> T:
    """`wait_for` off the event loop, so the controllers under test keep running meanwhile."""
    return await asyncio.to_thread(wait_for, predicate, timeout_seconds=timeout_seconds, what=what)


def crtb(user_id: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "management.cattle.io/v3",
        "kind": "ClusterRoleTemplateBinding",
        "metadata": {"name": f"crtb-{uuid.uuid4().hex[:6]}", "namespace": CLUSTER_ID},
        "clusterName": CLUSTER_ID,
        "roleTemplateName": role,
        "userName": user_id,
    }


async def test_registration_recorded_rancher_s_fields(world: World) -> None:
    cluster = world.upstream.get(f"{MGMT}/clusters/{CLUSTER_ID}")
    status = cluster["status"]
    assert status["apiEndpoint"] == world.downstream.server
    secret = world.upstream.get(
        f"/api/v1/namespaces/cattle-global-data/secrets/{status['serviceAccountTokenSecret']}"
    )
    assert set(secret["data"]) == {"credential"}
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Cluster"
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} >= {"Provisioned"}


async def test_status_carries_nodes_namespaces_and_version(world: World) -> None:
    def synced() -> dict[str, Any] | None:
        status = world.upstream.get(f"{MGMT}/clusters/{CLUSTER_ID}").get("status", {})
        return status if "nodeCount" in status else None

    status = await eventually(synced, timeout_seconds=30, what="the cluster's status")
    assert status["nodeCount"] == len(world.downstream.nodes)
    assert status["namespaceCount"] >= 4
    assert status["version"]["gitVersion"].startswith("v1.")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])


async def test_a_cluster_binding_lands_downstream_and_brings_the_account(world: World) -> None:
    user_id = new_user(world.upstream, "devs")
    binding = world.upstream.create(
        f"{MGMT}/namespaces/{CLUSTER_ID}/clusterroletemplatebindings", crtb(user_id, "cluster-member")
    )
    with world.downstream.client() as admin:
        selector = f"authz.cluster.cattle.io/crtb-owner-{binding['metadata']['name']}=true"
        crbs = await eventually(
            lambda: admin.list(f"{RBAC}/clusterrolebindings", label_selector=selector)["items"],
            timeout_seconds=30,
            what="the binding's ClusterRoleBinding",
        )
        assert [c["roleRef"]["name"] for c in crbs] == ["cluster-member-aggregator"]
        assert crbs[0]["subjects"] == [
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user_id}
        ]
        await eventually(
            lambda: admin.exists(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}"),
            timeout_seconds=30,
            what="the eagerly created impersonation account",
        )
        role = admin.get(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}")
        assert role["rules"][3]["resourceNames"] == ["devs", *AUTHENTICATED_GROUPS]
        await eventually(
            lambda: admin.allows(user_id, ["devs"], "list", "nodes"),
            timeout_seconds=30,
            what="cluster-member to let the user list nodes (aggregation)",
        )
        assert not admin.allows(user_id, ["devs"], "list", "secrets", namespace="default")
    # The proxy's token for this user is the same account's.
    user = world.controllers.user_info(user_id)
    assert user is not None
    token = await world.controllers.token_for(CLUSTER_ID, user)
    config = KubeConfig(server=world.downstream.server, ca_pem=world.downstream.ca_pem, token=token)
    with KubeClient(config.impersonating(user_id, ("devs", *AUTHENTICATED_GROUPS))) as as_user:
        assert as_user.can_i("list", "nodes")
    assert any(isinstance(e, ImpersonationAccountEnsured) and e.user == user_id for e in world.events)

    # The last binding goes: its ClusterRoleBinding, then the account (the role; GC takes the rest).
    world.upstream.delete(
        f"{MGMT}/namespaces/{CLUSTER_ID}/clusterroletemplatebindings/{binding['metadata']['name']}"
    )
    with world.downstream.client() as admin:
        await eventually(
            lambda: (
                not admin.list(f"{RBAC}/clusterrolebindings", label_selector=selector)["items"]
                and not admin.exists(
                    f"/api/v1/namespaces/cattle-impersonation-system/serviceaccounts/cattle-impersonation-{user_id}"
                )
                and not admin.exists(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}")
            ),
            timeout_seconds=60,
            what="the binding and the account to be removed",
        )


async def test_one_of_two_bindings_removed_keeps_the_account(world: World) -> None:
    user_id = new_user(world.upstream)
    bindings = [
        world.upstream.create(
            f"{MGMT}/namespaces/{CLUSTER_ID}/clusterroletemplatebindings", crtb(user_id, role)
        )
        for role in ("cluster-member", "cluster-owner")
    ]
    with world.downstream.client() as admin:
        await eventually(
            lambda: admin.exists(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}"),
            timeout_seconds=30,
            what="the impersonation account",
        )
        world.upstream.delete(
            f"{MGMT}/namespaces/{CLUSTER_ID}/clusterroletemplatebindings/{bindings[0]['metadata']['name']}"
        )
        await world.controllers.wait_idle()
        assert admin.exists(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}")


async def test_project_binding_reaches_the_project_s_namespaces(world: World) -> None:
    user_id = new_user(world.upstream)
    project = f"p-{uuid.uuid4().hex[:5]}"
    namespace = f"team-{project}"
    with world.downstream.client() as admin:
        admin.create(
            "/api/v1/namespaces",
            {
                "metadata": {
                    "name": namespace,
                    "annotations": {"field.cattle.io/projectId": f"{CLUSTER_ID}:{project}"},
                }
            },
        )
        await eventually(
            lambda: (
                admin.get(f"/api/v1/namespaces/{namespace}")["metadata"]
                .get("labels", {})
                .get("field.cattle.io/projectId")
                == project
            ),
            timeout_seconds=30,
            what="the namespace's project label",
        )
        world.upstream.apply(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": project}}
        )
        world.upstream.create(
            f"{MGMT}/namespaces/{project}/projectroletemplatebindings",
            {
                "apiVersion": "management.cattle.io/v3",
                "kind": "ProjectRoleTemplateBinding",
                "metadata": {"name": "prtb-member", "namespace": project},
                "projectName": f"{CLUSTER_ID}:{project}",
                "roleTemplateName": "project-member",
                "userName": user_id,
            },
        )
        await eventually(
            lambda: admin.allows(user_id, [], "create", "configmaps", namespace=namespace),
            timeout_seconds=60,
            what="project-member to let the user create config maps in the project's namespace",
        )
        assert not admin.allows(user_id, [], "create", "configmaps", namespace="default")
        bindings = admin.list(f"{RBAC}/namespaces/{namespace}/rolebindings")["items"]
        assert [b["roleRef"]["name"] for b in bindings] == ["project-member-aggregator"]
        assert admin.exists(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}")

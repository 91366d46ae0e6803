"""Per-user impersonation accounts on a real kube-apiserver, made through Rancher's ``cattle`` credential.

The five objects with Rancher's names, labels, owners and rules; fifty users' concurrent first
requests create each user's objects exactly once; a group change rewrites the role; removing the
role lets Kubernetes' garbage collector take the rest; stale token Secrets are cleaned.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.cli import main
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.k8s import KubeClient, KubeConfig, wait_for
from corral.k8s.aio import AsyncKubeClient
from corral.model.trace import Event, ImpersonationAccountEnsured
from corral.server.accounts import ImpersonationAccountSet, request_token
from corral.server.cattle import ensure_cattle_credential
from corral.server.doctor import check_impersonation

NS = "cattle-impersonation-system"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
LABEL = {"authz.cluster.cattle.io/impersonator": "true"}


@pytest.fixture(scope="module")
def handle(cluster_set: ClusterSet) -> ClusterHandle:
    return cluster_set["c-us"]


@pytest.fixture(scope="module")
def cattle_token(handle: ClusterHandle) -> str:
    with handle.client() as admin:
        return ensure_cattle_credential(admin)


@pytest.fixture
async def accounts(
    handle: ClusterHandle, cattle_token: str
) -> AsyncIterator[tuple[ImpersonationAccountSet, list[Event]]]:
    events: list[Event] = []
    config = KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=cattle_token, user_name="cattle")
    async with AsyncKubeClient(config) as client:
        yield ImpersonationAccountSet(cluster="c-us", client=client, trace=events.append), events


def new_user(*groups: str) -> UserInfo:
    name = f"u-{uuid.uuid4().hex[:10]}"
    return UserInfo(
        name=name,
        groups=(*AUTHENTICATED_GROUPS, *groups),
        extras={"principalid": (f"local://{name}",), "username": ("Test User",)},
    )


def owner(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: ref[k] for k in ("apiVersion", "kind", "name", "uid")}
        for ref in obj["metadata"].get("ownerReferences", [])
    ]


async def test_the_five_objects_are_rancher_s(
    accounts: tuple[ImpersonationAccountSet, list[Event]], handle: ClusterHandle
) -> None:
    account_set, events = accounts
    user = new_user("devs")
    token = await account_set.token_for(user)
    name = f"cattle-impersonation-{user.name}"
    with handle.client() as admin:
        namespace = admin.get(f"/api/v1/namespaces/{NS}")
        role = admin.get(f"{RBAC}/clusterroles/{name}")
        account = admin.get(f"/api/v1/namespaces/{NS}/serviceaccounts/{name}")
        binding = admin.get(f"{RBAC}/clusterrolebindings/{name}")
        secrets = admin.list(
            f"/api/v1/namespaces/{NS}/secrets", label_selector=f"cattle.io/service-account.name={name}"
        )
    assert namespace["metadata"]["labels"].items() >= LABEL.items()  # the apiserver adds its name label
    assert role["metadata"]["labels"] == LABEL
    auth = "authentication.k8s.io"
    assert role["rules"] == [
        {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": [user.name]},
        {"verbs": ["impersonate"], "apiGroups": [auth], "resources": ["userextras/requesttokenid"]},
        {"verbs": ["impersonate"], "apiGroups": [auth], "resources": ["userextras/requesthost"]},
        {
            "verbs": ["impersonate"],
            "apiGroups": [""],
            "resources": ["groups"],
            "resourceNames": ["devs", "system:authenticated", "system:cattle:authenticated"],
        },
        {
            "verbs": ["impersonate"],
            "apiGroups": [auth],
            "resources": ["userextras/principalid"],
            "resourceNames": [f"local://{user.name}"],
        },
        {
            "verbs": ["impersonate"],
            "apiGroups": [auth],
            "resources": ["userextras/username"],
            "resourceNames": ["Test User"],
        },
    ]
    role_owner = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": name,
                   "uid": role["metadata"]["uid"]}]  # fmt: skip
    assert account["metadata"]["labels"] == LABEL
    assert owner(account) == role_owner
    assert binding["metadata"]["labels"] == LABEL
    assert owner(binding) == role_owner
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": name,
    }
    [secret] = secrets["items"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["name"].startswith(f"{name}-token-")
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == name
    assert owner(secret) == [{"apiVersion": "v1", "kind": "ServiceAccount", "name": name,
                              "uid": account["metadata"]["uid"]}]  # fmt: skip
    assert account["metadata"]["annotations"]["rancher.io/service-account.secret-ref"] == (
        f"{NS}/{secret['metadata']['name']}"
    )
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    assert events == [ImpersonationAccountEnsured(t=0.0, cluster="c-us", user=user.name, created=True)]
    # The token is the account's: it may impersonate the user and nothing else.
    as_account = KubeClient(KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=token))
    with as_account:
        assert as_account.can_i("impersonate", "users", name=user.name)
        assert not as_account.can_i("impersonate", "users", name="someone-else")
        assert not as_account.can_i("list", "secrets", namespace=NS)
    # A second request is served from memory: no new event.
    assert await account_set.token_for(user) == token
    assert len(events) == 1


async def test_fifty_first_requests_create_each_account_once(
    accounts: tuple[ImpersonationAccountSet, list[Event]], handle: ClusterHandle
) -> None:
    account_set, events = accounts
    users = [new_user(f"team-{i % 5}") for i in range(50)]
    # Two concurrent first requests per user, a hundred in all, in one burst.
    tokens = await asyncio.gather(*(account_set.token_for(u) for u in users for _ in range(2)))
    assert all(tokens[2 * i] == tokens[2 * i + 1] for i in range(50))
    names = {f"cattle-impersonation-{u.name}" for u in users}
    with handle.client() as admin:
        roles = admin.list(f"{RBAC}/clusterroles", label_selector="authz.cluster.cattle.io/impersonator=true")
        bindings = admin.list(
            f"{RBAC}/clusterrolebindings", label_selector="authz.cluster.cattle.io/impersonator=true"
        )
        sas = admin.list(f"/api/v1/namespaces/{NS}/serviceaccounts")
        secrets = admin.list(
            f"/api/v1/namespaces/{NS}/secrets", label_selector="cattle.io/service-account.name"
        )
    assert names <= {r["metadata"]["name"] for r in roles["items"]}
    assert names <= {b["metadata"]["name"] for b in bindings["items"]}
    assert names <= {a["metadata"]["name"] for a in sas["items"]}
    per_account = Counter(s["metadata"]["labels"]["cattle.io/service-account.name"] for s in secrets["items"])
    assert {name: per_account[name] for name in names} == dict.fromkeys(names, 1)
    ensured = [e for e in events if isinstance(e, ImpersonationAccountEnsured)]
    assert Counter(e.user for e in ensured) == Counter({u.name: 1 for u in users})
    assert all(e.created for e in ensured)


async def test_group_change_rewrites_the_role_on_the_next_request(
    accounts: tuple[ImpersonationAccountSet, list[Event]], handle: ClusterHandle
) -> None:
    account_set, events = accounts
    user = new_user("devs")
    token = await account_set.token_for(user)
    moved = UserInfo(name=user.name, groups=(*AUTHENTICATED_GROUPS, "ops"), extras=user.extras)
    assert await account_set.token_for(moved) == token
    with handle.client() as admin:
        role = admin.get(f"{RBAC}/clusterroles/cattle-impersonation-{user.name}")
    assert role["rules"][3]["resourceNames"] == ["ops", "system:authenticated", "system:cattle:authenticated"]
    assert [e.created for e in events if isinstance(e, ImpersonationAccountEnsured)] == [True, False]


async def test_removing_the_role_lets_gc_remove_the_rest(
    accounts: tuple[ImpersonationAccountSet, list[Event]], handle: ClusterHandle
) -> None:
    account_set, _ = accounts
    user = new_user()
    await account_set.token_for(user)
    name = f"cattle-impersonation-{user.name}"
    assert await account_set.remove(user.name)
    with handle.client() as admin:

        def gone() -> bool:
            left = [
                admin.exists(f"{RBAC}/clusterroles/{name}"),
                admin.exists(f"{RBAC}/clusterrolebindings/{name}"),
                admin.exists(f"/api/v1/namespaces/{NS}/serviceaccounts/{name}"),
                bool(
                    admin.list(
                        f"/api/v1/namespaces/{NS}/secrets",
                        label_selector=f"cattle.io/service-account.name={name}",
                    )["items"]
                ),
            ]
            return not any(left)

        wait_for(gone, timeout_seconds=60, what="the garbage collector to remove the account's objects")
    # A later request makes it again.
    assert await account_set.token_for(user)


async def test_stale_token_secrets_are_cleaned(
    accounts: tuple[ImpersonationAccountSet, list[Event]], handle: ClusterHandle
) -> None:
    account_set, _ = accounts
    user = new_user()
    await account_set.token_for(user)
    with handle.client() as admin:
        stale = admin.create(
            f"/api/v1/namespaces/{NS}/secrets",
            {
                "metadata": {
                    "generateName": "cattle-impersonation-gone-token-",
                    "labels": {"cattle.io/service-account.name": "cattle-impersonation-gone"},
                },
                "type": "Opaque",
            },
        )
        deleted = await account_set.clean_stale_secrets(min_age_seconds=0)
        assert stale["metadata"]["name"] in deleted
        name = f"cattle-impersonation-{user.name}"
        left = admin.list(
            f"/api/v1/namespaces/{NS}/secrets", label_selector=f"cattle.io/service-account.name={name}"
        )
        assert len(left["items"]) == 1


async def test_token_request_for_a_service_account(handle: ClusterHandle, cattle_token: str) -> None:
    config = KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=cattle_token)
    async with AsyncKubeClient(config) as client:
        token = await request_token(client, namespace="default", name="default", expiration_seconds=600)
        with KubeClient(KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=token)) as as_sa:
            review = as_sa.create(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        assert review["status"]["userInfo"]["username"] == "system:serviceaccount:default:default"
        from corral.server.proxy_interfaces import ServiceAccountTokenError

        with pytest.raises(ServiceAccountTokenError, match="default/nobody"):
            await request_token(client, namespace="default", name="nobody", expiration_seconds=600)


async def test_doctor_finds_a_deleted_cluster_role_binding(
    accounts: tuple[ImpersonationAccountSet, list[Event]], handle: ClusterHandle
) -> None:
    account_set, _ = accounts
    user = new_user("devs")
    await account_set.token_for(user)
    with handle.client() as admin:
        healthy = check_impersonation(admin, cluster="c-us", user=user.name, groups=["devs"])
        assert healthy.healthy, healthy.lines()
        drifted = check_impersonation(admin, cluster="c-us", user=user.name, groups=["ops"])
        assert [f.kind for f in drifted.findings] == ["wrong"]
        admin.delete(f"{RBAC}/clusterrolebindings/cattle-impersonation-{user.name}")
        broken = check_impersonation(admin, cluster="c-us", user=user.name)
    assert [str(f) for f in broken.findings] == [
        f"MISSING: ClusterRoleBinding cattle-impersonation-{user.name}: does not exist: "
        "the account's token can impersonate no one"
    ]
    result = CliRunner().invoke(
        main,
        [
            "doctor",
            "impersonation",
            "--cluster",
            "c-us",
            "--user",
            user.name,
            "--kubeconfig",
            str(handle.kubeconfig),
        ],
    )
    assert result.exit_code == 1
    assert f"MISSING: ClusterRoleBinding cattle-impersonation-{user.name}" in result.output
    # The next request repairs it.
    account_set.invalidate(user.name)
    await account_set.token_for(user)
    with handle.client() as admin:
        assert check_impersonation(admin, cluster="c-us", user=user.name).healthy

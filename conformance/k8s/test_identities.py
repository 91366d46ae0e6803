"""Who the clients are, against a real kube-apiserver: token and exec kubeconfigs, impersonation, reviews."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.controlplane.clusters import ClusterHandle
from corral.errors import ConfigError
from corral.k8s import ExecPlugin, KubeClient, KubeConfig, wait_for
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.aio import wait_for as async_wait_for

pytestmark = pytest.mark.requirement("CP-013")

SELF_REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
SELF_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def service_account_token(admin: KubeClient, namespace: str, name: str) -> str:
    """A TokenRequest token for a new ServiceAccount."""
    admin.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})
    answer = admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    return str(answer["status"]["token"])


def user_info(review: dict[str, Any]) -> dict[str, Any]:
    return dict(review["status"]["userInfo"])


async def async_whoami(config: KubeConfig) -> dict[str, Any]:
    async with AsyncKubeClient(config) as client:
        return user_info(await client.create(SELF_REVIEWS, SELF_REVIEW))


async def test_a_bearer_token_kubeconfig_file_authenticates_both_clients_as_the_service_account(
    handle: ClusterHandle, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    token = service_account_token(admin, namespace, "robot")
    written = KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=token).write(
        tmp_path / "robot.yml"
    )
    config = KubeConfig.load(written)
    expected = f"system:serviceaccount:{namespace}:robot"
    with KubeClient(config) as robot:
        assert user_info(robot.create(SELF_REVIEWS, SELF_REVIEW))["username"] == expected
    assert (await async_whoami(config))["username"] == expected


async def test_an_exec_plugin_kubeconfig_authenticates_both_clients(
    handle: ClusterHandle, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    token = service_account_token(admin, namespace, "plugged")
    plugin = tmp_path / "credential-plugin"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}
    credential["status"] = {"token": token}  # type: ignore[assignment]
    plugin.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({json.dumps(json.dumps(credential))})\n"
    )
    plugin.chmod(0o700)
    config = KubeConfig(
        server=handle.server,
        ca_pem=handle.ca_pem,
        exec_plugin=ExecPlugin(command=str(plugin), api_version="client.authentication.k8s.io/v1"),
    )
    config = KubeConfig.load(config.write(tmp_path / "plugged.yml"))
    expected = f"system:serviceaccount:{namespace}:plugged"
    with KubeClient(config) as client:
        assert user_info(client.create(SELF_REVIEWS, SELF_REVIEW))["username"] == expected
    assert (await async_whoami(config))["username"] == expected


async def test_both_clients_impersonate_a_user_and_groups(handle: ClusterHandle) -> None:
    with handle.client() as admin, admin.impersonating("alice", ["devs", "team-a"]) as acting:
        sync_identity = user_info(acting.create(SELF_REVIEWS, SELF_REVIEW))
    async with AsyncKubeClient(handle.admin_config()) as client:
        async with client.impersonating("alice", ["devs", "team-a"]) as acting_async:
            async_identity = user_info(await acting_async.create(SELF_REVIEWS, SELF_REVIEW))
        admin_identity = user_info(await client.create(SELF_REVIEWS, SELF_REVIEW))
    for identity in (sync_identity, async_identity):
        assert identity["username"] == "alice"
        assert {"devs", "team-a"} <= set(identity["groups"])
    assert admin_identity["username"] != "alice"


async def test_subject_access_reviews_follow_a_new_rolebinding_in_both_clients(
    handle: ClusterHandle, admin: KubeClient, namespace: str
) -> None:
    assert not admin.allows("frank", ["qa"], "list", "configmaps", namespace=namespace)
    admin.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": "qa-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "qa"}],
        },
    )
    wait_for(
        lambda: admin.allows("frank", ["qa"], "list", "configmaps", namespace=namespace),
        timeout_seconds=30,
        what="the qa RoleBinding",
    )
    async with AsyncKubeClient(handle.admin_config()) as client:

        async def allowed() -> bool:
            return await client.allows("frank", ["qa"], "list", "configmaps", namespace=namespace)

        assert await async_wait_for(allowed, timeout_seconds=30, what="the qa RoleBinding (async)")
        assert not await client.allows("frank", ["qa"], "delete", "configmaps", namespace=namespace)
    async with AsyncKubeClient(handle.credentials("frank", ["qa"])) as frank:
        assert await frank.can_i("list", "configmaps", namespace=namespace)
        assert not await frank.can_i("list", "secrets", namespace=namespace)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_bad_exec_plugin_is_a_config_error(
    handle: ClusterHandle, tmp_path: Path, flavour: str
) -> None:
    plugin = tmp_path / "broken-plugin"
    plugin.write_text("#!/bin/sh\necho 'no session' >&2\nexit 1\n")
    plugin.chmod(0o700)
    config = KubeConfig(
        server=handle.server,
        ca_pem=handle.ca_pem,
        exec_plugin=ExecPlugin(command=str(plugin), api_version="client.authentication.k8s.io/v1"),
    )
    if flavour == "sync":
        with pytest.raises(ConfigError, match="exec"):
            KubeClient(config)
    else:
        with pytest.raises(ConfigError, match="exec"):
            await async_whoami(config)

"""The aggregation layer: an APIService backed by a server on this machine is reached through kube-apiserver.

The extension server runs in the test on 127.0.0.1. kube-apiserver reaches it through an
``ExternalName`` Service pointing at ``localhost`` (EndpointSlices refuse loopback addresses and no
Service IP is routable without kube-proxy), presents the front-proxy client certificate, and tells
it the caller in ``X-Remote-User`` and ``X-Remote-Group``, after authorizing the caller itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.controlplane.aggregated_server import RESOURCE, WIDGETS, AggregatedServer, serve
from conformance.controlplane.test_kubectl import kubectl
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.k8s import KubeClient, wait_for
from corral.pytest_plugin import KubeClients

VERSION = "v1alpha1"
SERVICE = "widgets-api"
READER = "wanda"
READER_GROUPS = ("widget-readers",)
RBAC = "/apis/rbac.authorization.k8s.io/v1"
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


def extension_authentication(admin: KubeClient) -> dict[str, str]:
    """What kube-apiserver publishes for extension servers (they read it to trust the front proxy)."""
    config_map = wait_for(
        lambda: admin.get("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"),
        timeout_seconds=30,
        what="the extension-apiserver-authentication ConfigMap",
    )
    return dict(config_map["data"])


def available(admin: KubeClient, name: str) -> dict[str, Any] | None:
    conditions = admin.get(f"{APISERVICES}/{name}").get("status", {}).get("conditions", [])
    condition = next((c for c in conditions if c["type"] == "Available"), None)
    return condition if condition is not None and condition["status"] == "True" else None


def routed(admin: KubeClient, group: str) -> bool:
    return any(g["name"] == group for g in admin.get("/apis").get("groups", []))


def availability(admin: KubeClient, name: str) -> str:
    conditions = admin.get(f"{APISERVICES}/{name}").get("status", {}).get("conditions", [])
    return "; ".join(f"{c['type']}={c['status']} {c.get('reason')}: {c.get('message')}" for c in conditions)


# The extension server listens on this machine's loopback, which only local clusters reach.
pytestmark = [pytest.mark.local_only, pytest.mark.requirement("CP-011")]


@pytest.fixture
def handle(cluster_set: ClusterSet, cluster_name: str) -> ClusterHandle:
    return cluster_set[cluster_name]


@pytest.fixture
def extension(
    handle: ClusterHandle, kube: KubeClients, cluster_name: str, namespace: str, tmp_path: Path
) -> Iterator[AggregatedServer]:
    """The extension server, registered as ``v1alpha1.<namespace>.corral.example`` and Available."""
    admin = kube.admin(cluster_name)
    trust = extension_authentication(admin)
    group = f"{namespace}.corral.example"
    name = f"{VERSION}.{group}"
    with serve(
        group=group,
        version=VERSION,
        front_proxy_ca_pem=trust["requestheader-client-ca-file"].encode(),
        allowed_names=json.loads(trust["requestheader-allowed-names"]),
        service_host=f"{SERVICE}.{namespace}.svc",
        folder=tmp_path,
    ) as server:
        admin.create(
            f"/api/v1/namespaces/{namespace}/services",
            {"metadata": {"name": SERVICE}, "spec": {"type": "ExternalName", "externalName": "localhost"}},
        )
        admin.create(
            APISERVICES,
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": name},
                "spec": {
                    "group": group,
                    "version": VERSION,
                    "service": {"namespace": namespace, "name": SERVICE, "port": server.port},
                    "caBundle": base64.b64encode(server.ca_pem).decode(),
                    "groupPriorityMinimum": 1000,
                    "versionPriority": 15,
                },
            },
        )
        try:
            try:
                wait_for(
                    lambda: available(admin, name), timeout_seconds=60, what=f"APIService {name} Available"
                )
            except TimeoutError as e:
                raise AssertionError(f"{e}; conditions: {availability(admin, name)}") from e
            # Available comes from the availability controller; the aggregator routes the group only
            # once its registration controller has added it, which /apis (served by the apiserver
            # itself, never proxied to the extension) shows.
            wait_for(lambda: routed(admin, group), timeout_seconds=60, what=f"group {group} in /apis")
            yield server
        finally:
            admin.delete(f"{APISERVICES}/{name}")


def test_the_apiserver_publishes_the_front_proxy_trust_for_extension_servers(
    handle: ClusterHandle, kube: KubeClients, cluster_name: str
) -> None:
    trust = extension_authentication(kube.admin(cluster_name))
    assert json.loads(trust["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(trust["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(trust["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(trust["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    assert "BEGIN CERTIFICATE" in trust["requestheader-client-ca-file"]
    # The front-proxy CA is not the CA of the cluster's user certificates.
    assert trust["requestheader-client-ca-file"].strip() != trust["client-ca-file"].strip()


def test_the_availability_check_reaches_the_extension_as_the_aggregator_through_the_front_proxy(
    extension: AggregatedServer,
) -> None:
    checks = extension.calls_to(f"/apis/{extension.group}/{VERSION}")
    assert checks
    assert {call.proxy_name for call in checks} == {"front-proxy-client"}
    assert {call.user for call in checks} == {"system:kube-aggregator"}
    assert extension.refused == []
    assert extension.handshake_errors == []


def test_admin_reads_the_aggregated_resource_with_kubectl_and_the_extension_sees_admin(
    extension: AggregatedServer, handle: ClusterHandle, corral_binaries: build.Built
) -> None:
    path = f"/apis/{extension.group}/{VERSION}/{RESOURCE}"
    result = kubectl(corral_binaries, handle.kubeconfig, "get", "--raw", path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["kind"] == "WidgetList"
    assert [item["metadata"]["name"] for item in listed["items"]] == list(WIDGETS)
    [call] = extension.calls_to(path)
    assert call.proxy_name == "front-proxy-client"
    assert call.user == "admin"
    assert {"system:masters", "system:authenticated"} <= set(call.groups)


def test_a_user_is_forbidden_by_the_apiserver_until_bound_then_the_extension_sees_that_user(
    extension: AggregatedServer,
    handle: ClusterHandle,
    kube: KubeClients,
    cluster_name: str,
    corral_binaries: build.Built,
    tmp_path: Path,
) -> None:
    admin = kube.admin(cluster_name)
    path = f"/apis/{extension.group}/{VERSION}/{RESOURCE}"
    kubeconfig = handle.credentials(READER, READER_GROUPS).write(tmp_path / f"{READER}.yml")

    denied = kubectl(corral_binaries, kubeconfig, "get", "--raw", path)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr or "forbidden" in denied.stderr
    assert extension.calls_to(path) == []  # the apiserver refused it before proxying

    role = f"{extension.group}-reader"
    admin.create(
        f"{RBAC}/clusterroles",
        {
            "metadata": {"name": role},
            "rules": [{"apiGroups": [extension.group], "resources": [RESOURCE], "verbs": ["get", "list"]}],
        },
    )
    try:
        admin.create(
            f"{RBAC}/clusterrolebindings",
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": READER}],
            },
        )
        wait_for(
            lambda: admin.allows(READER, READER_GROUPS, "list", RESOURCE, group=extension.group),
            timeout_seconds=30,
            what=f"a ClusterRoleBinding to let {READER} list {RESOURCE}",
        )
        allowed = kubectl(corral_binaries, kubeconfig, "get", "--raw", path)
        assert allowed.returncode == 0, allowed.stderr
        assert json.loads(allowed.stdout)["kind"] == "WidgetList"
    finally:
        admin.delete(f"{RBAC}/clusterrolebindings/{role}")
        admin.delete(f"{RBAC}/clusterroles/{role}")

    [call] = extension.calls_to(path)
    assert call.proxy_name == "front-proxy-client"
    assert call.user == READER
    assert set(call.groups) == {*READER_GROUPS, "system:authenticated"}


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [("none", "PEER_DID_NOT_RETURN_A_CERTIFICATE"), ("user certificate", "CERTIFICATE_VERIFY_FAILED")],
)
def test_the_extension_refuses_a_caller_without_a_front_proxy_certificate(
    extension: AggregatedServer, handle: ClusterHandle, credentials: str, reason: str, tmp_path: Path
) -> None:
    """No certificate, or a user certificate of the cluster even named front-proxy-client: refused."""
    path = f"/apis/{extension.group}/{VERSION}/{RESOURCE}"
    context = ssl.create_default_context(cadata=extension.ca_pem.decode())
    if credentials == "user certificate":
        impostor = handle.credentials("front-proxy-client")
        assert impostor.cert_pem is not None
        assert impostor.key_pem is not None
        pem = tmp_path / "impostor.pem"
        pem.touch(mode=0o600)
        pem.write_bytes(impostor.cert_pem + impostor.key_pem)
        context.load_cert_chain(pem)
    # The server's alert or its closing the connection, depending on who reads first.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get_directly(extension.port, path, context)
    wait_for(lambda: extension.handshake_errors, timeout_seconds=10, what="the refused handshake")
    assert extension.handshake_errors == [reason]
    assert extension.calls_to(path) == []


def get_directly(port: int, path: str, context: ssl.SSLContext) -> bytes:
    """GET from the extension server itself, claiming to be admin in the request headers."""
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers={"X-Remote-User": "admin"})
        return connection.getresponse().read()
    finally:
        connection.close()

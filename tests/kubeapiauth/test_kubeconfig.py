"""ACE contexts: one per control-plane node, or one behind the FQDN, all on the cluster's user."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from corral.errors import ConfigError
from corral.kubeapiauth.kubeconfig import ControlPlaneEndpoint, add_ace_contexts, node_context_name

PROXY_CA = b"-----BEGIN CERTIFICATE-----\nproxy\n-----END CERTIFICATE-----\n"
CLUSTER_CA = b"-----BEGIN CERTIFICATE-----\ncluster\n-----END CERTIFICATE-----\n"
FQDN_CA = b"-----BEGIN CERTIFICATE-----\nfqdn\n-----END CERTIFICATE-----\n"


def generated(cluster: str = "prod") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": f"https://rancher.example/k8s/clusters/c-{cluster}"}}
        ],
        "users": [{"name": cluster, "user": {"token": "kubeconfig-u-1abcd:secret"}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
    }


def entries(doc: dict[str, Any]) -> dict[str, tuple[str, str | None, str]]:
    users = {c["name"]: c["context"]["user"] for c in doc["contexts"]}
    return {
        c["name"]: (c["cluster"]["server"], c["cluster"].get("certificate-authority-data"), users[c["name"]])
        for c in doc["clusters"]
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NODES = [
    ControlPlaneEndpoint(node="prod-cp-1", server="https://10.0.0.1:6443"),
    ControlPlaneEndpoint(node="cp-2", server="https://10.0.0.2:6443"),
]


def test_one_context_per_control_plane_node_with_the_cluster_ca_and_the_clusters_user() -> None:
    doc = add_ace_contexts(generated(), cluster_name="prod", cluster_ca_pem=CLUSTER_CA, nodes=NODES)
    assert entries(doc) == {
        "prod": ("https://rancher.example/k8s/clusters/c-prod", None, "prod"),
        "prod-cp-1": ("https://10.0.0.1:6443", b64(CLUSTER_CA), "prod"),
        "prod-cp-2": ("https://10.0.0.2:6443", b64(CLUSTER_CA), "prod"),
    }
    assert doc["current-context"] == "prod"
    assert [u["name"] for u in doc["users"]] == ["prod"]


def test_with_an_fqdn_there_is_one_entry_and_no_node_entries() -> None:
    doc = add_ace_contexts(
        generated(),
        cluster_name="prod",
        cluster_ca_pem=CLUSTER_CA,
        nodes=NODES,
        fqdn="prod.example:8443",
        fqdn_ca_pem=FQDN_CA,
    )
    assert entries(doc)["prod-fqdn"] == ("https://prod.example:8443", b64(FQDN_CA), "prod")
    assert set(entries(doc)) == {"prod", "prod-fqdn"}
    assert doc["current-context"] == "prod"


def test_the_fqdn_context_can_become_current_and_without_ca_certs_none_is_written() -> None:
    doc = add_ace_contexts(generated(), cluster_name="prod", fqdn="prod.example", switch_to_fqdn=True)
    assert doc["current-context"] == "prod-fqdn"
    assert entries(doc)["prod-fqdn"][1] is None


def test_the_input_is_left_as_it_was() -> None:
    original = generated()
    add_ace_contexts(original, cluster_name="prod", nodes=NODES)
    assert original == generated()


def test_the_node_name_loses_the_cluster_prefix_once() -> None:
    assert node_context_name("prod", "prod-prod-cp") == "prod-prod-cp"
    assert node_context_name("prod", "cp") == "prod-cp"
    assert node_context_name("prod", "production-cp") == "prod-production-cp"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster_name": "other"}, "no user 'other'"),
        ({"nodes": [ControlPlaneEndpoint(node="a", server="http://10.0.0.1:6443")]}, "no https URL"),
        (
            {
                "nodes": [
                    ControlPlaneEndpoint(node="a", server="https://x"),
                    ControlPlaneEndpoint(node="prod-a", server="https://y"),
                ]
            },
            "already",
        ),
        ({"fqdn": "https://prod.example"}, "must be a host name"),
        ({"nodes": [ControlPlaneEndpoint(node="", server="https://10.0.0.1")]}, "has no name"),
    ],
)
def test_bad_input_is_refused_precisely(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"cluster_name": "prod", **kwargs}
    with pytest.raises(ConfigError, match=message):
        add_ace_contexts(generated(), **arguments)

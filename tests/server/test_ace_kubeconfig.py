"""The ACE entries of ``generateKubeconfig``'s text, byte for byte as Rancher's legacy template renders them.

A cluster with ``spec.localClusterAuthEndpoint.enabled`` gets ``<name>-fqdn`` (CA base64 of ``caCerts``)
or one entry per control-plane node (CA ``status.caCert``, already base64), all on the one user.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from corral.errors import NotFoundError
from corral.server.kubeconfig import (
    ACE_ENDPOINTS_ANNOTATION,
    AceEndpointsError,
    AceEntry,
    ace_entries,
    format_cert_string,
    token_kubeconfig,
    wants_nodes,
)
from corral.server.mint import mint_kubeconfig

FQDN_PEM = "-----BEGIN CERTIFICATE-----\nfqdn-ca\n-----END CERTIFICATE-----\n"
CLUSTER_CA_B64 = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\ncluster-ca\n-----END CERTIFICATE-----\n"
).decode()


def _cluster(endpoint: dict[str, Any] | None, *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"displayName": "prod"}
    if endpoint is not None:
        spec["localClusterAuthEndpoint"] = endpoint
    return {
        "metadata": {"name": "c-abcde", "annotations": annotations or {}},
        "spec": spec,
        "status": {"caCert": CLUSTER_CA_B64},
    }


def _render(ace: list[AceEntry]) -> str:
    return token_kubeconfig(
        cluster_name="prod",
        cluster_id="c-abcde",
        host="r.example",
        token="kubeconfig-u-x:s",
        cacerts="",
        ace=ace,
    )


def test_the_fqdn_entry_is_rancher_s_template_byte_for_byte() -> None:
    ace = ace_entries(_cluster({"enabled": True, "fqdn": "prod.example:8443", "caCerts": FQDN_PEM}))
    cert = format_cert_string(base64.b64encode(FQDN_PEM.encode()).decode())
    assert "\\\n      " in cert  # long enough to be folded, as Rancher folds it
    assert _render(ace) == (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        '- name: "prod"\n'
        "  cluster:\n"
        '    server: "https://r.example/k8s/clusters/c-abcde"\n'
        '- name: "prod-fqdn"\n'
        "  cluster:\n"
        '    server: "https://prod.example:8443"\n'
        f'    certificate-authority-data: "{cert}"\n'
        "\n"
        "users:\n"
        '- name: "prod"\n'
        "  user:\n"
        '    token: "kubeconfig-u-x:s"\n'
        "\n"
        "\n"
        "contexts:\n"
        '- name: "prod"\n'
        "  context:\n"
        '    user: "prod"\n'
        '    cluster: "prod"\n'
        '- name: "prod-fqdn"\n'
        "  context:\n"
        '    user: "prod"\n'
        '    cluster: "prod-fqdn"\n'
        "\n"
        'current-context: "prod"\n'
    )
    parsed = yaml.safe_load(_render(ace))
    assert (
        base64.b64decode(parsed["clusters"][1]["cluster"]["certificate-authority-data"]) == FQDN_PEM.encode()
    )


def test_per_node_entries_come_from_the_annotation_in_order_and_trim_the_cluster_prefix() -> None:
    endpoints = [
        {"node": "prod-cp2", "server": "https://127.0.0.1:40002"},
        {"node": "cp1", "server": "https://127.0.0.1:40001"},
    ]
    cluster = _cluster({"enabled": True}, annotations={ACE_ENDPOINTS_ANNOTATION: json.dumps(endpoints)})
    assert not wants_nodes(cluster)
    ace = ace_entries(cluster, nodes=[{"spec": {"controlPlane": True, "requestedHostname": "ignored"}}])
    ca = format_cert_string(CLUSTER_CA_B64)
    assert ace == [
        AceEntry(name="prod-cp2", server="https://127.0.0.1:40002", cert=ca),
        AceEntry(name="prod-cp1", server="https://127.0.0.1:40001", cert=ca),
    ]
    text = _render(ace)
    assert text.split("\nusers:\n")[0].endswith(
        '- name: "prod-cp2"\n'
        "  cluster:\n"
        '    server: "https://127.0.0.1:40002"\n'
        f'    certificate-authority-data: "{ca}"\n'
        '- name: "prod-cp1"\n'
        "  cluster:\n"
        '    server: "https://127.0.0.1:40001"\n'
        f'    certificate-authority-data: "{ca}"\n'
    )
    assert text.endswith(
        '- name: "prod-cp1"\n  context:\n    user: "prod"\n    cluster: "prod-cp1"\n'
        '\ncurrent-context: "prod"\n'
    )
    parsed = yaml.safe_load(text)
    assert [u["name"] for u in parsed["users"]] == ["prod"]
    assert {c["context"]["user"] for c in parsed["contexts"]} == {"prod"}


def test_without_the_annotation_management_nodes_give_their_address_and_6443() -> None:
    cluster = _cluster({"enabled": True, "fqdn": ""})
    assert wants_nodes(cluster)

    def node(host: str, *addresses: tuple[str, str], control_plane: bool = True) -> dict[str, Any]:
        return {
            "spec": {"controlPlane": control_plane, "requestedHostname": host},
            "status": {
                "internalNodeStatus": {"addresses": [{"type": t, "address": a} for t, a in addresses]}
            },
        }

    nodes = [
        node("prod-a", ("InternalIP", "10.0.0.1"), ("ExternalIP", "1.2.3.4")),
        node("b", ("InternalIP", "10.0.0.2")),
        node("worker", ("InternalIP", "10.0.0.3"), control_plane=False),
        node("v6", ("InternalIP", "fd00::1")),
    ]
    assert [(e.name, e.server) for e in ace_entries(cluster, nodes=nodes)] == [
        ("prod-a", "https://1.2.3.4:6443"),
        ("prod-b", "https://10.0.0.2:6443"),
        ("prod-v6", "https://[fd00::1]:6443"),
    ]


def test_no_ace_entries_unless_enabled() -> None:
    endpoints = json.dumps([{"node": "cp", "server": "https://127.0.0.1:1"}])
    for endpoint in (None, {"enabled": False, "fqdn": "prod.example"}, {"enabled": "true"}):
        cluster = _cluster(endpoint, annotations={ACE_ENDPOINTS_ANNOTATION: endpoints})
        assert ace_entries(cluster) == []
        assert not wants_nodes(cluster)
    plain = _render([])
    assert plain == token_kubeconfig(
        cluster_name="prod", cluster_id="c-abcde", host="r.example", token="kubeconfig-u-x:s", cacerts=""
    )
    assert [c["name"] for c in yaml.safe_load(plain)["contexts"]] == ["prod"]


def test_the_fqdn_without_ca_certs_writes_no_ca_and_the_display_name_falls_back_to_the_id() -> None:
    cluster = _cluster({"enabled": True, "fqdn": "prod.example"})
    del cluster["spec"]["displayName"]
    assert ace_entries(cluster) == [AceEntry(name="c-abcde-fqdn", server="https://prod.example", cert="")]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("not json", "is not JSON"),
        ('{"node": "cp"}', "must be a list"),
        ('[{"server": "https://h:1"}]', "has no node name"),
        ('[{"node": "cp", "server": "http://h:1"}]', "no https://host"),
        ('[{"node": "cp", "server": "https://h:1/path"}]', "no https://host"),
    ],
)
def test_a_malformed_annotation_is_a_precise_error(annotation: str, message: str) -> None:
    cluster = _cluster({"enabled": True}, annotations={ACE_ENDPOINTS_ANNOTATION: annotation})
    with pytest.raises(AceEndpointsError, match=message):
        ace_entries(cluster)


class _Upstream:
    """A management cluster of one user and one cluster, for `mint_kubeconfig` (no Node objects served)."""

    def __init__(self, cluster: dict[str, Any]) -> None:
        self.objects: dict[str, dict[str, Any]] = {
            "/apis/management.cattle.io/v3/users/u-abcde": {
                "metadata": {"name": "u-abcde"},
                "username": "ann",
            },
            "/apis/management.cattle.io/v3/clusters/c-abcde": cluster,
        }
        self.created: list[dict[str, Any]] = []
        self.listed: list[str] = []

    def get(self, path: str) -> dict[str, Any]:
        if path not in self.objects:
            raise NotFoundError(f"{path} not found", status=404, reason="NotFound")
        return self.objects[path]

    def list(self, path: str) -> dict[str, Any]:
        self.listed.append(path)
        raise NotFoundError(f"{path} not found", status=404, reason="NotFound")

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.created.append(obj)
        return {**obj, "metadata": {**obj["metadata"], "name": "kubeconfig-u-abcde-xyz12"}}


def test_corral_kubeconfig_writes_the_same_ace_entries_with_a_scoped_token() -> None:
    endpoints = json.dumps([{"node": "prod-cp", "server": "https://127.0.0.1:40001"}])
    upstream = _Upstream(_cluster({"enabled": True}, annotations={ACE_ENDPOINTS_ANNOTATION: endpoints}))
    minted = mint_kubeconfig(upstream, user="u-abcde", cluster="c-abcde", server_url="https://r.example")  # type: ignore[arg-type]
    parsed = yaml.safe_load(minted.config)
    assert [c["name"] for c in parsed["contexts"]] == ["prod", "prod-cp"]
    assert parsed["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:40001"
    assert upstream.created[0]["clusterName"] == "c-abcde"
    assert upstream.listed == []  # the annotation answers: no Node objects asked for
    plain = _Upstream(_cluster({"enabled": True}))
    minted = mint_kubeconfig(plain, user="u-abcde", cluster="c-abcde", server_url="https://r.example")  # type: ignore[arg-type]
    assert [c["name"] for c in yaml.safe_load(minted.config)["contexts"]] == ["prod"]
    assert plain.listed == ["/apis/management.cattle.io/v3/namespaces/c-abcde/nodes"]

"""CRDs for the stored management.cattle.io/v3 kinds: Rancher's names and scopes, structural schemas."""

from __future__ import annotations

from typing import Any

import pytest

from corral.server.crds import KINDS, crd, crds

# kind -> (plural, scope) as Rancher defines them (genclient/kubebuilder markers and pkg/crds).
RANCHER = {
    "User": ("users", "Cluster"),
    "Token": ("tokens", "Cluster"),
    "Cluster": ("clusters", "Cluster"),
    "ClusterRegistrationToken": ("clusterregistrationtokens", "Namespaced"),
    "EtcdBackup": ("etcdbackups", "Namespaced"),
    "Node": ("nodes", "Namespaced"),
    "RoleTemplate": ("roletemplates", "Cluster"),
    "ClusterRoleTemplateBinding": ("clusterroletemplatebindings", "Namespaced"),
    "ProjectRoleTemplateBinding": ("projectroletemplatebindings", "Namespaced"),
    "Project": ("projects", "Namespaced"),
    "Setting": ("settings", "Cluster"),
    "UserAttribute": ("userattributes", "Cluster"),
    "GlobalRole": ("globalroles", "Cluster"),
    "GlobalRoleBinding": ("globalrolebindings", "Cluster"),
    "AuthConfig": ("authconfigs", "Cluster"),
}


def by_kind() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in crds()}


def test_every_kind_with_rancher_names_and_scope() -> None:
    found = {kind: (c["spec"]["names"]["plural"], c["spec"]["scope"]) for kind, c in by_kind().items()}
    assert found == RANCHER


@pytest.mark.parametrize("kind", sorted(RANCHER))
def test_crd_envelope(kind: str) -> None:
    c = by_kind()[kind]
    plural = RANCHER[kind][0]
    assert c["apiVersion"] == "apiextensions.k8s.io/v1"
    assert c["metadata"]["name"] == f"{plural}.management.cattle.io"
    assert c["spec"]["group"] == "management.cattle.io"
    assert c["spec"]["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    [version] = c["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v3", True, True)


def assert_structural(node: dict[str, Any], path: str) -> None:
    assert "type" in node, path
    if node["type"] == "object":
        assert node.get("x-kubernetes-preserve-unknown-fields") is True, path
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}.{name}"
        for name, child in node.get("properties", {}).items():
            assert_structural(child, f"{path}.{name}")
    if node["type"] == "array":
        assert_structural(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", sorted(RANCHER))
def test_schemas_are_structural_and_open(kind: str) -> None:
    schema = by_kind()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert_structural(schema, kind)


def test_key_fields_are_declared() -> None:
    kinds = by_kind()

    def props(kind: str) -> dict[str, Any]:
        return kinds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]

    assert props("Token")["ttl"] == {"type": "integer"}
    assert props("Token")["lastUsedAt"] == {"type": "string", "format": "date-time"}
    assert props("Cluster")["status"]["properties"]["apiEndpoint"] == {"type": "string"}
    assert props("UserAttribute")["GroupPrincipals"]["type"] == "object"  # Go field names, no JSON tags
    assert props("Project")["spec"]["required"] == ["clusterName", "displayName"]
    assert kinds["ClusterRoleTemplateBinding"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "required"
    ] == [
        "clusterName",
        "roleTemplateName",
    ]


def test_status_subresources_and_printer_columns_follow_rancher() -> None:
    kinds = by_kind()
    with_status = {k for k, c in kinds.items() if "subresources" in c["spec"]["versions"][0]}
    assert with_status == {"Cluster", "ClusterRoleTemplateBinding", "GlobalRole", "GlobalRoleBinding"}
    columns = {
        k: [col["name"] for col in c["spec"]["versions"][0].get("additionalPrinterColumns", [])]
        for k, c in kinds.items()
    }
    assert columns["Setting"] == ["Value"]
    assert columns["Project"] == ["BACKINGNAMESPACE", "AGE"]
    assert columns["GlobalRoleBinding"] == ["STATUS", "AGE"]
    assert columns["Token"] == []


def test_crd_of_one_kind_equals_its_entry() -> None:
    assert [crd(spec) for spec in KINDS] == crds()

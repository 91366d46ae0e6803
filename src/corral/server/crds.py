"""CustomResourceDefinitions for the ``management.cattle.io/v3`` kinds the server stores upstream.

Kind, plural, scope, status subresource and printer columns are Rancher's (its v3 API types and
``pkg/crds``). Schemas keep unknown fields, as Rancher's own norman-made CRDs do, and declare the fields
the server reads so that ``kubectl explain`` knows them and the apiserver checks their types.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

logger = logging.getLogger(__name__)

__all__ = ["GROUP", "KINDS", "VERSION", "KindSpec", "crd", "crds"]

GROUP: Final = "management.cattle.io"
VERSION: Final = "v3"

_AGE: Final = ("AGE", "date", ".metadata.creationTimestamp")
_STATUS_SUMMARY: Final = ("STATUS", "string", ".status.summary")


@dataclass(frozen=True, slots=True, kw_only=True)
class KindSpec:
    """One stored kind: names, scope and the fields declared in its schema."""

    kind: str
    plural: str
    namespaced: bool
    fields: Mapping[str, str]
    """Dotted path to type: ``string``, ``boolean``, ``integer``, ``date-time``, ``object``, ``[string]``,
    ``[object]``. Objects (declared or implied by a dotted path) keep unknown fields."""
    required: tuple[str, ...] = ()
    """Dotted paths that must be present (Rancher's generated CRDs require them)."""
    status_subresource: bool = False
    printer_columns: tuple[tuple[str, str, str], ...] = ()
    """``(name, type, jsonPath)`` in display order."""
    short_names: tuple[str, ...] = field(default=())


_PRINCIPAL_REFS: Final = {
    "userName": "string",
    "userPrincipalName": "string",
    "groupName": "string",
    "groupPrincipalName": "string",
    "roleTemplateName": "string",
}
_BINDING_STATUS: Final = {"status": "object", "status.summary": "string"}

KINDS: Final[tuple[KindSpec, ...]] = (
    KindSpec(
        kind="User",
        plural="users",
        namespaced=False,
        fields={
            "displayName": "string",
            "description": "string",
            "username": "string",
            "principalIds": "[string]",
            "enabled": "boolean",
            "mustChangePassword": "boolean",
            "status": "object",
        },
    ),
    KindSpec(
        kind="Token",
        plural="tokens",
        namespaced=False,
        fields={
            "token": "string",
            "userId": "string",
            "authProvider": "string",
            "userPrincipal": "object",
            "groupPrincipals": "[object]",
            "providerInfo": "object",
            "ttl": "integer",
            "lastUsedAt": "date-time",
            "activityLastSeenAt": "date-time",
            "isDerived": "boolean",
            "description": "string",
            "expired": "boolean",
            "expiresAt": "string",
            "current": "boolean",
            "clusterName": "string",
            "enabled": "boolean",
        },
    ),
    KindSpec(
        kind="Cluster",
        plural="clusters",
        namespaced=False,
        fields={
            "spec.displayName": "string",
            "spec.description": "string",
            "spec.internal": "boolean",
            "spec.localClusterAuthEndpoint": "object",
            "status.apiEndpoint": "string",
            "status.caCert": "string",
            "status.serviceAccountTokenSecret": "string",
            "status.driver": "string",
            "status.conditions": "[object]",
        },
        status_subresource=True,
    ),
    KindSpec(
        kind="ClusterRegistrationToken",
        plural="clusterregistrationtokens",
        namespaced=True,
        fields={
            "spec.clusterName": "string",
            "spec.ttl": "integer",
            "spec.gracePeriod": "integer",
            "status.token": "string",
            "status.tokenSecretName": "string",
            "status.command": "string",
            "status.insecureCommand": "string",
            "status.manifestUrl": "string",
            "status.expiresAt": "string",
        },
    ),
    KindSpec(
        kind="Node",
        plural="nodes",
        namespaced=True,
        fields={
            "spec.requestedHostname": "string",
            "spec.controlPlane": "boolean",
            "spec.etcd": "boolean",
            "spec.worker": "boolean",
            "spec.internalNodeSpec": "object",
            "status.nodeName": "string",
            "status.internalNodeStatus": "object",
            "status.nodeLabels": "object",
            "status.nodeAnnotations": "object",
            "status.requested": "object",
            "status.limits": "object",
            "status.conditions": "[object]",
        },
        printer_columns=(_AGE,),
    ),
    KindSpec(
        kind="EtcdBackup",
        plural="etcdbackups",
        namespaced=True,
        fields={
            "spec.clusterId": "string",
            "spec.filename": "string",
            "spec.manual": "boolean",
            "status.conditions": "[object]",
        },
        printer_columns=(_AGE,),
    ),
    KindSpec(
        kind="RoleTemplate",
        plural="roletemplates",
        namespaced=False,
        fields={
            "displayName": "string",
            "description": "string",
            "context": "string",
            "rules": "[object]",
            "roleTemplateNames": "[string]",
            "builtin": "boolean",
            "external": "boolean",
            "externalRules": "[object]",
            "hidden": "boolean",
            "locked": "boolean",
            "administrative": "boolean",
            "clusterCreatorDefault": "boolean",
            "projectCreatorDefault": "boolean",
        },
    ),
    KindSpec(
        kind="ClusterRoleTemplateBinding",
        plural="clusterroletemplatebindings",
        namespaced=True,
        fields={"clusterName": "string", **_PRINCIPAL_REFS, **_BINDING_STATUS},
        required=("clusterName", "roleTemplateName"),
        status_subresource=True,
        printer_columns=(_STATUS_SUMMARY, _AGE),
    ),
    KindSpec(
        kind="ProjectRoleTemplateBinding",
        plural="projectroletemplatebindings",
        namespaced=True,
        fields={"projectName": "string", "serviceAccount": "string", **_PRINCIPAL_REFS},
        required=("projectName", "roleTemplateName"),
    ),
    KindSpec(
        kind="Project",
        plural="projects",
        namespaced=True,
        fields={
            "spec.clusterName": "string",
            "spec.displayName": "string",
            "spec.description": "string",
            "status.backingNamespace": "string",
            "status.conditions": "[object]",
        },
        required=("spec.clusterName", "spec.displayName"),
        printer_columns=(("BACKINGNAMESPACE", "string", ".status.backingNamespace"), _AGE),
    ),
    KindSpec(
        kind="Setting",
        plural="settings",
        namespaced=False,
        fields={"value": "string", "default": "string", "customized": "boolean", "source": "string"},
        printer_columns=(("Value", "string", ".value"),),
    ),
    KindSpec(
        kind="UserAttribute",
        plural="userattributes",
        namespaced=False,
        # Rancher's UserAttribute has no JSON tags on these fields: the keys are the Go field names.
        fields={
            "UserName": "string",
            "GroupPrincipals": "object",
            "LastRefresh": "string",
            "NeedsRefresh": "boolean",
            "ExtraByProvider": "object",
            "lastLogin": "date-time",
            "disableAfter": "string",
            "deleteAfter": "string",
        },
    ),
    KindSpec(
        kind="AuthConfig",
        plural="authconfigs",
        namespaced=False,
        # Rancher's AuthConfig is one kind for every provider; ``type`` says which (openLdapConfig, ...).
        fields={
            "type": "string",
            "enabled": "boolean",
            "accessMode": "string",
            "allowedPrincipalIds": "[string]",
            "status": "object",
        },
    ),
    KindSpec(
        kind="GlobalRole",
        plural="globalroles",
        namespaced=False,
        fields={
            "displayName": "string",
            "description": "string",
            "rules": "[object]",
            "namespacedRules": "object",
            "inheritedClusterRoles": "[string]",
            "newUserDefault": "boolean",
            "builtin": "boolean",
            **_BINDING_STATUS,
        },
        status_subresource=True,
        printer_columns=(_STATUS_SUMMARY, _AGE),
    ),
    KindSpec(
        kind="GlobalRoleBinding",
        plural="globalrolebindings",
        namespaced=False,
        fields={
            "globalRoleName": "string",
            "userName": "string",
            "userPrincipalName": "string",
            "groupPrincipalName": "string",
            **_BINDING_STATUS,
        },
        required=("globalRoleName",),
        status_subresource=True,
        printer_columns=(_STATUS_SUMMARY, _AGE),
    ),
)


def _open_object() -> dict[str, Any]:
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _schema_for(type_name: str) -> dict[str, Any]:
    if type_name == "object":
        return _open_object()
    if type_name == "date-time":
        return {"type": "string", "format": "date-time"}
    if type_name.startswith("[") and type_name.endswith("]"):
        return {"type": "array", "items": _schema_for(type_name[1:-1])}
    if type_name in ("string", "boolean", "integer"):
        return {"type": type_name}
    raise ValueError(f"unknown field type {type_name!r}")


def _schema(spec: KindSpec) -> dict[str, Any]:
    root = _open_object()
    for path, type_name in spec.fields.items():
        node = root
        *parents, leaf = path.split(".")
        for parent in parents:
            node = node.setdefault("properties", {}).setdefault(parent, _open_object())
        existing = node.setdefault("properties", {}).get(leaf)
        node["properties"][leaf] = {**_schema_for(type_name), **(existing or {})}
    for path in spec.required:
        node = root
        *parents, leaf = path.split(".")
        for parent in parents:
            node = node["properties"][parent]
        node.setdefault("required", []).append(leaf)
    return root


def crd(spec: KindSpec) -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) for one kind."""
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _schema(spec)},
    }
    if spec.status_subresource:
        version["subresources"] = {"status": {}}
    if spec.printer_columns:
        version["additionalPrinterColumns"] = [
            {"name": name, "type": type_name, "jsonPath": path}
            for name, type_name, path in spec.printer_columns
        ]
    names: dict[str, Any] = {
        "kind": spec.kind,
        "listKind": f"{spec.kind}List",
        "plural": spec.plural,
        "singular": spec.kind.lower(),
    }
    if spec.short_names:
        names["shortNames"] = list(spec.short_names)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{spec.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced" if spec.namespaced else "Cluster",
            "versions": [version],
        },
    }


def crds() -> list[dict[str, Any]]:
    """Every CRD the server needs, in `KINDS` order."""
    return [crd(spec) for spec in KINDS]

"""What role-template bindings become in a downstream cluster, named and labelled as Rancher names them.

Current Rancher (feature ``aggregated-roletemplates``, on by default) gives each RoleTemplate a
ClusterRole with its rules and an ``<rt>-aggregator`` ClusterRole aggregating it and the templates it
inherits; a ClusterRoleTemplateBinding becomes one ClusterRoleBinding to the aggregator (or to the
external role itself), a ProjectRoleTemplateBinding one RoleBinding per project namespace plus a
ClusterRoleBinding for the template's promoted rules (``pkg/controllers/managementuser/rbac/
roletemplates``, ``pkg/rbac/common.go``). Pure functions from management objects to manifests.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from corral.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "AGGREGATION_FEATURE_LABEL",
    "AGGREGATION_LABEL",
    "CLUSTER_ROLE_OWNER_LABEL",
    "PROJECT_ID",
    "aggregated_name",
    "binding_key",
    "cluster_role_binding_for",
    "cluster_role_binding_name",
    "cluster_roles_for",
    "crtb_owner_label",
    "project_of",
    "promoted_binding_for",
    "promoted_name",
    "promoted_rules",
    "prtb_owner_label",
    "role_binding_for",
    "role_binding_name",
    "safe_concat_name",
    "subject_of",
]

RBAC_GROUP: Final = "rbac.authorization.k8s.io"
AGGREGATION_LABEL: Final = "management.cattle.io/aggregates"
AGGREGATION_FEATURE_LABEL: Final = "management.cattle.io/roletemplate-aggregation"
CLUSTER_ROLE_OWNER_LABEL: Final = "authz.cluster.cattle.io/clusterrole-owner"
CRTB_OWNER: Final = "authz.cluster.cattle.io/crtb-owner"
PRTB_OWNER: Final = "authz.cluster.cattle.io/prtb-owner"
LOCAL_PREFIX: Final = "local://"
PROJECT_ID: Final = "field.cattle.io/projectId"
"""Label (``p-xxxxx``) and annotation (``<cluster>:p-xxxxx``) of a project's namespaces."""

# Rancher keeps these in a Go map, so its order of promoted rules varies between runs; this is one order.
_PROMOTED: Final = (
    ("navlinks", "ui.cattle.io"),
    ("nodes", ""),
    ("persistentvolumes", ""),
    ("storageclasses", "storage.k8s.io"),
    ("apiservices", "apiregistration.k8s.io"),
    ("clusterrepos", "catalog.cattle.io"),
    ("clusters", "management.cattle.io"),
)


def safe_concat_name(*parts: str) -> str:
    """wrangler's ``SafeConcatName``: joined by ``-``; 64 characters or more are cut with a sha256 suffix."""
    full = "-".join(parts)
    if len(full) < 64:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()
    if full[56].isascii() and (full[56].islower() or full[56].isdigit()):
        return full[:57] + "-" + digest[:5]
    return full[:56] + "-" + digest[:6]


def aggregated_name(role: str) -> str:
    return safe_concat_name(role, "aggregator")


def promoted_name(role: str) -> str:
    return safe_concat_name(role, "promoted")


def crtb_owner_label(crtb_name: str) -> str:
    return safe_concat_name(CRTB_OWNER, crtb_name)


def prtb_owner_label(prtb_name: str) -> str:
    return safe_concat_name(PRTB_OWNER, prtb_name)


def _binding_hash(namespace: str, role_kind: str, role_name: str, subject: Mapping[str, Any]) -> str:
    text = f"{namespace}{role_kind}{role_name}{subject['kind']}{subject['name']}"
    digest = base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")
    return digest[:10].lower()


def cluster_role_binding_name(role_name: str, subject: Mapping[str, Any]) -> str:
    """``crb-<hash>`` of (ClusterRole, role, subject kind, subject name)."""
    return "crb-" + _binding_hash("", "ClusterRole", role_name, subject)


def role_binding_name(namespace: str, role_name: str, subject: Mapping[str, Any]) -> str:
    """``rb-<hash>`` of (namespace, ClusterRole, role, subject kind, subject name)."""
    return "rb-" + _binding_hash(namespace, "ClusterRole", role_name, subject)


def binding_key(binding: Mapping[str, Any]) -> tuple[Any, ...]:
    """What Rancher compares to decide a binding is already right: its subjects and roleRef."""
    subjects = tuple(
        (s.get("kind", ""), s.get("apiGroup", ""), s.get("name", ""), s.get("namespace", ""))
        for s in binding.get("subjects") or ()
    )
    ref = binding.get("roleRef") or {}
    return subjects, (ref.get("apiGroup", ""), ref.get("kind", ""), ref.get("name", ""))


def subject_of(binding: Mapping[str, Any]) -> dict[str, str]:
    """The RBAC subject of a CRTB or PRTB: its user, group principal, group or (PRTB) service account."""
    name = str(binding.get("metadata", {}).get("name", ""))
    candidates = [
        ("User", binding.get("userName")),
        ("Group", binding.get("groupPrincipalName")),
        ("Group", binding.get("groupName")),
    ]
    chosen = [(kind, value) for kind, value in candidates if value]
    account = binding.get("serviceAccount")
    if len(chosen) > 1:
        raise ConfigError(f"role template binding {name!r} has more than one subject field set")
    if account:
        namespace, sep, sa_name = str(account).partition(":")
        if not sep:
            raise ConfigError(f"role template binding {name!r}: service account {account!r} is not ns:name")
        return {"kind": "ServiceAccount", "name": sa_name, "namespace": namespace}
    if not chosen:
        raise ConfigError(f"role template binding {name!r} has no subject")
    kind, value = chosen[0]
    name_value = str(value)
    if kind == "Group":
        # The proxy impersonates local groups without their ``local://`` (Rancher's authenticator drops
        # it), so the binding names them alike; Rancher itself binds the principal name as it is.
        name_value = name_value.removeprefix(LOCAL_PREFIX)
    return {"kind": kind, "apiGroup": RBAC_GROUP, "name": name_value}


def _role_ref(name: str) -> dict[str, str]:
    return {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name}


def _cluster_role(name: str, owner: str, rules: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {
                AGGREGATION_LABEL: name,
                CLUSTER_ROLE_OWNER_LABEL: owner,
                AGGREGATION_FEATURE_LABEL: "true",
            },
        },
        "rules": [dict(rule) for rule in rules],
    }


def _aggregating_role(template: Mapping[str, Any], transform: Any) -> dict[str, Any]:
    name = str(template["metadata"]["name"])
    own = transform(name)
    selectors = [{"matchLabels": {AGGREGATION_LABEL: own}}]
    for inherited in template.get("roleTemplateNames") or ():
        selectors.append({"matchLabels": {AGGREGATION_LABEL: aggregated_name(transform(inherited))}})
    aggregator = aggregated_name(own)
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": aggregator,
            "labels": {
                AGGREGATION_LABEL: aggregator,
                CLUSTER_ROLE_OWNER_LABEL: name,
                AGGREGATION_FEATURE_LABEL: "true",
            },
        },
        "aggregationRule": {"clusterRoleSelectors": selectors},
    }


def promoted_rules(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cluster-scoped rules a project template grants cluster-wide (``ExtractPromotedRules``)."""
    promoted: list[dict[str, Any]] = []
    for rule in rules:
        resources, groups = rule.get("resources") or (), rule.get("apiGroups") or ()
        for resource, group in _PROMOTED:
            if not ((resource in resources or "*" in resources) and (group in groups or "*" in groups)):
                continue
            out: dict[str, Any] = {"verbs": list(rule.get("verbs") or ()), "apiGroups": [group]}
            out["resources"] = [resource]
            names = list(rule.get("resourceNames") or ())
            if resource == "clusters":
                if names and "local" not in names:
                    continue
                names = ["local"]
            if names:
                out["resourceNames"] = names
            promoted.append(out)
    return promoted


def cluster_roles_for(
    template: Mapping[str, Any], *, inherited_promoted: bool = False
) -> list[dict[str, Any]]:
    """The ClusterRoles one RoleTemplate needs downstream (``clusterRolesForRoleTemplate``).

    Project templates with promoted rules (or inheriting some: ``inherited_promoted``) also get
    ``<rt>-promoted`` and its aggregator; non-external templates get a role with their rules;
    every template gets ``<rt>-aggregator``.
    """
    name = str(template["metadata"]["name"])
    rules = [dict(rule) for rule in template.get("rules") or ()]
    roles: list[dict[str, Any]] = []
    if template.get("context") == "project":
        promoted = promoted_rules(rules)
        if promoted:
            roles.append(_cluster_role(promoted_name(name), name, promoted))
        if promoted or inherited_promoted:
            roles.append(_aggregating_role(template, promoted_name))
    if not template.get("external"):
        roles.append(_cluster_role(safe_concat_name(name), name, rules))
    roles.append(_aggregating_role(template, safe_concat_name))
    return roles


def _bound_role(template_name: str, external: bool) -> str:
    return template_name if external else aggregated_name(template_name)


def _binding(
    kind: str, name: str, owner_label: str, role: str, subject: dict[str, str], *, rtb: Mapping[str, Any]
) -> dict[str, Any]:
    subjects = [subject]
    principal = str(rtb.get("groupPrincipalName") or "")
    if subject["kind"] == "Group" and principal.startswith(LOCAL_PREFIX):
        # Also the principal as Rancher binds it: ACE's identity keeps ``local://`` (kube-api-auth
        # sends the ClusterUserAttribute's groups as they are), so both paths find the binding.
        subjects.append({**subject, "name": principal})
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {owner_label: "true", AGGREGATION_FEATURE_LABEL: "true"}},
        "roleRef": _role_ref(role),
        "subjects": subjects,
    }


def _name_of(binding: Mapping[str, Any]) -> str:
    return str(binding["metadata"]["name"])


def cluster_role_binding_for(crtb: Mapping[str, Any], *, external: bool) -> dict[str, Any]:
    """The ClusterRoleBinding of a CRTB: to ``<rt>-aggregator``, or to the external role itself."""
    role = _bound_role(str(crtb["roleTemplateName"]), external)
    subject = subject_of(crtb)
    name = cluster_role_binding_name(role, subject)
    return _binding("ClusterRoleBinding", name, crtb_owner_label(_name_of(crtb)), role, subject, rtb=crtb)


def promoted_binding_for(prtb: Mapping[str, Any]) -> dict[str, Any]:
    """The ClusterRoleBinding of a PRTB to ``<rt>-promoted-aggregator`` (its cluster-wide rules)."""
    role = aggregated_name(promoted_name(str(prtb["roleTemplateName"])))
    subject = subject_of(prtb)
    name = cluster_role_binding_name(role, subject)
    return _binding("ClusterRoleBinding", name, prtb_owner_label(_name_of(prtb)), role, subject, rtb=prtb)


def role_binding_for(prtb: Mapping[str, Any], namespace: str, *, external: bool) -> dict[str, Any]:
    """The RoleBinding of a PRTB in one of its project's namespaces."""
    role = _bound_role(str(prtb["roleTemplateName"]), external)
    subject = subject_of(prtb)
    name = role_binding_name(namespace, role, subject)
    binding = _binding("RoleBinding", name, prtb_owner_label(_name_of(prtb)), role, subject, rtb=prtb)
    binding["metadata"]["namespace"] = namespace
    return binding


def project_of(prtb: Mapping[str, Any]) -> tuple[str, str]:
    """``(cluster, project)`` from a PRTB's ``projectName`` (``<cluster>:<project>``)."""
    cluster, _, project = str(prtb.get("projectName", "")).partition(":")
    return cluster, project

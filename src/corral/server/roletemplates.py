"""The built-in RoleTemplates bindings refer to, as Rancher ships them (``pkg/data/management/role_data.go``).

Cluster context: ``cluster-owner``, ``cluster-member``. Project context: ``project-owner``,
``project-member``, ``read-only`` (there is no cluster-context read-only template). The project ones
inherit Kubernetes' ``admin`` / ``edit`` / ``view`` through ``roleTemplateNames``; those, and
``cluster-admin``, are external hidden templates without rules of their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

logger = logging.getLogger(__name__)

__all__ = ["BOOTSTRAP_LABEL", "BUILTIN", "PolicyRule", "RoleTemplateSpec", "by_name", "role_template"]

BOOTSTRAP_LABEL: Final = {"authz.management.cattle.io/bootstrapping": "default-roletemplate"}
BOOTSTRAPPED_ANNOTATION: Final = "authz.management.cattle.io/bootstrapped-role"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRule:
    """An RBAC rule; empty tuples are left out of the JSON, like Go's nil slices with omitempty."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"verbs": list(self.verbs)}
        for key, values in (
            ("apiGroups", self.api_groups),
            ("resources", self.resources),
            ("resourceNames", self.resource_names),
            ("nonResourceURLs", self.non_resource_urls),
        ):
            if values:
                data[key] = list(values)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleTemplateSpec:
    """One built-in RoleTemplate (``builtin: true``)."""

    name: str
    display_name: str
    context: str
    external: bool = False
    hidden: bool = False
    administrative: bool = False
    rules: tuple[PolicyRule, ...] = ()
    role_template_names: tuple[str, ...] = ()
    creator_default: bool = False
    """Made the default for new clusters (cluster-owner) or projects (project-owner) at bootstrap."""


def _rule(
    groups: str | tuple[str, ...], resources: str | tuple[str, ...], *verbs: str, names: str = ""
) -> PolicyRule:
    return PolicyRule(
        verbs=verbs,
        api_groups=(groups,) if isinstance(groups, str) else groups,
        resources=(resources,) if isinstance(resources, str) else resources,
        resource_names=(names,) if names else (),
    )


_READ: Final = ("get", "list", "watch")
_GET_WATCH: Final = ("get", "watch")
_CRUD: Final = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
_PROMETHEUS: Final = ("prometheuses", "prometheusrules", "servicemonitors")
_ISTIO_NETWORKING: Final = (
    "destinationrules",
    "envoyfilters",
    "gateways",
    "serviceentries",
    "sidecars",
    "virtualservices",
)
_ISTIO_CONFIG: Final = (
    "apikeys", "authorizations", "checknothings", "circonuses", "deniers", "fluentds", "handlers",
    "kubernetesenvs", "kuberneteses", "listcheckers", "listentries", "logentries", "memquotas", "metrics",
    "opas", "prometheuses", "quotas", "quotaspecbindings", "quotaspecs", "rbacs", "reportnothings", "rules",
    "solarwindses", "stackdrivers", "statsds", "stdios",
)  # fmt: skip
_ISTIO_RBAC: Final = ("rbacconfigs", "serviceroles", "servicerolebindings")
_GATEWAY_ROUTES: Final = ("httproutes", "grpcroutes", "tcproutes", "tlsroutes", "udproutes")
_TRAEFIK: Final = (
    "ingressroutes", "ingressroutetcps", "ingressrouteudps", "middlewares", "middlewaretcps", "tlsoptions",
    "tlsstores", "serverstransports", "serverstransporttcps",
)  # fmt: skip
_CATALOG_READ: Final = tuple(
    _rule("catalog.cattle.io", r, *_READ) for r in ("clusterrepos", "operations", "releases", "apps")
)
_LOCAL_CLUSTER_GET: Final = _rule("management.cattle.io", "clusters", "get", names="local")


def _istio(*verbs: str) -> tuple[PolicyRule, ...]:
    return (
        _rule("monitoring.coreos.com", _PROMETHEUS, *verbs),
        _rule("networking.istio.io", _ISTIO_NETWORKING, *verbs),
        _rule("config.istio.io", _ISTIO_CONFIG, *verbs),
        _rule("authentication.istio.io", "policies", *verbs),
        _rule("rbac.istio.io", _ISTIO_RBAC, *verbs),
        _rule("security.istio.io", "authorizationpolicies", *verbs),
    )


CLUSTER_OWNER: Final = RoleTemplateSpec(
    name="cluster-owner",
    display_name="Cluster Owner",
    context="cluster",
    administrative=True,
    creator_default=True,
    rules=(
        _rule("*", "*", "*"),
        _rule("management.cattle.io", "clusters", "own"),
        _rule("provisioning.cattle.io", "clusters", "*"),
        _rule("rke.cattle.io", "etcdsnapshots", *_READ),
        _rule("cluster.x-k8s.io", "machines", "*"),
        _rule("rke-machine-config.cattle.io", "*", "*"),
        _rule("rke-machine.cattle.io", "*", "*"),
        _rule("management.cattle.io", "projects", "updatepsa"),
        _rule("management.cattle.io", "clusterproxyconfigs", "*"),
        _rule("operation.cattle.io", "*", "*"),
        PolicyRule(verbs=("*",), non_resource_urls=("*",)),
    ),
)

CLUSTER_MEMBER: Final = RoleTemplateSpec(
    name="cluster-member",
    display_name="Cluster Member",
    context="cluster",
    rules=(
        _rule("ui.cattle.io", "navlinks", *_READ),
        _rule("management.cattle.io", "clusterroletemplatebindings", *_READ),
        _rule("management.cattle.io", "projects", "create"),
        _rule("management.cattle.io", ("nodes", "nodepools"), *_READ),
        _rule("", "nodes", *_READ),
        _rule("", "persistentvolumes", *_READ),
        _rule("storage.k8s.io", "storageclasses", *_READ),
        _rule("apiregistration.k8s.io", "apiservices", *_READ),
        _rule("management.cattle.io", "clusterevents", *_READ),
        _rule("catalog.cattle.io", "clusterrepos", *_READ),
        _LOCAL_CLUSTER_GET,
        _rule("cluster.x-k8s.io", "machines", *_GET_WATCH),
        _rule("cluster.x-k8s.io", "machinedeployments", *_GET_WATCH),
        _rule("rke-machine-config.cattle.io", "*", *_GET_WATCH),
        _rule("rke-machine.cattle.io", "*", *_GET_WATCH),
        _rule("metrics.k8s.io", ("nodemetrics", "nodes"), *_READ),
    ),
)

PROJECT_OWNER: Final = RoleTemplateSpec(
    name="project-owner",
    display_name="Project Owner",
    context="project",
    creator_default=True,
    role_template_names=("admin",),
    rules=(
        _rule("ui.cattle.io", "navlinks", *_READ),
        _rule("", "nodes", *_READ),
        _rule("management.cattle.io", "projectroletemplatebindings", "*"),
        _rule("", "namespaces", "create"),
        _rule("", "persistentvolumes", *_READ),
        _rule("storage.k8s.io", "storageclasses", *_READ),
        _rule("apiregistration.k8s.io", "apiservices", *_READ),
        _rule("", "persistentvolumeclaims", "*"),
        _rule("metrics.k8s.io", "pods", "*"),
        _rule("management.cattle.io", "clusterevents", *_READ),
        *_istio("*"),
        _rule("management.cattle.io", "projects", "own"),
        *_CATALOG_READ,
        _LOCAL_CLUSTER_GET,
    ),
)

PROJECT_MEMBER: Final = RoleTemplateSpec(
    name="project-member",
    display_name="Project Member",
    context="project",
    role_template_names=("edit",),
    rules=(
        _rule("ui.cattle.io", "navlinks", *_READ),
        _rule("management.cattle.io", "projectroletemplatebindings", *_READ),
        _rule("", "namespaces", "create"),
        _rule("", "persistentvolumes", *_READ),
        _rule("storage.k8s.io", "storageclasses", *_READ),
        _rule("apiregistration.k8s.io", "apiservices", *_READ),
        _rule("", "persistentvolumeclaims", "*"),
        _rule("metrics.k8s.io", "pods", "*"),
        _rule("management.cattle.io", "clusterevents", *_READ),
        *_istio("*"),
        _rule("security.istio.io", "requestauthentications", *_CRUD),
        _rule("telemetry.istio.io", "telemetries", *_CRUD),
        _rule("gateway.networking.k8s.io", _GATEWAY_ROUTES, *_CRUD),
        *_CATALOG_READ,
        _LOCAL_CLUSTER_GET,
        _rule("traefik.io", _TRAEFIK, *_CRUD),
    ),
)

READ_ONLY: Final = RoleTemplateSpec(
    name="read-only",
    display_name="Read-only",
    context="project",
    role_template_names=("view",),
    rules=(
        _rule("ui.cattle.io", "navlinks", *_READ),
        _rule("management.cattle.io", "projectroletemplatebindings", *_READ),
        _rule("", "persistentvolumes", *_READ),
        _rule("storage.k8s.io", "storageclasses", *_READ),
        _rule("apiregistration.k8s.io", "apiservices", *_READ),
        _rule("", "persistentvolumeclaims", *_READ),
        _rule("metrics.k8s.io", "pods", *_READ),
        _rule("management.cattle.io", "clusterevents", *_READ),
        *_istio(*_READ),
        *_CATALOG_READ,
        _LOCAL_CLUSTER_GET,
    ),
)

KUBERNETES_DEFAULTS: Final = (
    RoleTemplateSpec(
        name="cluster-admin",
        display_name="Kubernetes cluster-admin",
        context="cluster",
        external=True,
        hidden=True,
        administrative=True,
    ),
    RoleTemplateSpec(
        name="admin", display_name="Kubernetes admin", context="project", external=True, hidden=True
    ),
    RoleTemplateSpec(
        name="edit", display_name="Kubernetes edit", context="project", external=True, hidden=True
    ),
    RoleTemplateSpec(
        name="view", display_name="Kubernetes view", context="project", external=True, hidden=True
    ),
)

BUILTIN: Final[tuple[RoleTemplateSpec, ...]] = (
    *KUBERNETES_DEFAULTS,
    CLUSTER_OWNER,
    CLUSTER_MEMBER,
    PROJECT_OWNER,
    PROJECT_MEMBER,
    READ_ONLY,
)


def by_name(name: str) -> RoleTemplateSpec:
    """The built-in template called ``name``; KeyError names the known ones otherwise."""
    for spec in BUILTIN:
        if spec.name == name:
            return spec
    raise KeyError(f"no built-in RoleTemplate {name!r}; known: {', '.join(s.name for s in BUILTIN)}")


def role_template(spec: RoleTemplateSpec, *, bootstrapped: bool = True) -> dict[str, Any]:
    """The RoleTemplate object as Rancher's reconcile writes it (JSON omitempty respected).

    With ``bootstrapped`` (a first start), cluster-owner and project-owner also carry the creator-default
    flag and the bootstrapped-role annotation that Rancher's bootstrapDefaultRoles adds once.
    """
    metadata: dict[str, Any] = {"name": spec.name, "labels": dict(BOOTSTRAP_LABEL)}
    body: dict[str, Any] = {
        "apiVersion": "management.cattle.io/v3",
        "kind": "RoleTemplate",
        "metadata": metadata,
        "displayName": spec.display_name,
        "description": "",
        "builtin": True,
        "external": spec.external,
        "hidden": spec.hidden,
        "context": spec.context,
    }
    if spec.rules:
        body["rules"] = [rule.to_json() for rule in spec.rules]
    if spec.role_template_names:
        body["roleTemplateNames"] = list(spec.role_template_names)
    if spec.administrative:
        body["administrative"] = True
    if bootstrapped and spec.creator_default:
        metadata["annotations"] = {BOOTSTRAPPED_ANNOTATION: "true"}
        body["clusterCreatorDefault" if spec.context == "cluster" else "projectCreatorDefault"] = True
    return body

"""The per-user impersonation objects Rancher keeps in each downstream cluster, as desired manifests.

For user ``u-abcde`` the proxy authenticates downstream as ServiceAccount
``cattle-impersonation-system/cattle-impersonation-u-abcde``, whose ClusterRole allows impersonating
only that user, its groups and its extras (``pkg/impersonation/impersonation.go``; the token Secret
from ``pkg/serviceaccounttoken/secret.go``). These functions return plain dicts; a controller applies them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "IMPERSONATION_NAMESPACE",
    "IMPERSONATION_PREFIX",
    "IMPERSONATOR_LABEL",
    "SECRET_REF_ANNOTATION",
    "cluster_role",
    "cluster_role_binding",
    "desired_rules",
    "impersonation_name",
    "is_token_secret_for",
    "namespace",
    "parse_secret_ref",
    "role_drift",
    "secret_ref",
    "service_account",
    "token_secret_template",
]

IMPERSONATION_NAMESPACE: Final = "cattle-impersonation-system"
IMPERSONATION_PREFIX: Final = "cattle-impersonation-"
IMPERSONATOR_LABEL: Final = "authz.cluster.cattle.io/impersonator"
SECRET_REF_ANNOTATION: Final = "rancher.io/service-account.secret-ref"  # noqa: S105 - a name, not a secret
"""On the ServiceAccount: ``<namespace>/<secret name>`` of its token Secret."""
SA_SECRET_LABEL: Final = "cattle.io/service-account.name"  # noqa: S105 - a name, not a secret
SA_NAME_ANNOTATION: Final = "kubernetes.io/service-account.name"
SA_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"  # noqa: S105 - a name, not a secret
RBAC_GROUP: Final = "rbac.authorization.k8s.io"
EXTRA_PRINCIPAL_ID: Final = "principalid"
EXTRA_USERNAME: Final = "username"
EXTRA_REQUEST_TOKEN_ID: Final = "requesttokenid"  # noqa: S105 - a name, not a secret
EXTRA_REQUEST_HOST: Final = "requesthost"

_LABELS: Final = {IMPERSONATOR_LABEL: "true"}
_RULE_FIELDS: Final = ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs")


def impersonation_name(user: UserInfo) -> str:
    """``cattle-impersonation-<userID>``: the ClusterRole, ServiceAccount and ClusterRoleBinding name."""
    return IMPERSONATION_PREFIX + user.name


def _impersonate(api_group: str, resource: str, names: Sequence[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"verbs": ["impersonate"], "apiGroups": [api_group], "resources": [resource]}
    if names is not None:
        rule["resourceNames"] = list(names)
    return rule


def desired_rules(user: UserInfo) -> list[dict[str, Any]]:
    """The impersonation ClusterRole's rules, in Rancher's order (the order matters: see `role_drift`).

    users ``[<userID>]``; ``userextras/requesttokenid`` and ``userextras/requesthost`` for any value;
    groups, deduplicated and sorted, always with ``system:authenticated`` and
    ``system:cattle:authenticated``; then ``userextras/principalid`` and ``userextras/username`` (each
    list sorted, duplicates kept) when the user has any.
    """
    rules = [
        _impersonate("", "users", [user.name]),
        _impersonate("authentication.k8s.io", f"userextras/{EXTRA_REQUEST_TOKEN_ID}"),
        _impersonate("authentication.k8s.io", f"userextras/{EXTRA_REQUEST_HOST}"),
        _impersonate("", "groups", sorted({*AUTHENTICATED_GROUPS, *user.groups})),
    ]
    for key in (EXTRA_PRINCIPAL_ID, EXTRA_USERNAME):
        values = user.extras.get(key, ())
        if values:
            rules.append(_impersonate("authentication.k8s.io", f"userextras/{key}", sorted(values)))
    return rules


def _owner(api_version: str, kind: str, name: str, uid: str) -> dict[str, str]:
    if not uid:
        raise ConfigError(f"ownerReference to {kind} {name!r}: the owner's uid is empty")
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid}


def namespace() -> dict[str, Any]:
    """The ``cattle-impersonation-system`` Namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": IMPERSONATION_NAMESPACE, "labels": dict(_LABELS)},
    }


def cluster_role(user: UserInfo) -> dict[str, Any]:
    """The user's impersonation ClusterRole (it owns the other per-user objects)."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": impersonation_name(user), "labels": dict(_LABELS)},
        "rules": desired_rules(user),
    }


def service_account(user: UserInfo, *, cluster_role_uid: str) -> dict[str, Any]:
    """The user's ServiceAccount, owned by the ClusterRole so that deleting the role removes it."""
    name = impersonation_name(user)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": IMPERSONATION_NAMESPACE,
            "labels": dict(_LABELS),
            "ownerReferences": [_owner(f"{RBAC_GROUP}/v1", "ClusterRole", name, cluster_role_uid)],
        },
    }


def token_secret_template(
    *, service_account_name: str, service_account_uid: str, namespace: str = IMPERSONATION_NAMESPACE
) -> dict[str, Any]:
    """The legacy token Secret Rancher creates for a ServiceAccount (SecretTemplate).

    generateName ``<sa>-token-``; Kubernetes' token controller fills ``data.token``. Once created, the
    ServiceAccount is annotated with `secret_ref` of the Secret.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "generateName": f"{service_account_name}-token-",
            "namespace": namespace,
            "ownerReferences": [_owner("v1", "ServiceAccount", service_account_name, service_account_uid)],
            "annotations": {SA_NAME_ANNOTATION: service_account_name},
            "labels": {SA_SECRET_LABEL: service_account_name},
        },
        "type": SA_TOKEN_TYPE,
    }


def secret_ref(*, namespace: str, name: str) -> dict[str, str]:
    """The annotation that ties a ServiceAccount to its token Secret."""
    return {SECRET_REF_ANNOTATION: f"{namespace}/{name}"}


def parse_secret_ref(value: str) -> tuple[str, str]:
    """``(namespace, name)`` from the annotation value; exactly one ``/`` as Rancher requires."""
    parts = value.split("/")
    if len(parts) != 2:
        raise ConfigError(f"{SECRET_REF_ANNOTATION}: expected '<namespace>/<name>', got {value!r}")
    return parts[0], parts[1]


def is_token_secret_for(secret: Mapping[str, Any], service_account_name: str) -> bool:
    """Whether a Secret found by label is the ServiceAccount's token Secret (otherwise Rancher deletes it)."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return secret.get("type") == SA_TOKEN_TYPE and annotations.get(SA_NAME_ANNOTATION) == service_account_name


def cluster_role_binding(user: UserInfo, *, cluster_role_uid: str) -> dict[str, Any]:
    """Binds the ClusterRole to the ServiceAccount; owned by the ClusterRole."""
    name = impersonation_name(user)
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "ownerReferences": [_owner(f"{RBAC_GROUP}/v1", "ClusterRole", name, cluster_role_uid)],
            "labels": dict(_LABELS),
        },
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": IMPERSONATION_NAMESPACE}],
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
    }


def _as_go(rule: Mapping[str, Any]) -> tuple[tuple[str, ...] | None, ...]:
    # A field that is absent or null decodes to a nil slice, `[]` to an empty one; DeepEqual tells them apart.
    return tuple(None if rule.get(key) is None else tuple(rule[key]) for key in _RULE_FIELDS)


def role_drift(
    actual_rules: Sequence[Mapping[str, Any]] | None, desired_rules: Sequence[Mapping[str, Any]] | None
) -> bool:
    """True when Rancher would rewrite the role: ``reflect.DeepEqual`` of the PolicyRule lists is false.

    Order matters (of rules and of every list in them), an absent list differs from an empty one, and
    keys that are not PolicyRule fields are ignored (Go drops them when decoding).
    """
    if (actual_rules is None) != (desired_rules is None):
        return True
    actual = [_as_go(rule) for rule in actual_rules or ()]
    return actual != [_as_go(rule) for rule in desired_rules or ()]

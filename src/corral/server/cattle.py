"""Rancher's own credential in a downstream cluster: ServiceAccount ``cattle-system/cattle`` as cattle-admin.

What the cluster agent's manifest installs (``pkg/systemtemplate/template.go``: the ``cattle-system``
namespace, the ``cattle`` ServiceAccount, ClusterRole ``cattle-admin`` with every verb on every
resource and non-resource URL, ClusterRoleBinding ``cattle-admin-binding``) and the long-lived legacy
token Secret the agent ensures for it and reports when it registers. Run with the cluster's admin
credentials; applying it twice changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from typing import Any, Final

from corral.errors import AlreadyExistsError, ConflictError, NotFoundError
from corral.k8s import KubeClient
from corral.server import impersonation as imp
from corral.server.proxy_interfaces import ImpersonationAccountError

logger = logging.getLogger(__name__)

__all__ = ["CATTLE_ADMIN", "CATTLE_NAMESPACE", "CATTLE_SA", "cattle_manifests", "ensure_cattle_credential"]

CATTLE_NAMESPACE: Final = "cattle-system"
CATTLE_SA: Final = "cattle"
CATTLE_ADMIN: Final = "cattle-admin"
_CREATOR: Final = {"cattle.io/creator": "norman"}


def cattle_manifests() -> list[tuple[str, dict[str, Any]]]:
    """``(collection, object)`` pairs: namespace, ServiceAccount, ClusterRole, ClusterRoleBinding."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    return [
        (
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CATTLE_NAMESPACE}},
        ),
        (
            f"/api/v1/namespaces/{CATTLE_NAMESPACE}/serviceaccounts",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": CATTLE_SA, "namespace": CATTLE_NAMESPACE},
            },
        ),
        (
            f"{rbac}/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": CATTLE_ADMIN, "labels": dict(_CREATOR)},
                "rules": [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]},
                ],
            },
        ),
        (
            f"{rbac}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "cattle-admin-binding", "labels": dict(_CREATOR)},
                "subjects": [{"kind": "ServiceAccount", "name": CATTLE_SA, "namespace": CATTLE_NAMESPACE}],
                "roleRef": {
                    "kind": "ClusterRole",
                    "name": CATTLE_ADMIN,
                    "apiGroup": "rbac.authorization.k8s.io",
                },
            },
        ),
    ]


def ensure_cattle_credential(admin: KubeClient, *, timeout_seconds: float = 30.0) -> str:
    """Install the ``cattle`` account and return its long-lived token (never logged)."""
    for collection, obj in cattle_manifests():
        with contextlib.suppress(AlreadyExistsError):
            admin.create(collection, obj)
    accounts = f"/api/v1/namespaces/{CATTLE_NAMESPACE}/serviceaccounts"
    secrets = f"/api/v1/namespaces/{CATTLE_NAMESPACE}/secrets"
    account = admin.get(f"{accounts}/{CATTLE_SA}")
    ref = (account["metadata"].get("annotations") or {}).get(imp.SECRET_REF_ANNOTATION)
    secret: dict[str, Any] | None = None
    if ref:
        _, name = imp.parse_secret_ref(ref)
        with contextlib.suppress(NotFoundError):
            secret = admin.get(f"{secrets}/{name}")
    if secret is None:
        template = imp.token_secret_template(
            service_account_name=CATTLE_SA,
            service_account_uid=account["metadata"]["uid"],
            namespace=CATTLE_NAMESPACE,
        )
        secret = admin.create(secrets, template)
        account["metadata"].setdefault("annotations", {}).update(
            imp.secret_ref(namespace=CATTLE_NAMESPACE, name=secret["metadata"]["name"])
        )
        try:
            admin.replace(f"{accounts}/{CATTLE_SA}", account)
        except ConflictError:
            admin.delete(f"{secrets}/{secret['metadata']['name']}")
            return ensure_cattle_credential(admin, timeout_seconds=timeout_seconds)
    deadline = time.monotonic() + timeout_seconds
    path = f"{secrets}/{secret['metadata']['name']}"
    while True:
        raw = (secret.get("data") or {}).get("token")
        if raw:
            return base64.b64decode(raw).decode()
        if time.monotonic() >= deadline:
            raise ImpersonationAccountError(
                f"the token secret {path} of {CATTLE_NAMESPACE}/{CATTLE_SA} was not populated after "
                f"{timeout_seconds:g}s (is kube-controller-manager's token controller running?)"
            )
        time.sleep(0.1)
        secret = admin.get(path)

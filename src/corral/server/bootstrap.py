"""What a server process puts into the upstream before it serves: CRDs, role templates, settings, admin.

Every step is idempotent and safe when several processes start at once against one upstream: CRDs,
role templates, global roles and setting defaults are server-side applied; the ``local`` Cluster is
applied with its status; the admin user is created once (a ConfigMap claims its name first), as
Rancher's BootstrapAdmin does with its ``admincreated`` marker.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from corral.auth import passwords
from corral.auth.tokens import generate_name
from corral.errors import AlreadyExistsError, CorralError, KubeAPIError
from corral.k8s.aio import AsyncKubeClient, wait_for
from corral.server import crds, roletemplates
from corral.server.state import API_VERSION, JSON, MANAGEMENT, ServerState

logger = logging.getLogger(__name__)

__all__ = [
    "ADMIN_LABEL",
    "DEFAULT_SETTINGS",
    "BootstrapError",
    "BootstrapSettings",
    "apply_crds",
    "bootstrap",
    "ensure_admin",
]

CATTLE_SYSTEM: Final = "cattle-system"
GLOBAL_DATA: Final = "cattle-global-data"
ADMIN_LABEL: Final = {"authz.management.cattle.io/bootstrapping": "admin-user"}
ADMIN_CREATED: Final = "admincreated"
ADMIN_CLAIM: Final = "corral-admin-claim"
"""ConfigMap in cattle-system naming the admin user while it is being created (one name for all processes)."""
LOCAL_CLUSTER: Final = "local"
PASSWORD_ENV: Final = "CORRAL_BOOTSTRAP_PASSWORD"  # noqa: S105 - a variable name
GENERATED_PASSWORD_LENGTH: Final = 24

DEFAULT_SETTINGS: Final[Mapping[str, str]] = {
    "kubeconfig-default-token-ttl-minutes": "43200",
    "kubeconfig-generate-token": "true",
    "auth-token-max-ttl-minutes": "129600",
    "auth-token-default-ttl-minutes": "129600",
    "auth-user-session-ttl-minutes": "960",
    "auth-user-session-idle-ttl-minutes": "960",
    "cacerts": "",
    "server-url": "",
    "first-login": "false",
    "auth-user-info-max-age-seconds": "3600",
    "auth-user-info-resync-cron": "0 0 * * *",
}
"""Rancher's defaults (``pkg/settings/setting.go``) of the settings the server reads."""

GLOBAL_ROLES: Final[tuple[JSON, ...]] = (
    {
        "metadata": {"name": "admin"},
        "displayName": "Admin",
        "builtin": True,
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    },
    {
        "metadata": {"name": "user"},
        "displayName": "Standard User",
        "builtin": True,
        "newUserDefault": True,
        "rules": [
            {"apiGroups": ["management.cattle.io"], "resources": ["clusters"], "verbs": ["create"]},
            {
                "apiGroups": ["management.cattle.io"],
                "resources": ["principals", "roletemplates"],
                "verbs": ["get", "list", "watch"],
            },
        ],
    },
)


class BootstrapError(CorralError):
    """The upstream could not be prepared (CRDs never established, admin not creatable, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapSettings:
    """What this process contributes: its CA, its URL, the admin password source and where to keep it."""

    server_url: str
    cacerts: str
    """PEM of the CA that signed the server's serving certificate (the ``cacerts`` setting)."""
    upstream_server: str
    upstream_ca_pem: str | None = field(default=None, repr=False)
    bootstrap_password: str | None = field(default=None, repr=False)
    """From ``--bootstrap-password-file`` or `PASSWORD_ENV`; None generates one into ``data_dir``."""
    data_dir: Path | None = None
    crd_timeout_seconds: float = 60.0


async def apply_crds(upstream: AsyncKubeClient, *, timeout_seconds: float = 60.0) -> None:
    """Server-side apply every management CRD, then wait until each is Established."""
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    manifests = crds.crds()
    for manifest in manifests:
        await upstream.apply(path, manifest, force=True)
    for manifest in manifests:
        name = manifest["metadata"]["name"]

        async def established(crd_name: str = name) -> bool:
            obj = await upstream.get(f"{path}/{crd_name}")
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        try:
            await wait_for(established, timeout_seconds=timeout_seconds, what=f"CRD {name} to be Established")
        except TimeoutError as exc:
            raise BootstrapError(str(exc)) from None


async def _apply(upstream: AsyncKubeClient, plural: str, obj: JSON, *, kind: str) -> JSON:
    body = {"apiVersion": API_VERSION, "kind": kind, **obj}
    return await upstream.apply(f"{MANAGEMENT}/{plural}", body, force=True)


async def _ensure_namespaces(upstream: AsyncKubeClient) -> None:
    for name in (CATTLE_SYSTEM, GLOBAL_DATA, passwords.PASSWORDS_NAMESPACE, "local"):
        with contextlib.suppress(AlreadyExistsError):
            await upstream.create(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )


async def _apply_settings(upstream: AsyncKubeClient, settings: BootstrapSettings) -> None:
    for name, default in DEFAULT_SETTINGS.items():
        await _apply(upstream, "settings", {"metadata": {"name": name}, "default": default}, kind="Setting")
    # The values this process is configured with (every process of one server has the same ones).
    for name, value in (("cacerts", settings.cacerts), ("server-url", settings.server_url)):
        body = {"apiVersion": API_VERSION, "kind": "Setting", "metadata": {"name": name}, "value": value}
        await upstream.apply(f"{MANAGEMENT}/settings", body, force=True, field_manager="corral-configured")


async def _apply_local_cluster(upstream: AsyncKubeClient, settings: BootstrapSettings) -> None:
    await _apply(
        upstream,
        "clusters",
        {
            "metadata": {"name": LOCAL_CLUSTER},
            "spec": {"displayName": LOCAL_CLUSTER, "internal": True, "description": ""},
        },
        kind="Cluster",
    )
    ca = base64.b64encode(settings.upstream_ca_pem.encode()).decode() if settings.upstream_ca_pem else ""
    status = {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": LOCAL_CLUSTER},
        "status": {
            "driver": "imported",
            "apiEndpoint": settings.upstream_server,
            "caCert": ca,
            "conditions": [
                {"type": cond, "status": "True"} for cond in ("Provisioned", "Ready", "Connected")
            ],
        },
    }
    await upstream.request(
        "PATCH",
        f"{MANAGEMENT}/clusters/{LOCAL_CLUSTER}/status",
        body=status,
        query=[("fieldManager", "corral"), ("force", "true")],
        headers=[("Content-Type", "application/apply-patch+yaml")],
    )


def _read_password(settings: BootstrapSettings) -> tuple[str, bool]:
    """The admin's first password and whether it was generated here."""
    if settings.bootstrap_password:
        return settings.bootstrap_password, False
    from_env = os.environ.get(PASSWORD_ENV, "")
    if from_env:
        return from_env, False
    return secrets.token_urlsafe(GENERATED_PASSWORD_LENGTH)[:GENERATED_PASSWORD_LENGTH], True


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    path.chmod(0o600)


async def ensure_admin(state: ServerState, settings: BootstrapSettings) -> str:
    """The admin user's id, creating it (user, password Secret, admin GlobalRoleBinding) if there is none."""
    upstream = state.upstream
    ((label, value),) = ADMIN_LABEL.items()
    existing = [u for u in state.users.list() if (u["metadata"].get("labels") or {}).get(label) == value]
    if existing:
        return str(existing[0]["metadata"]["name"])
    claim_path = f"/api/v1/namespaces/{CATTLE_SYSTEM}/configmaps"
    name = generate_name("user-")
    try:
        await upstream.create(
            claim_path,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": ADMIN_CLAIM},
                "data": {"user": name},
            },
        )
    except AlreadyExistsError:
        claim = await upstream.get(f"{claim_path}/{ADMIN_CLAIM}")
        name = str((claim.get("data") or {}).get("user", name))
    password, generated = _read_password(settings)
    # Every step tolerates another process having done it: the claim makes the name the same for all.
    try:
        user = await state.create(
            "users",
            {
                "metadata": {"name": name, "labels": dict(ADMIN_LABEL)},
                "displayName": "Default Admin",
                "username": "admin",
                "principalIds": [f"local://{name}"],
                "enabled": True,
                "mustChangePassword": generated or password == "admin",  # noqa: S105 - Rancher's check
            },
        )
        created_here = True
    except AlreadyExistsError:
        user = await upstream.get(f"{MANAGEMENT}/users/{name}")
        await state.users.observe(user)
        created_here = False
    record = passwords.hash_password(password)
    secret = passwords.password_secret(user_name=name, user_uid=str(user["metadata"]["uid"]), record=record)
    try:
        await upstream.create(f"/api/v1/namespaces/{passwords.PASSWORDS_NAMESPACE}/secrets", secret)
        password_set = True
    except AlreadyExistsError:
        password_set = False
    if password_set and generated and settings.data_dir is not None:
        _write_private(settings.data_dir / "admin-password", password)
        logger.warning("generated the admin password into %s", settings.data_dir / "admin-password")
    elif password_set and generated:
        logger.warning("generated an admin password but no data directory was given to keep it")
    if not state.globalrolebindings.by_index("user", name):
        with contextlib.suppress(AlreadyExistsError):
            await state.create(
                "globalrolebindings",
                {
                    "metadata": {"name": f"globalrolebinding-{name}", "labels": dict(ADMIN_LABEL)},
                    "userName": name,
                    "globalRoleName": "admin",
                },
            )
    await _bind_cluster_admin(upstream, name)
    with contextlib.suppress(AlreadyExistsError):
        await upstream.create(
            claim_path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ADMIN_CREATED}}
        )
    if created_here:
        logger.info("created the default admin user %s", name)
    return name


async def _bind_cluster_admin(upstream: AsyncKubeClient, user_id: str) -> None:
    """Rancher gives global admins cluster-admin on the local cluster (``globaladmin-<user>``)."""
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"globaladmin-{user_id}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user_id}],
    }
    await upstream.apply("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body, force=True)


async def bootstrap(state: ServerState, settings: BootstrapSettings) -> str:
    """Prepare the upstream and start the state's informers; returns the admin user's id."""
    upstream = state.upstream
    try:
        await apply_crds(upstream, timeout_seconds=settings.crd_timeout_seconds)
        await _ensure_namespaces(upstream)
        for spec in roletemplates.BUILTIN:
            await upstream.apply(f"{MANAGEMENT}/roletemplates", roletemplates.role_template(spec), force=True)
        for role in GLOBAL_ROLES:
            await _apply(upstream, "globalroles", role, kind="GlobalRole")
        await _apply_settings(upstream, settings)
        await _apply_local_cluster(upstream, settings)
        await state.start()
        return await ensure_admin(state, settings)
    except KubeAPIError as exc:
        raise BootstrapError(f"preparing the upstream at {upstream.config.server}: {exc}") from None

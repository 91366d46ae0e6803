"""The per-user impersonation accounts of one downstream cluster, ensured as Rancher's impersonator does.

`ImpersonationAccountSet.token_for` is the proxy's hot path: a user whose account was ensured with
the same rules gets the cached token at once; otherwise (first request, a group change, an object
deleted downstream) the role is checked and updated, missing objects are created (namespace, role,
ServiceAccount and its token Secret, binding; create-or-get, so racing writers converge), and the
token Secret is awaited as Rancher does (``pkg/impersonation/impersonation.go`` ``setup``,
``pkg/serviceaccounttoken/secret.go``). One lock per user keeps concurrent first requests of one user
to one set of writes; different users proceed in parallel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from corral.auth.identity import UserInfo
from corral.errors import AlreadyExistsError, ConfigError, ConflictError, KubeAPIError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.model.trace import Event, ImpersonationAccountEnsured
from corral.server import impersonation as imp
from corral.server.proxy_interfaces import ImpersonationAccountError, ServiceAccountTokenError

logger = logging.getLogger(__name__)

__all__ = ["ImpersonationAccountSet", "request_token"]

TraceSink = Callable[[Event], None]
NS: Final = imp.IMPERSONATION_NAMESPACE
RBAC: Final = "/apis/rbac.authorization.k8s.io/v1"
CLUSTER_ROLES: Final = f"{RBAC}/clusterroles"
CLUSTER_ROLE_BINDINGS: Final = f"{RBAC}/clusterrolebindings"
SERVICE_ACCOUNTS: Final = f"/api/v1/namespaces/{NS}/serviceaccounts"
SECRETS: Final = f"/api/v1/namespaces/{NS}/secrets"


@dataclass(frozen=True, slots=True)
class _Ready:
    rules: list[dict[str, Any]]
    token: str = field(repr=False)
    key: tuple[object, ...] = ()
    """`_rules_key` of the identity the rules were built for: equal keys mean equal rules."""


def _rules_key(user: UserInfo) -> tuple[object, ...]:
    """What `imp.desired_rules` reads of a user, so a repeat caller skips building and comparing rules."""
    extras = user.extras
    return (user.name, user.groups, extras.get(imp.EXTRA_PRINCIPAL_ID), extras.get(imp.EXTRA_USERNAME))


async def _get(client: AsyncKubeClient, path: str) -> dict[str, Any] | None:
    try:
        return await client.get(path)
    except NotFoundError:
        return None


async def _create_or_get(
    client: AsyncKubeClient, collection: str, obj: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Create ``obj``; when it already exists (another writer won), read it. ``(object, created)``."""
    try:
        return await client.create(collection, obj), True
    except AlreadyExistsError:
        return await client.get(f"{collection}/{obj['metadata']['name']}"), False


def _token_of(secret: Mapping[str, Any] | None) -> str | None:
    raw = ((secret or {}).get("data") or {}).get("token")
    return base64.b64decode(raw).decode() if raw else None


async def request_token(
    client: AsyncKubeClient, *, namespace: str, name: str, expiration_seconds: int
) -> str:
    """A TokenRequest for ``namespace/name`` (the proxy's ``--as system:serviceaccount:...`` path)."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration_seconds},
    }
    try:
        answer = await client.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
    except KubeAPIError as e:
        raise ServiceAccountTokenError(f"token request for service account {namespace}/{name}: {e}") from None
    token = (answer.get("status") or {}).get("token")
    if not token:
        raise ServiceAccountTokenError(
            f"token request for service account {namespace}/{name}: no token returned"
        )
    return str(token)


class ImpersonationAccountSet:
    """The ``cattle-impersonation-<user>`` accounts of one cluster, through Rancher's credential there."""

    def __init__(
        self,
        *,
        cluster: str,
        client: AsyncKubeClient,
        trace: TraceSink | None = None,
        trace_time: Callable[[], float] | None = None,
        token_wait_steps: int = 10,
        token_wait_seconds: float = 0.2,
    ) -> None:
        self.cluster = cluster
        self.client = client
        self.trace = trace
        self.trace_time = trace_time or (lambda: 0.0)
        self.token_wait_steps = token_wait_steps
        self.token_wait_seconds = token_wait_seconds
        self._ready: dict[str, _Ready] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._namespace_ready = False

    # -- the proxy's path ---------------------------------------------------------------------

    async def token_for(self, user: UserInfo) -> str:
        """The account's bearer token; ensures the account when it is new or its rules drifted."""
        key = _rules_key(user)
        ready = self._ready.get(user.name)
        if ready is not None and ready.key == key:
            return ready.token
        desired = imp.desired_rules(user)
        if ready is not None and not imp.role_drift(ready.rules, desired):
            self._ready[user.name] = _Ready(rules=ready.rules, token=ready.token, key=key)
            return ready.token
        lock = self._locks.setdefault(user.name, asyncio.Lock())
        async with lock:
            ready = self._ready.get(user.name)
            if ready is not None and not imp.role_drift(ready.rules, desired):
                return ready.token
            try:
                token = await self._ensure(user, desired)
            except KubeAPIError as e:
                raise ImpersonationAccountError(f"unable to create impersonator account: {e}") from None
            self._ready[user.name] = _Ready(rules=desired, token=token, key=key)
            return token

    async def ensure(self, user: UserInfo) -> None:
        """Ensure the account without needing its token now (a binding for the user landed)."""
        await self.token_for(user)

    def invalidate(self, user_id: str) -> None:
        """Forget the cached token: the next request checks the objects downstream again."""
        self._ready.pop(user_id, None)

    def invalidate_all(self) -> None:
        self._ready.clear()
        self._namespace_ready = False

    # -- removal and cleaning -----------------------------------------------------------------

    async def remove(self, user_id: str) -> bool:
        """Delete the user's ClusterRole; Kubernetes' GC removes the ServiceAccount, binding and Secret."""
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            self._ready.pop(user_id, None)
            found = bool(await self.client.delete(f"{CLUSTER_ROLES}/{imp.IMPERSONATION_PREFIX}{user_id}"))
        if found:
            logger.info("cluster %s: removed the impersonation account of %s", self.cluster, user_id)
        return found

    async def clean_stale_secrets(self, *, min_age_seconds: float = 60.0) -> list[str]:
        """Delete token Secrets that no ServiceAccount refers to (Rancher's stale-secret cleaner).

        Secrets younger than ``min_age_seconds`` are left alone: one may be between its creation
        and the annotation of its ServiceAccount.
        """
        accounts = (await self.client.list(SERVICE_ACCOUNTS)).get("items") or []
        referenced = {
            (a.get("metadata", {}).get("annotations") or {}).get(imp.SECRET_REF_ANNOTATION, "")
            for a in accounts
        }
        secrets = (await self.client.list(SECRETS, label_selector=imp.SA_SECRET_LABEL)).get("items") or []
        now = datetime.datetime.now(datetime.UTC)
        deleted = []
        for secret in secrets:
            metadata = secret.get("metadata") or {}
            if f"{NS}/{metadata.get('name')}" in referenced:
                continue
            created = metadata.get("creationTimestamp")
            if created:
                born = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
                if (now - born).total_seconds() < min_age_seconds:
                    continue
            await self.client.delete(f"{SECRETS}/{metadata['name']}")
            deleted.append(str(metadata["name"]))
        if deleted:
            logger.info(
                "cluster %s: deleted %d stale impersonation token secret(s)", self.cluster, len(deleted)
            )
        return deleted

    # -- the writes -----------------------------------------------------------------------------

    async def _ensure(self, user: UserInfo, desired: list[dict[str, Any]]) -> str:
        client = self.client
        name = imp.impersonation_name(user)
        created = False
        role = await self._check_and_update_role(name, desired)
        binding = await _get(client, f"{CLUSTER_ROLE_BINDINGS}/{name}")
        account = await _get(client, f"{SERVICE_ACCOUNTS}/{name}") if role and binding else None
        if account is None or role is None or binding is None:
            await self._ensure_namespace()
            if role is None:
                role, made = await _create_or_get(client, CLUSTER_ROLES, imp.cluster_role(user))
                created |= made
                if imp.role_drift(role.get("rules"), desired):  # another writer made it with older rules
                    role = await self._check_and_update_role(name, desired) or role
            uid = str(role["metadata"]["uid"])
            account, made = await _create_or_get(
                client, SERVICE_ACCOUNTS, imp.service_account(user, cluster_role_uid=uid)
            )
            created |= made
            _, made = await _create_or_get(
                client, CLUSTER_ROLE_BINDINGS, imp.cluster_role_binding(user, cluster_role_uid=uid)
            )
            created |= made
        secret = await self._ensure_secret(account)
        token = await self._wait_for_token(account, secret)
        if self.trace is not None:
            self.trace(
                ImpersonationAccountEnsured(
                    t=self.trace_time(), cluster=self.cluster, user=user.name, created=created
                )
            )
        logger.debug(
            "cluster %s: impersonation account of %s ensured (created=%s)", self.cluster, user.name, created
        )
        return token

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        with contextlib.suppress(AlreadyExistsError):
            await self.client.create("/api/v1/namespaces", imp.namespace())
        self._namespace_ready = True

    async def _check_and_update_role(self, name: str, desired: list[dict[str, Any]]) -> dict[str, Any] | None:
        for _ in range(5):
            role = await _get(self.client, f"{CLUSTER_ROLES}/{name}")
            if role is None or not imp.role_drift(role.get("rules"), desired):
                return role
            role["rules"] = desired
            try:
                updated = await self.client.replace(f"{CLUSTER_ROLES}/{name}", role)
            except ConflictError:
                continue
            logger.info("cluster %s: updated the impersonation role %s (rules drifted)", self.cluster, name)
            return updated
        raise ConflictError(
            f"PUT {CLUSTER_ROLES}/{name}: conflicts kept coming", status=409, reason="Conflict"
        )

    async def _ensure_secret(self, account: dict[str, Any]) -> dict[str, Any]:
        """The account's token Secret: by its annotation, else by label (deleting wrong ones), else new."""
        client = self.client
        sa_name = str(account["metadata"]["name"])
        ref = (account["metadata"].get("annotations") or {}).get(imp.SECRET_REF_ANNOTATION)
        if ref:
            with contextlib.suppress(ConfigError):  # a malformed reference: look by label
                namespace, secret_name = imp.parse_secret_ref(ref)
                secret = await _get(client, f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
                if secret is not None:
                    return secret
        listed = await client.list(SECRETS, label_selector=f"{imp.SA_SECRET_LABEL}={sa_name}")
        found: dict[str, Any] | None = None
        for secret in listed.get("items") or []:
            if imp.is_token_secret_for(secret, sa_name):
                found = found or secret
                continue
            logger.warning("cluster %s: secret %s is not a token of %s; deleting it", self.cluster,
                           secret["metadata"]["name"], sa_name)  # fmt: skip
            await client.delete(f"{SECRETS}/{secret['metadata']['name']}")
        if found is not None:
            return found
        secret = await client.create(
            SECRETS,
            imp.token_secret_template(
                service_account_name=sa_name, service_account_uid=account["metadata"]["uid"]
            ),
        )
        annotations = dict(account["metadata"].get("annotations") or {})
        annotations.update(imp.secret_ref(namespace=NS, name=secret["metadata"]["name"]))
        account["metadata"]["annotations"] = annotations
        try:
            await client.replace(f"{SERVICE_ACCOUNTS}/{sa_name}", account)
        except ConflictError:
            # Another writer annotated it first: drop ours and use theirs, as Rancher does.
            await client.delete(f"{SECRETS}/{secret['metadata']['name']}")
            fresh = await client.get(f"{SERVICE_ACCOUNTS}/{sa_name}")
            ref = (fresh["metadata"].get("annotations") or {}).get(imp.SECRET_REF_ANNOTATION, "")
            namespace, secret_name = imp.parse_secret_ref(ref)
            secret = await client.get(f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
        return secret

    async def _wait_for_token(self, account: Mapping[str, Any], secret: dict[str, Any]) -> str:
        """Wait for the token controller to fill the Secret: Rancher's 10 polls, 200 ms apart."""
        path = f"/api/v1/namespaces/{secret['metadata']['namespace']}/secrets/{secret['metadata']['name']}"
        token = _token_of(secret)
        for _ in range(self.token_wait_steps):
            if token:
                return token
            await asyncio.sleep(self.token_wait_seconds)
            token = _token_of(await _get(self.client, path))
        if token:
            return token
        waited = self.token_wait_steps * self.token_wait_seconds
        raise ImpersonationAccountError(
            f"unable to create impersonator account: failed to get secret for service account "
            f"{NS}/{account['metadata']['name']}: the token secret {secret['metadata']['name']} was not "
            f"populated after {waited:g}s (does the cluster run kube-controller-manager's token controller?)"
        )

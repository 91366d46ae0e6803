"""Keeping a cluster's ACE objects in step with the server's tokens and users (Rancher's token sync).

The cluster controller calls these over an `AsyncKubeClient` on the downstream cluster: `ensure_crds`,
`upsert_token` (the Secret before the ClusterAuthToken, existing objects updated in place, only
cluster-scoped SHA3-hashed tokens of this cluster), `delete_token` (Secret, token, and the user's
ClusterUserAttribute with the user's last token), `upsert_user_attribute`, `reconcile` (the whole set
at once: what changed while the cluster was unreachable applies on reconnect) and `read_last_used`
(``lastUsedAt`` to copy back upstream when newer). The decisions are pure functions beside them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral.auth import hashers
from corral.errors import AlreadyExistsError, ConflictError, CorralError, NotFoundError
from corral.k8s.aio import AsyncKubeClient, wait_for
from corral.kubeapiauth.objects import (
    CLUSTER_AUTH_TOKENS,
    CLUSTER_USER_ATTRIBUTES,
    GROUP,
    NAMESPACE,
    ClusterAuthToken,
    ObjectFormatError,
    cluster_auth_token_body,
    cluster_user_attribute_body,
    crd_manifests,
    debounce_configmap_body,
    hash_secret_body,
    parse_rfc3339,
    paths,
    secret_hash,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ReconcileResult",
    "TokenCopy",
    "TokenPlan",
    "TokenSyncError",
    "UserCopy",
    "attribute_body_for",
    "attribute_goes",
    "check_token",
    "delete_token",
    "ensure_crds",
    "ensure_debounce_configmap",
    "ensure_namespace",
    "newer_last_used",
    "plan_token",
    "read_last_used",
    "reconcile",
    "select_tokens",
    "upsert_token",
    "upsert_user_attribute",
]

_CONFLICT_RETRIES = 5


class TokenSyncError(CorralError):
    """A token cannot be copied to a cluster (not scoped to it, or not SHA3-hashed); never holds the hash."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenCopy:
    """What the server knows of one token, as the sync needs it."""

    name: str
    user_id: str
    cluster: str
    """The cluster the token is scoped to; empty for an unscoped token (never synced)."""
    enabled: bool
    expires_at: str
    """RFC 3339, or empty when the token does not expire."""
    hashed: str = field(repr=False)
    """The hash in SHA3 form (``$3:1:<salt>:<key>``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserCopy:
    """What the server knows of one user: enablement, group principals and per-provider extras."""

    user_id: str
    groups: tuple[str, ...]
    enabled: bool
    extra_by_provider: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    last_refresh: str | None = None
    """Copied when given; None leaves the downstream value (kube-api-auth's refresh flag lives there)."""
    needs_refresh: bool | None = None


# -- decisions ------------------------------------------------------------------------------------


def check_token(token: TokenCopy, *, cluster: str) -> None:
    """Raise `TokenSyncError` unless ``token`` is scoped to ``cluster`` and hashed with SHA3."""
    if not token.cluster:
        raise TokenSyncError(f"token {token.name} is not cluster-scoped: ACE never sees it")
    if token.cluster != cluster:
        raise TokenSyncError(f"token {token.name} is scoped to cluster {token.cluster}, not {cluster}")
    try:
        version = hashers.hash_version(token.hashed)
    except hashers.HashFormatError as e:
        raise TokenSyncError(f"token {token.name}: {e}") from None
    if version is not hashers.HashVersion.SHA3:
        raise TokenSyncError(f"token {token.name} is hashed with version {int(version)}; only SHA3 is synced")
    if token.expires_at:
        try:
            parse_rfc3339(token.expires_at, what=f"token {token.name} expiresAt")
        except ObjectFormatError as e:
            raise TokenSyncError(str(e)) from None


def select_tokens(tokens: Iterable[TokenCopy], *, cluster: str) -> dict[str, TokenCopy]:
    """The tokens to copy to ``cluster`` by name; the others are skipped (scoped elsewhere silently)."""
    chosen: dict[str, TokenCopy] = {}
    for token in tokens:
        if token.cluster != cluster:
            continue
        try:
            check_token(token, cluster=cluster)
        except TokenSyncError as e:
            logger.warning("not synced: %s", e)
            continue
        chosen[token.name] = token
    return chosen


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPlan:
    """What `upsert_token` writes: the Secret (first), then the token, created or updated in place."""

    write_secret: bool
    create_token: bool
    token_fields: Mapping[str, Any] = field(default_factory=dict)
    """Top-level fields of an existing ClusterAuthToken to change (empty: leave it)."""

    @property
    def changes(self) -> bool:
        return self.write_secret or self.create_token or bool(self.token_fields)


def plan_token(token: TokenCopy, existing: ClusterAuthToken | None, stored_hash: str | None) -> TokenPlan:
    """Compare the server's token with the cluster's copy (``stored_hash`` None: no Secret)."""
    write_secret = stored_hash != token.hashed
    if existing is None:
        return TokenPlan(write_secret=write_secret, create_token=True)
    wanted: dict[str, Any] = {
        "userName": token.user_id,
        "enabled": token.enabled,
        "expiresAt": token.expires_at,
    }
    current = {"userName": existing.user_name, "enabled": existing.enabled, "expiresAt": existing.expires_at}
    fields = {key: value for key, value in wanted.items() if current[key] != value}
    if existing.legacy_hash:
        fields["hash"] = ""  # the Secret holds the current hash; a stale legacy one would be read first
    return TokenPlan(write_secret=write_secret, create_token=False, token_fields=fields)


def attribute_body_for(
    user: UserCopy, existing: Mapping[str, Any] | None, *, namespace: str
) -> dict[str, Any] | None:
    """The ClusterUserAttribute to write for ``user`` (None when the cluster's copy is current)."""
    body = cluster_user_attribute_body(
        user_id=user.user_id,
        groups=user.groups,
        enabled=user.enabled,
        extra_by_provider=user.extra_by_provider,
        namespace=namespace,
    )
    if existing is None:
        body["lastRefresh"] = user.last_refresh or ""
        body["needsRefresh"] = bool(user.needs_refresh)
        return body
    merged = dict(existing)
    for key in ("groups", "enabled"):
        merged[key] = body[key]
    if "extraByProvider" in body:
        merged["extraByProvider"] = body["extraByProvider"]
    else:
        merged.pop("extraByProvider", None)
    if user.last_refresh is not None:
        merged["lastRefresh"] = user.last_refresh
    if user.needs_refresh is not None:
        merged["needsRefresh"] = user.needs_refresh
    return None if merged == dict(existing) else merged


def attribute_goes(user_id: str, *, deleted: str, remaining: Collection[str]) -> bool:
    """Whether deleting token ``deleted`` removes the user's ClusterUserAttribute: it was the last one."""
    return not (set(remaining) - {deleted})


def newer_last_used(upstream: datetime | None, downstream: datetime | None) -> datetime | None:
    """The downstream ``lastUsedAt`` to copy upstream, when it is newer (None: nothing to copy)."""
    if downstream is None:
        return None
    if upstream is None or downstream > upstream:
        return downstream
    return None


# -- I/O ------------------------------------------------------------------------------------------


async def ensure_crds(
    client: AsyncKubeClient, *, namespace: str = NAMESPACE, timeout_seconds: float = 60.0
) -> None:
    """Apply the two CRDs and the namespace, and wait until both kinds are served."""
    for crd in crd_manifests():
        await client.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, force=True)
    await ensure_namespace(client, namespace)

    async def served() -> bool:
        found = await client.get(f"/apis/{GROUP}/v3")
        names = {r.get("name") for r in found.get("resources", [])}
        return {CLUSTER_AUTH_TOKENS, CLUSTER_USER_ATTRIBUTES} <= names

    await wait_for(served, timeout_seconds=timeout_seconds, what="the ACE CRDs to be served")


async def ensure_namespace(client: AsyncKubeClient, namespace: str) -> None:
    await client.apply(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )


async def ensure_debounce_configmap(
    client: AsyncKubeClient, *, seconds: int, namespace: str = NAMESPACE
) -> None:
    """Mirror the ``auth-provider-refresh-debounce-seconds`` setting into the cluster."""
    body = debounce_configmap_body(seconds=seconds, namespace=namespace)
    await client.apply(f"/api/v1/namespaces/{namespace}/configmaps", body, force=True)


async def _get_or_none(client: AsyncKubeClient, path: str) -> dict[str, Any] | None:
    try:
        return await client.get(path)
    except NotFoundError:
        return None


async def _update(client: AsyncKubeClient, path: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Read, change and replace an object, again on a conflict (the resourceVersion guards the write)."""
    for attempt in range(_CONFLICT_RETRIES):
        current = await client.get(path)
        change(current)
        try:
            await client.replace(path, current)
            return
        except ConflictError:
            if attempt == _CONFLICT_RETRIES - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


async def upsert_token(
    client: AsyncKubeClient, token: TokenCopy, *, cluster: str, namespace: str = NAMESPACE
) -> TokenPlan:
    """Copy one token to the cluster; returns what was (or needed no) writing."""
    check_token(token, cluster=cluster)
    where = paths(namespace)
    token_path = f"{where[CLUSTER_AUTH_TOKENS]}/{token.name}"
    secret_path = f"{where['secrets']}/{token.name}"
    existing_obj = await _get_or_none(client, token_path)
    existing = ClusterAuthToken.from_json(existing_obj) if existing_obj is not None else None
    secret = await _get_or_none(client, secret_path)
    plan = plan_token(token, existing, secret_hash(secret) if secret is not None else None)
    if plan.write_secret:
        body = hash_secret_body(name=token.name, hashed=token.hashed, namespace=namespace)
        if secret is None:
            try:
                await client.create(where["secrets"], body)
            except AlreadyExistsError:
                await client.patch(secret_path, {"data": body["data"]})
        else:
            await client.patch(secret_path, {"data": body["data"]})
    if plan.create_token:
        body = cluster_auth_token_body(
            name=token.name,
            user_name=token.user_id,
            enabled=token.enabled,
            expires_at=token.expires_at,
            namespace=namespace,
        )
        try:
            await client.create(where[CLUSTER_AUTH_TOKENS], body)
        except AlreadyExistsError:  # created since we looked: bring it in line
            fields = {k: body[k] for k in ("userName", "enabled", "expiresAt", "hash")}
            await _update(client, token_path, lambda obj: obj.update(fields))
    elif plan.token_fields:
        fields = dict(plan.token_fields)
        await _update(client, token_path, lambda obj: obj.update(fields))
    if plan.changes:
        logger.info("cluster %s: token %s synced (%s)", cluster, token.name, _describe(plan))
    return plan


def _describe(plan: TokenPlan) -> str:
    parts = ["hash secret"] if plan.write_secret else []
    if plan.create_token:
        parts.append("token created")
    elif plan.token_fields:
        parts.append("token " + ", ".join(sorted(plan.token_fields)))
    return "; ".join(parts)


async def delete_token(
    client: AsyncKubeClient,
    name: str,
    *,
    user_id: str,
    remaining: Collection[str] | None = None,
    namespace: str = NAMESPACE,
) -> bool:
    """Delete a token's Secret and ClusterAuthToken; the ClusterUserAttribute goes with the user's last.

    ``remaining`` are the names of the user's tokens for this cluster the server still has; None
    takes them from the cluster's own ClusterAuthTokens. Returns whether the attribute was deleted.
    """
    where = paths(namespace)
    await client.delete(f"{where['secrets']}/{name}")
    await client.delete(f"{where[CLUSTER_AUTH_TOKENS]}/{name}")
    if remaining is None:
        listing = await client.list(where[CLUSTER_AUTH_TOKENS])
        remaining = [
            str(obj["metadata"]["name"]) for obj in listing.get("items", []) if obj.get("userName") == user_id
        ]
    if not attribute_goes(user_id, deleted=name, remaining=remaining):
        return False
    await client.delete(f"{where[CLUSTER_USER_ATTRIBUTES]}/{user_id}")
    logger.info("user %s has no token left: clusteruserattribute deleted", user_id)
    return True


async def upsert_user_attribute(
    client: AsyncKubeClient, user: UserCopy, *, namespace: str = NAMESPACE
) -> bool:
    """Create or update the user's ClusterUserAttribute; returns whether anything was written."""
    collection = paths(namespace)[CLUSTER_USER_ATTRIBUTES]
    path = f"{collection}/{user.user_id}"
    for attempt in range(_CONFLICT_RETRIES):
        existing = await _get_or_none(client, path)
        body = attribute_body_for(user, existing, namespace=namespace)
        if body is None:
            return False
        try:
            if existing is None:
                await client.create(collection, body)
            else:
                await client.replace(path, body)
            return True
        except (ConflictError, AlreadyExistsError):
            if attempt == _CONFLICT_RETRIES - 1:
                raise
    return False  # pragma: no cover - the loop returns or raises


async def read_last_used(client: AsyncKubeClient, *, namespace: str = NAMESPACE) -> dict[str, datetime]:
    """``lastUsedAt`` of every ClusterAuthToken that has one, by token name."""
    listing = await client.list(paths(namespace)[CLUSTER_AUTH_TOKENS])
    found: dict[str, datetime] = {}
    for obj in listing.get("items", []):
        value = obj.get("lastUsedAt")
        if not isinstance(value, str) or not value:
            continue
        name = str(obj.get("metadata", {}).get("name", ""))
        try:
            found[name] = parse_rfc3339(value, what=f"clusterauthtoken {name} lastUsedAt")
        except ObjectFormatError as e:
            logger.warning("%s", e)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileResult:
    """What one `reconcile` wrote."""

    upserted: tuple[str, ...]
    deleted: tuple[str, ...]
    attributes_written: tuple[str, ...]
    attributes_deleted: tuple[str, ...]


async def reconcile(
    client: AsyncKubeClient,
    *,
    cluster: str,
    tokens: Iterable[TokenCopy],
    users: Mapping[str, UserCopy],
    namespace: str = NAMESPACE,
) -> ReconcileResult:
    """Make the cluster's ACE objects match the server: all of its tokens, any cluster's as input.

    Tokens of users not in ``users`` are skipped (their attribute cannot be written). Downstream
    tokens the server no longer has are deleted, and attributes of users left without a token.
    """
    wanted = {
        name: token
        for name, token in select_tokens(tokens, cluster=cluster).items()
        if token.user_id in users
    }
    attributes_written = []
    for user_id in sorted({token.user_id for token in wanted.values()}):
        if await upsert_user_attribute(client, users[user_id], namespace=namespace):
            attributes_written.append(user_id)
    upserted = []
    for name in sorted(wanted):
        if (await upsert_token(client, wanted[name], cluster=cluster, namespace=namespace)).changes:
            upserted.append(name)
    where = paths(namespace)
    present = await client.list(where[CLUSTER_AUTH_TOKENS])
    deleted = []
    for obj in present.get("items", []):
        name = str(obj["metadata"]["name"])
        if name not in wanted:
            await client.delete(f"{where['secrets']}/{name}")
            await client.delete(f"{where[CLUSTER_AUTH_TOKENS]}/{name}")
            deleted.append(name)
    owners = {token.user_id for token in wanted.values()}
    attributes = await client.list(where[CLUSTER_USER_ATTRIBUTES])
    attributes_deleted = []
    for obj in attributes.get("items", []):
        user_id = str(obj["metadata"]["name"])
        if user_id not in owners:
            await client.delete(f"{where[CLUSTER_USER_ATTRIBUTES]}/{user_id}")
            attributes_deleted.append(user_id)
    return ReconcileResult(
        upserted=tuple(upserted),
        deleted=tuple(deleted),
        attributes_written=tuple(attributes_written),
        attributes_deleted=tuple(attributes_deleted),
    )

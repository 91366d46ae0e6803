"""The cluster controller's token sync for the Authorized Cluster Endpoint (Rancher's clusterauthtoken).

`AceSync` runs inside one cluster's `ClusterController`: it copies the cluster-scoped tokens of that
cluster (and the ClusterUserAttribute of their users) into the cluster with `corral.kubeapiauth.sync`,
one token at a time as the upstream informers report changes, and the whole set at start, after a
failed write and when the cluster is seen connected again, so what changed while the cluster was out
of reach applies once it is back. A newer downstream ``lastUsedAt`` is copied back upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from corral.auth import hashers
from corral.auth.tokens import expires_at_text
from corral.errors import CorralError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth import objects, sync
from corral.server.informer import Informer
from corral.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

__all__ = ["AceSync", "ace_enabled", "token_copy", "user_copy"]

JSON = dict[str, Any]
MGMT: Final = "/apis/management.cattle.io/v3"
LAST_USED_INTERVAL_SECONDS: Final = 10.0
DEFAULT_DEBOUNCE_SECONDS: Final = 0
"""``auth-provider-refresh-debounce-seconds`` when the setting is absent (Rancher's default is 0)."""


def ace_enabled(cluster: Mapping[str, Any]) -> bool:
    """``spec.localClusterAuthEndpoint.enabled``: kubeconfig tokens for this cluster are scoped to it."""
    endpoint = (cluster.get("spec") or {}).get("localClusterAuthEndpoint") or {}
    return isinstance(endpoint, Mapping) and endpoint.get("enabled") is True


def _aware_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return objects.parse_rfc3339(text, what="time")
    except objects.ObjectFormatError:
        return None


def token_copy(token: Mapping[str, Any]) -> sync.TokenCopy:
    """What the sync needs of one upstream v3 Token (a plaintext value is hashed with SHA3 for the copy)."""
    stored = str(token.get("token") or "")
    try:
        hashers.hash_version(stored)
        hashed = stored
    except hashers.HashFormatError:
        hashed = hashers.hash_secret(stored)  # token hashing off: hash for the downstream copy only
    metadata = token.get("metadata") or {}
    created = _aware_time(metadata.get("creationTimestamp"))
    try:
        ttl = int(token.get("ttl") or 0)
    except (TypeError, ValueError):
        ttl = 0
    return sync.TokenCopy(
        name=str(metadata.get("name", "")),
        user_id=str(token.get("userId") or ""),
        cluster=str(token.get("clusterName") or ""),
        enabled=token.get("enabled") is not False,
        expires_at=expires_at_text(created, ttl) if created is not None else "",
        hashed=hashed,
    )


def user_copy(user: Mapping[str, Any], attributes: Mapping[str, Any] | None) -> sync.UserCopy:
    """The user's ClusterUserAttribute content: group principal names as the auth providers stored them.

    Groups are the names of the UserAttribute's ``GroupPrincipals`` of every provider, ``local://``
    kept (ACE does not strip it, the proxy does); extras come from ``ExtraByProvider``.
    """
    groups: list[str] = []
    extra: dict[str, dict[str, tuple[str, ...]]] = {}
    last_refresh: str | None = None
    needs_refresh: bool | None = None
    if attributes is not None:
        for principals in (attributes.get("GroupPrincipals") or {}).values():
            for item in (principals or {}).get("items") or ():
                name = str((item.get("metadata") or {}).get("name", ""))
                if name and name not in groups:
                    groups.append(name)
        for provider, by_key in (attributes.get("ExtraByProvider") or {}).items():
            extra[str(provider)] = {
                str(k): tuple(str(v) for v in vs or ()) for k, vs in (by_key or {}).items()
            }
        if isinstance(attributes.get("LastRefresh"), str):
            last_refresh = str(attributes["LastRefresh"])
        if isinstance(attributes.get("NeedsRefresh"), bool):
            needs_refresh = bool(attributes["NeedsRefresh"])
    return sync.UserCopy(
        user_id=str(user["metadata"]["name"]),
        groups=tuple(sorted(groups)),
        enabled=user.get("enabled") is not False,
        extra_by_provider=extra,
        last_refresh=last_refresh,
        needs_refresh=needs_refresh,
    )


class AceSync:
    """One cluster's ACE objects, kept in step with the upstream tokens and users.

    ``informers`` are the upstream's by plural (``tokens``, ``users``, ``userattributes``,
    ``settings``); ``enqueue(kind, key)`` puts work on the cluster controller's queue, which calls
    `reconcile` and retries failures.
    """

    KINDS: Final = ("ace", "acetoken", "aceuser", "acelastused")

    def __init__(
        self,
        *,
        cluster_id: str,
        client: AsyncKubeClient,
        upstream: AsyncKubeClient,
        informers: Mapping[str, Informer],
        enqueue: Callable[[str, str], None],
        last_used_interval_seconds: float = LAST_USED_INTERVAL_SECONDS,
    ) -> None:
        self.cluster_id = cluster_id
        self.client = client
        self.upstream = upstream
        self.informers = informers
        self.enqueue = enqueue
        self.last_used_interval_seconds = last_used_interval_seconds
        self._crds_ready = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self.enqueue("ace", "")
        self._task = asyncio.create_task(self._last_used_loop(), name=f"ace lastUsedAt {self.cluster_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- what belongs here ------------------------------------------------------------------------

    def tokens(self) -> list[JSON]:
        """The upstream tokens scoped to this cluster."""
        return [t for t in self.informers["tokens"].list() if t.get("clusterName") == self.cluster_id]

    def owns(self, token: Mapping[str, Any] | None) -> bool:
        return token is not None and token.get("clusterName") == self.cluster_id

    def has_user(self, user_id: str) -> bool:
        return any(t.get("userId") == user_id for t in self.tokens())

    def _user(self, user_id: str) -> sync.UserCopy | None:
        user = self.informers["users"].get(user_id)
        if user is None:
            return None
        return user_copy(user, self.informers["userattributes"].get(user_id))

    def _debounce(self) -> int:
        setting = self.informers["settings"].get(objects.DEBOUNCE_CONFIGMAP)
        value = str((setting or {}).get("value") or (setting or {}).get("default") or "")
        try:
            return int(value)
        except ValueError:
            return DEFAULT_DEBOUNCE_SECONDS

    # -- work -------------------------------------------------------------------------------------

    async def reconcile(self, kind: str, key: str) -> None:
        """One queued item; a failure re-queues it (the controller) and asks for a full pass after."""
        try:
            if kind == "ace":
                await self._reconcile_all()
            elif kind == "acetoken":
                await self._reconcile_token(key)
            elif kind == "aceuser":
                await self._reconcile_user(key)
            elif kind == "acelastused":
                await self.copy_last_used()
        except CorralError:
            if kind != "ace":
                # Events may be lost while the cluster is out of reach: compare everything once it is back.
                self.enqueue("ace", "")
            raise

    async def _ensure_crds(self) -> None:
        if self._crds_ready:
            return
        await sync.ensure_crds(self.client)
        await sync.ensure_debounce_configmap(self.client, seconds=self._debounce())
        self._crds_ready = True

    async def _reconcile_all(self) -> None:
        tokens = [token_copy(t) for t in self.tokens()]
        # Nothing to copy: a cluster without ACE gets no CRDs, unless it had them (stale copies).
        if (
            not tokens
            and not self._crds_ready
            and not await self.client.exists(f"/apis/{objects.GROUP}/{objects.VERSION}")
        ):
            return
        await self._ensure_crds()
        users = {}
        for user_id in {t.user_id for t in tokens}:
            copy = self._user(user_id)
            if copy is not None:
                users[user_id] = copy
        result = await sync.reconcile(self.client, cluster=self.cluster_id, tokens=tokens, users=users)
        if result.upserted or result.deleted or result.attributes_written or result.attributes_deleted:
            logger.info(
                "cluster %s: ACE copies reconciled: %d token(s) written, %d deleted, %d attribute(s) "
                "written, %d deleted",
                self.cluster_id,
                len(result.upserted),
                len(result.deleted),
                len(result.attributes_written),
                len(result.attributes_deleted),
            )

    async def _reconcile_token(self, name: str) -> None:
        token = self.informers["tokens"].get(name)
        if self.owns(token):
            assert token is not None
            copy = token_copy(token)
            user = self._user(copy.user_id)
            if user is None:
                await self._drop(name, copy.user_id)
                return
            await self._ensure_crds()
            await sync.upsert_user_attribute(self.client, user)
            await sync.upsert_token(self.client, copy, cluster=self.cluster_id)
            return
        if not self._crds_ready:
            # A token gone (or scoped elsewhere) before this cluster had any copy: nothing to delete,
            # unless the kinds exist from an earlier run (the full pass handles that).
            return
        try:
            existing = await self.client.get(f"{objects.paths()[objects.CLUSTER_AUTH_TOKENS]}/{name}")
        except NotFoundError:
            return
        await self._drop(name, str(existing.get("userName") or ""))

    async def _drop(self, name: str, user_id: str) -> None:
        remaining = [str(t["metadata"]["name"]) for t in self.tokens() if t.get("userId") == user_id]
        remaining = [r for r in remaining if r != name]
        await sync.delete_token(self.client, name, user_id=user_id, remaining=remaining)
        logger.info("cluster %s: token %s removed from the cluster", self.cluster_id, name)

    async def _reconcile_user(self, user_id: str) -> None:
        if not self._crds_ready or not self.has_user(user_id):
            return
        copy = self._user(user_id)
        if copy is None:
            for token in self.tokens():
                if token.get("userId") == user_id:
                    self.enqueue("acetoken", str(token["metadata"]["name"]))
            return
        await sync.upsert_user_attribute(self.client, copy)

    # -- lastUsedAt back upstream -----------------------------------------------------------------

    async def _last_used_loop(self) -> None:
        while True:
            await asyncio.sleep(self.last_used_interval_seconds)
            if self._crds_ready:
                self.enqueue("acelastused", "")

    async def copy_last_used(self) -> int:
        """Copy every downstream ``lastUsedAt`` newer than the upstream token's; return how many."""
        if not self._crds_ready:
            return 0
        copied = 0
        for name, downstream in (await sync.read_last_used(self.client)).items():
            token = self.informers["tokens"].get(name)
            if not self.owns(token):
                continue
            assert token is not None
            newer = sync.newer_last_used(_aware_time(token.get("lastUsedAt")), downstream)
            if newer is None:
                continue
            with contextlib.suppress(NotFoundError):
                await self.upstream.patch(
                    f"{MGMT}/tokens/{name}", {"lastUsedAt": objects.format_rfc3339(newer)}
                )
                copied += 1
        return copied

"""The server's state: management.cattle.io/v3 objects in the upstream control plane, read from informers.

Every write goes to the upstream kube-apiserver and is acknowledged only once stored there, so any
number of server processes can share one upstream and a killed process loses nothing it answered.
Reads (authenticating a token, looking up a user or a binding) come from watch-fed caches; an
object a process wrote itself is put into its cache at once (`Informer.observe`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from corral.errors import AlreadyExistsError, CorralError, KubeAPIError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.server import crds
from corral.server.informer import Informer

logger = logging.getLogger(__name__)

__all__ = [
    "JSON",
    "MANAGEMENT",
    "STORED",
    "ServerState",
    "StateError",
    "StoredKind",
]

JSON = dict[str, Any]
MANAGEMENT: Final = f"/apis/{crds.GROUP}/{crds.VERSION}"
API_VERSION: Final = f"{crds.GROUP}/{crds.VERSION}"

USER_ID_LABEL: Final = "authn.management.cattle.io/token-userId"


class StateError(CorralError):
    """The upstream refused or could not store the server's state (CRDs not established, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredKind:
    """One management kind the server caches: its plural, kind and scope."""

    plural: str
    kind: str
    namespaced: bool

    @property
    def collection(self) -> str:
        """The all-namespaces collection path (what the informer watches)."""
        return f"{MANAGEMENT}/{self.plural}"

    def path(self, name: str = "", namespace: str = "") -> str:
        """The collection (or object) path in one namespace (namespaced kinds) or cluster-wide."""
        base = f"{MANAGEMENT}/namespaces/{namespace}/{self.plural}" if self.namespaced else self.collection
        return f"{base}/{name}" if name else base


STORED: Final[Mapping[str, StoredKind]] = {
    spec.plural: StoredKind(plural=spec.plural, kind=spec.kind, namespaced=spec.namespaced)
    for spec in crds.KINDS
}
"""Every management kind of `corral.server.crds`, by plural."""


def _label(name: str) -> Any:
    def values(obj: JSON) -> Iterable[str]:
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(name)
        return [value] if value else []

    return values


def _field(*path: str) -> Any:
    def values(obj: JSON) -> Iterable[str]:
        value: Any = obj
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        return [value] if isinstance(value, str) and value else []

    return values


def _fields(*names: str) -> Any:
    def values(obj: JSON) -> Iterable[str]:
        return [str(obj[n]) for n in names if isinstance(obj.get(n), str) and obj[n]]

    return values


def _principal_ids(obj: JSON) -> Iterable[str]:
    return [str(p) for p in obj.get("principalIds") or () if p]


LOCAL_PRINCIPAL_PREFIX: Final = "local://"


class ServerState:
    """The upstream client and one informer per management kind (plus the local-user password Secrets).

    ``await start()`` applies nothing: `corral.server.bootstrap` applies the CRDs and seed objects
    first, then the state starts its informers and waits until all are synced.
    """

    def __init__(self, upstream: AsyncKubeClient, *, sync_timeout_seconds: float = 60.0) -> None:
        self.upstream = upstream
        self.sync_timeout_seconds = sync_timeout_seconds
        self.informers: dict[str, Informer] = {
            plural: Informer(upstream, kind.collection, name=plural) for plural, kind in STORED.items()
        }
        self.passwords = Informer(
            upstream, "/api/v1/namespaces/cattle-local-user-passwords/secrets", name="password secrets"
        )
        self.tokens.add_index("user", _label(USER_ID_LABEL))
        self.users.add_index("username", _field("username"))
        self.users.add_index("principal", _principal_ids)
        self.crtbs.add_index("user", _field("userName"))
        self.crtbs.add_index("group", _fields("groupPrincipalName", "groupName"))
        self.crtbs.add_index("cluster", _field("clusterName"))
        self.prtbs.add_index("user", _field("userName"))
        self.prtbs.add_index("group", _fields("groupPrincipalName", "groupName"))
        self.prtbs.add_index("project", _field("projectName"))
        self.projects.add_index("cluster", _field("spec", "clusterName"))
        self.globalrolebindings.add_index("user", _field("userName"))
        self.crts.add_index("token", _field("status", "token"))
        self._refreshing: dict[str, asyncio.Future[None]] = {}

    # -- informers by role -------------------------------------------------------------------

    @property
    def users(self) -> Informer:
        return self.informers["users"]

    @property
    def tokens(self) -> Informer:
        return self.informers["tokens"]

    @property
    def clusters(self) -> Informer:
        return self.informers["clusters"]

    @property
    def crts(self) -> Informer:
        return self.informers["clusterregistrationtokens"]

    @property
    def roletemplates(self) -> Informer:
        return self.informers["roletemplates"]

    @property
    def crtbs(self) -> Informer:
        return self.informers["clusterroletemplatebindings"]

    @property
    def prtbs(self) -> Informer:
        return self.informers["projectroletemplatebindings"]

    @property
    def projects(self) -> Informer:
        return self.informers["projects"]

    @property
    def settings(self) -> Informer:
        return self.informers["settings"]

    @property
    def userattributes(self) -> Informer:
        return self.informers["userattributes"]

    @property
    def globalrolebindings(self) -> Informer:
        return self.informers["globalrolebindings"]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every informer and wait until each has listed its collection."""
        every = [*self.informers.values(), self.passwords]
        for informer in every:
            await informer.start()
        try:
            await asyncio.gather(*(i.wait_synced(self.sync_timeout_seconds) for i in every))
        except CorralError as exc:
            raise StateError(str(exc)) from None

    async def stop(self) -> None:
        for informer in [*self.informers.values(), self.passwords]:
            await informer.stop()

    # -- reads -------------------------------------------------------------------------------

    def setting(self, name: str, fallback: str = "") -> str:
        """A setting's ``value``, else its ``default``, else ``fallback`` (Rancher's Get)."""
        obj = self.settings.get(name)
        if obj is None:
            return fallback
        return str(obj.get("value") or obj.get("default") or fallback)

    def setting_int(self, name: str, fallback: int) -> int:
        try:
            return int(self.setting(name, str(fallback)))
        except ValueError:
            return fallback

    def user_groups(self, user_id: str) -> tuple[str, ...]:
        """The user's group principal ids from their UserAttribute, every provider's, in order.

        What the proxy sends as ``Impersonate-Group``, the impersonation ClusterRole lists and a
        ClusterUserAttribute carries: ``openldap_group://<DN>``, ``github_team://<id>`` as they are,
        local groups without ``local://``. Follows the login and the periodic refresh (cache-fed).
        """
        attribute = self.userattributes.get(user_id) or {}
        groups: dict[str, None] = {}
        for principals in (attribute.get("GroupPrincipals") or {}).values():
            for item in (principals or {}).get("items") or ():
                name = str((item.get("metadata") or {}).get("name") or "")
                if name:
                    groups[name.removeprefix(LOCAL_PRINCIPAL_PREFIX)] = None
        return tuple(groups)

    def auth_provider_enabled(self, name: str) -> bool:
        """``local`` always; another provider when its AuthConfig is enabled."""
        if name in ("", "local"):
            return True
        config = self.informers["authconfigs"].get(name)
        return bool(config and config.get("enabled") is True)

    def is_admin(self, user_id: str) -> bool:
        """Bound to the ``admin`` GlobalRole (what Rancher's admin check amounts to)."""
        return any(
            b.get("globalRoleName") == "admin" for b in self.globalrolebindings.by_index("user", user_id)
        )

    # -- writes: stored upstream first, then seen in this process's cache ----------------------

    def _informer(self, plural: str) -> Informer:
        return self.informers[plural]

    async def create(self, plural: str, obj: JSON, *, namespace: str = "") -> JSON:
        kind = STORED[plural]
        body = {"apiVersion": API_VERSION, "kind": kind.kind, **obj}
        created = await self.upstream.create(kind.path(namespace=namespace), body)
        await self._informer(plural).observe(created)
        return created

    async def replace(self, plural: str, obj: JSON) -> JSON:
        kind = STORED[plural]
        metadata = obj.get("metadata") or {}
        path = kind.path(str(metadata.get("name")), str(metadata.get("namespace") or ""))
        stored = await self.upstream.replace(path, obj)
        await self._informer(plural).observe(stored)
        return stored

    async def patch(
        self, plural: str, name: str, patch: Any, *, namespace: str = "", kind: str = "merge"
    ) -> JSON:
        stored = await self.upstream.patch(STORED[plural].path(name, namespace), patch, kind=kind)
        await self._informer(plural).observe(stored)
        return stored

    async def patch_status(self, plural: str, name: str, status: JSON, *, namespace: str = "") -> JSON:
        path = STORED[plural].path(name, namespace) + "/status"
        stored = await self.upstream.patch(path, {"status": status})
        await self._informer(plural).observe(stored)
        return stored

    async def delete(self, plural: str, name: str, *, namespace: str = "") -> bool:
        """Delete an object; False when it was already gone."""
        try:
            deleted = await self.upstream.request("DELETE", STORED[plural].path(name, namespace))
        except NotFoundError:
            return False
        key = f"{namespace}/{name}" if namespace else name
        await self._informer(plural).forget(key, deleted=deleted.body)
        return True

    async def get_fresh(self, plural: str, name: str, *, namespace: str = "") -> JSON | None:
        """Read one object from the upstream (a cache miss of an object another process just wrote)."""
        try:
            obj = await self.upstream.get(STORED[plural].path(name, namespace))
        except NotFoundError:
            return None
        await self._informer(plural).observe(obj)
        return obj

    async def refresh(self, plural: str) -> None:
        """List one kind from the upstream into its cache now (a miss of an object another process
        may have written a moment ago). Concurrent callers share one list."""
        running = self._refreshing.get(plural)
        if running is None:
            running = asyncio.ensure_future(self._refresh(plural))
            self._refreshing[plural] = running
            running.add_done_callback(lambda _: self._refreshing.pop(plural, None))
        await asyncio.shield(running)

    async def _refresh(self, plural: str) -> None:
        listing = await self.upstream.list(STORED[plural].collection)
        informer = self._informer(plural)
        for item in listing.get("items") or []:
            await informer.observe({"apiVersion": API_VERSION, "kind": STORED[plural].kind, **item})

    async def ensure_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> None:
        body: JSON = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            body["metadata"]["labels"] = dict(labels)
        try:
            await self.upstream.create("/api/v1/namespaces", body)
        except AlreadyExistsError:
            pass
        except KubeAPIError as exc:
            if exc.status != 409:
                raise

"""The cluster controllers: one per downstream cluster, acting there with Rancher's ``cattle`` credential.

`ClusterControllers` watches the upstream's Cluster objects and runs a `ClusterController` for each
provisioned one (endpoint, CA and token Secret recorded by `corral.server.registration`). A cluster's
controller keeps the role templates' ClusterRoles, reconciles the cluster's role-template bindings
into ClusterRoleBindings and RoleBindings (`corral.server.downstream_rbac`), labels project namespaces,
ensures a user's impersonation account when a binding for them lands and removes it with their last
binding, cleans stale token Secrets, and writes the cluster's nodes, namespaces and version into its
status, with its management Nodes and their sums (`corral.server.nodesync`). It also copies the
cluster's scoped tokens down for the Authorized Cluster Endpoint (`corral.server.ace_sync`). It is
also the proxy's `ImpersonationAccounts` and `ServiceAccountTokens`.

A controller reaches its cluster the way the proxy does: with ``routes`` (the server's tunnel
dialer) a cluster that has agents is dialed through their tunnels, and its controller is started
again on the new route when its first agent connects; other clusters are dialed directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.errors import AlreadyExistsError, ConfigError, CorralError, KubeAPIError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.kubeconfig import KubeConfig
from corral.model.trace import Event
from corral.server import downstream_rbac as rbac
from corral.server import impersonation as imp
from corral.server.accounts import ImpersonationAccountSet, request_token
from corral.server.ace_sync import AceSync
from corral.server.informer import Informer
from corral.server.nodesync import NodeSyncer, cluster_stats
from corral.server.proxy_dial import DialerConnector
from corral.server.proxy_interfaces import Dialer, ImpersonationAccountError, ServiceAccountTokenError
from corral.server.registration import (
    CLUSTERS,
    CREDENTIAL_KEY,
    GLOBAL_NAMESPACE,
    condition_true,
    set_condition,
)

logger = logging.getLogger(__name__)

__all__ = ["ClusterController", "ClusterControllers", "ClusterRoutes", "user_info_from"]

JSON = dict[str, Any]
TraceSink = Callable[[Event], None]
MGMT: Final = "/apis/management.cattle.io/v3"
RBAC: Final = "/apis/rbac.authorization.k8s.io/v1"
LOCAL_PREFIX: Final = "local://"
#: Upstream kinds the controllers read, by plural.
WATCHED: Final = (
    "clusters",
    "clusterroletemplatebindings",
    "projectroletemplatebindings",
    "roletemplates",
    "users",
    "userattributes",
    "tokens",
    "settings",
)


class ClusterRoutes(Protocol):
    """How the server reaches a downstream cluster (`corral.server.tunnel_dialer.TunnelDialer`)."""

    def route(self, cluster: str) -> Dialer | None:
        """The dialer for the cluster's API connections; None to dial directly."""
        ...

    def on_route_change(self, callback: Callable[[str], None]) -> None:
        """``callback(cluster)`` whenever `route` changes for a cluster."""
        ...


def user_info_from(user: Mapping[str, Any], attributes: Mapping[str, Any] | None) -> UserInfo:
    """The identity Rancher's impersonator builds for a user id (``getUser``), as the proxy names groups.

    Groups are the UserAttribute's group principals (``local://`` removed, as the proxy's headers have
    them) plus the authenticated groups; extras merge every provider's ``principalid`` and
    ``username``. A user without a UserAttribute (a system user) gets its display name and principal ids.
    """
    name = str(user["metadata"]["name"])
    groups: list[str] = list(AUTHENTICATED_GROUPS)
    extras: dict[str, list[str]] = {}
    if attributes is None:
        if user.get("displayName"):
            extras[imp.EXTRA_USERNAME] = [str(user["displayName"])]
        if user.get("principalIds"):
            extras[imp.EXTRA_PRINCIPAL_ID] = [str(p) for p in user["principalIds"]]
    else:
        for principals in (attributes.get("GroupPrincipals") or {}).values():
            for item in (principals or {}).get("items") or ():
                group = str((item.get("metadata") or {}).get("name", "")).removeprefix(LOCAL_PREFIX)
                if group and group not in groups:
                    groups.append(group)
        for by_key in (attributes.get("ExtraByProvider") or {}).values():
            for key in (imp.EXTRA_USERNAME, imp.EXTRA_PRINCIPAL_ID):
                values = (by_key or {}).get(key) or ()
                if values:
                    extras.setdefault(key, []).extend(str(v) for v in values)
    return UserInfo(name=name, groups=tuple(groups), extras={k: tuple(v) for k, v in extras.items()})


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


async def _create_or_update(
    client: AsyncKubeClient, collection: str, desired: JSON, *, compare: tuple[str, ...]
) -> None:
    """Create ``desired``, or update the fields in ``compare`` (and its labels) when they differ."""
    path = f"{collection}/{_name(desired)}"
    try:
        current = await client.get(path)
    except NotFoundError:
        with contextlib.suppress(AlreadyExistsError):
            await client.create(collection, desired)
        return
    labels = dict(current["metadata"].get("labels") or {})
    wanted = {**labels, **(desired["metadata"].get("labels") or {})}
    if labels == wanted and all(current.get(key) == desired.get(key) for key in compare):
        return
    current["metadata"]["labels"] = wanted
    for key in compare:
        current[key] = desired.get(key)
    await client.replace(path, current)


class ClusterController:
    """The controllers of one downstream cluster (Rancher's per-cluster user context)."""

    def __init__(
        self,
        *,
        cluster_id: str,
        client: AsyncKubeClient,
        owner: ClusterControllers,
        status_interval_seconds: float,
        clean_interval_seconds: float,
    ) -> None:
        self.cluster_id = cluster_id
        self.client = client
        self.owner = owner
        self.accounts = ImpersonationAccountSet(
            cluster=cluster_id, client=client, trace=owner.trace, trace_time=owner.trace_time
        )
        self.status_interval_seconds = status_interval_seconds
        self.clean_interval_seconds = clean_interval_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._informers: list[Informer] = []
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._pending: set[tuple[str, str]] = set()
        self._idle = asyncio.Event()
        self._running: tuple[str, str] | None = None
        self._reachable = True
        self.ace: AceSync | None = None
        if client is not owner.upstream:  # the local cluster has no ACE
            self.ace = AceSync(
                cluster_id=cluster_id,
                client=client,
                upstream=owner.upstream,
                informers=owner.informers,
                enqueue=self.enqueue,
            )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        namespaces = Informer(self.client, "/api/v1/namespaces", name=f"{self.cluster_id}/namespaces")
        namespaces.on_change(self._namespace_changed)
        roles = Informer(
            self.client,
            f"{RBAC}/clusterroles",
            label_selector=f"{imp.IMPERSONATOR_LABEL}=true",
            name=f"{self.cluster_id}/impersonation-roles",
        )
        roles.on_change(self._impersonation_object_changed)
        bindings = Informer(
            self.client,
            f"{RBAC}/clusterrolebindings",
            label_selector=f"{imp.IMPERSONATOR_LABEL}=true",
            name=f"{self.cluster_id}/impersonation-bindings",
        )
        bindings.on_change(self._impersonation_object_changed)
        accounts = Informer(
            self.client,
            f"/api/v1/namespaces/{imp.IMPERSONATION_NAMESPACE}/serviceaccounts",
            name=f"{self.cluster_id}/impersonation-accounts",
        )
        accounts.on_change(self._impersonation_object_changed)
        self._informers = [namespaces, roles, bindings, accounts]
        self.namespaces = namespaces
        for informer in self._informers:
            await informer.start()
        self._tasks = [
            asyncio.create_task(self._work(), name=f"controller {self.cluster_id}"),
            asyncio.create_task(self._status_loop(), name=f"status {self.cluster_id}"),
            asyncio.create_task(self._clean_loop(), name=f"cleaner {self.cluster_id}"),
        ]
        for template in self.owner.informers["roletemplates"].list():
            self.enqueue("roletemplate", _name(template))
        for binding in self.owner.crtbs_of(self.cluster_id):
            self.enqueue("crtb", _key(binding))
        for binding in self.owner.prtbs_of(self.cluster_id):
            self.enqueue("prtb", _key(binding))
        if self.ace is not None:
            self.ace.start()

    async def stop(self) -> None:
        if self.ace is not None:
            await self.ace.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for informer in self._informers:
            await informer.stop()
        if self.client is not self.owner.upstream:
            await self.client.close()

    async def wait_idle(self, timeout_seconds: float = 30.0) -> None:
        """Return once no reconcile is queued or running (tests, and ``corral up`` before it reports)."""
        async with asyncio.timeout(timeout_seconds):
            while self._pending or self._running:
                self._idle.clear()
                await self._idle.wait()

    # -- the work queue ---------------------------------------------------------------------------

    def enqueue(self, kind: str, key: str) -> None:
        """Queue a reconcile; one already queued absorbs this one, a running one is followed by it."""
        item = (kind, key)
        if item not in self._pending:
            self._pending.add(item)
            self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            # Off the pending set before it runs: a change seen while it runs queues it again.
            self._pending.discard(item)
            self._running = item
            try:
                await self._reconcile(*item)
            except asyncio.CancelledError:
                raise
            except (CorralError, KeyError, ValueError) as e:
                logger.warning("cluster %s: %s %s: %s; retrying", self.cluster_id, item[0], item[1], e)
                asyncio.get_running_loop().call_later(1.0, self.enqueue, *item)
            finally:
                self._running = None
            if not self._pending:
                self._idle.set()

    async def _reconcile(self, kind: str, key: str) -> None:
        if kind == "roletemplate":
            await self._reconcile_role_template(key)
        elif kind == "crtb":
            await self._reconcile_crtb(key)
        elif kind == "prtb":
            await self._reconcile_prtb(key)
        elif kind == "user":
            await self._reconcile_user(key)
        elif kind in AceSync.KINDS and self.ace is not None:
            await self.ace.reconcile(kind, key)

    # -- role templates ---------------------------------------------------------------------------

    def _has_promoted(self, template_name: str, depth: int = 0) -> bool:
        template = self.owner.informers["roletemplates"].get(template_name)
        if template is None or depth > 50:
            return False
        if rbac.promoted_rules(template.get("rules") or ()):
            return True
        return any(self._has_promoted(n, depth + 1) for n in template.get("roleTemplateNames") or ())

    async def _reconcile_role_template(self, name: str) -> None:
        template = self.owner.informers["roletemplates"].get(name)
        if template is None:
            return
        inherited = any(self._has_promoted(n) for n in template.get("roleTemplateNames") or ())
        for role in rbac.cluster_roles_for(template, inherited_promoted=inherited):
            compare = ("aggregationRule",) if "aggregationRule" in role else ("rules",)
            await _create_or_update(self.client, f"{RBAC}/clusterroles", role, compare=compare)
        if template.get("external"):
            # The external role (admin, edit, view, ...) is labelled so its aggregator selects it.
            path = f"{RBAC}/clusterroles/{name}"
            with contextlib.suppress(NotFoundError):
                role = await self.client.get(path)
                labels = role["metadata"].get("labels") or {}
                wanted = rbac.safe_concat_name(name)
                if labels.get(rbac.AGGREGATION_LABEL) != wanted:
                    await self.client.patch(path, {"metadata": {"labels": {rbac.AGGREGATION_LABEL: wanted}}})

    def _external(self, template_name: str) -> bool:
        template = self.owner.informers["roletemplates"].get(template_name)
        return bool(template and template.get("external"))

    # -- bindings ---------------------------------------------------------------------------------

    async def _sync_bindings(self, collection: str, selector: str, desired: list[JSON]) -> None:
        """Make the bindings labelled ``selector`` exactly ``desired`` (same subjects and roleRef)."""
        listed = (await self.client.list(collection, label_selector=selector)).get("items") or []
        wanted = {(d["metadata"].get("namespace", ""), _name(d)): d for d in desired}
        for current in listed:
            key = (current["metadata"].get("namespace", ""), _name(current))
            match = wanted.get(key)
            if match is not None and rbac.binding_key(match) == rbac.binding_key(current):
                del wanted[key]
                continue
            await self.client.delete(_binding_path(current))
        for (namespace, _), binding in wanted.items():
            target = (
                f"{RBAC}/namespaces/{namespace}/rolebindings" if namespace else f"{RBAC}/clusterrolebindings"
            )
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(target, binding)

    async def _reconcile_crtb(self, key: str) -> None:
        crtb = self.owner.informers["clusterroletemplatebindings"].get(key)
        name = key.rsplit("/", 1)[-1]
        selector = f"{rbac.crtb_owner_label(name)}=true"
        if (
            crtb is None
            or crtb.get("clusterName") != self.cluster_id
            or crtb["metadata"].get("deletionTimestamp")
        ):
            await self._sync_bindings(f"{RBAC}/clusterrolebindings", selector, [])
            return
        if not crtb.get("roleTemplateName"):
            return
        desired = [rbac.cluster_role_binding_for(crtb, external=self._external(crtb["roleTemplateName"]))]
        await self._sync_bindings(f"{RBAC}/clusterrolebindings", selector, desired)
        if crtb.get("userName"):
            await self._ensure_account(str(crtb["userName"]))

    async def _reconcile_prtb(self, key: str) -> None:
        prtb = self.owner.informers["projectroletemplatebindings"].get(key)
        name = key.rsplit("/", 1)[-1]
        selector = f"{rbac.prtb_owner_label(name)}=true"
        live = (
            prtb is not None
            and rbac.project_of(prtb)[0] == self.cluster_id
            and not prtb["metadata"].get("deletionTimestamp")
            and prtb.get("roleTemplateName")
        )
        cluster_bindings: list[JSON] = []
        role_bindings: list[JSON] = []
        if live and prtb is not None:
            template = str(prtb["roleTemplateName"])
            if self._has_promoted(template):
                cluster_bindings.append(rbac.promoted_binding_for(prtb))
            project = rbac.project_of(prtb)[1]
            external = self._external(template)
            for namespace in self.namespaces.list():
                labels = namespace["metadata"].get("labels") or {}
                if labels.get(rbac.PROJECT_ID) == project and not namespace["metadata"].get(
                    "deletionTimestamp"
                ):
                    role_bindings.append(rbac.role_binding_for(prtb, _name(namespace), external=external))
        await self._sync_bindings(f"{RBAC}/clusterrolebindings", selector, cluster_bindings)
        await self._sync_bindings(f"{RBAC}/rolebindings", selector, role_bindings)
        if live and prtb is not None and prtb.get("userName"):
            await self._ensure_account(str(prtb["userName"]))

    # -- impersonation accounts ---------------------------------------------------------------

    async def _ensure_account(self, user_id: str) -> None:
        user = self.owner.user_info(user_id)
        if user is None:
            logger.warning(
                "cluster %s: no user %s; not creating an impersonation account", self.cluster_id, user_id
            )
            return
        await self.accounts.ensure(user)

    async def _reconcile_user(self, user_id: str) -> None:
        """Remove the user's account when no binding of theirs is left in this cluster."""
        if not self.owner.user_has_binding(self.cluster_id, user_id):
            await self.accounts.remove(user_id)

    def _impersonation_object_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        name = _name(obj)
        if not name.startswith(imp.IMPERSONATION_PREFIX):
            return
        user_id = name.removeprefix(imp.IMPERSONATION_PREFIX)
        if event == "DELETED" or (
            new is not None and old is not None and new.get("rules") != old.get("rules")
        ):
            self.accounts.invalidate(user_id)

    # -- namespaces of projects ---------------------------------------------------------------

    async def _namespace_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        if new is not None and event != "DELETED":
            annotation = (new["metadata"].get("annotations") or {}).get(rbac.PROJECT_ID, "")
            cluster, _, project = str(annotation).partition(":")
            labels = new["metadata"].get("labels") or {}
            wanted = project if cluster == self.cluster_id else None
            if (
                annotation
                and labels.get(rbac.PROJECT_ID) != wanted
                and not new["metadata"].get("deletionTimestamp")
            ):
                with contextlib.suppress(NotFoundError):
                    await self.client.patch(
                        f"/api/v1/namespaces/{_name(new)}",
                        {"metadata": {"labels": {rbac.PROJECT_ID: wanted}}},
                    )
        before = ((old or {}).get("metadata", {}).get("labels") or {}).get(rbac.PROJECT_ID)
        after = ((new or {}).get("metadata", {}).get("labels") or {}).get(rbac.PROJECT_ID)
        if before != after:
            for project in {p for p in (before, after) if p}:
                for binding in self.owner.prtbs_of(self.cluster_id):
                    if rbac.project_of(binding)[1] == project:
                        self.enqueue("prtb", _key(binding))

    # -- status and cleaning ------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            try:
                await self.sync_status()
            except asyncio.CancelledError:
                raise
            except CorralError as e:
                logger.warning("cluster %s: status: %s", self.cluster_id, e)
            await asyncio.sleep(self.status_interval_seconds)

    async def sync_status(self) -> None:
        """Write the cluster's node and namespace counts, version and Ready condition into its status."""
        cluster = self.owner.informers["clusters"].get(self.cluster_id)
        if cluster is None:
            return
        status = dict(cluster.get("status") or {})
        conditions = [dict(c) for c in status.get("conditions") or ()]
        try:
            version = await self.client.get("/version")
            nodes = (await self.client.list("/api/v1/nodes")).get("items") or []
            namespaces = (await self.client.list("/api/v1/namespaces")).get("items") or []
        except KubeAPIError as e:
            self._reachable = False
            changed = set_condition(conditions, "Ready", False, reason="Unavailable", message=str(e)[:256])
            if changed:
                await self.owner.upstream.patch(
                    f"{CLUSTERS}/{self.cluster_id}/status", {"status": {"conditions": conditions}}
                )
            return
        if not self._reachable:
            self._reachable = True
            if self.ace is not None:  # back in reach: what changed meanwhile is copied down
                self.ace.enqueue("ace", "")
        update: JSON = {
            "version": version,
            "nodeCount": len(nodes),
            "namespaceCount": len(namespaces),
        }
        try:
            machines = await NodeSyncer(self.owner.upstream, cluster=self.cluster_id).sync(nodes)
            update.update(cluster_stats(machines))
        except KubeAPIError as e:
            logger.warning("cluster %s: management nodes: %s", self.cluster_id, e)
        changed = any(status.get(k) != v for k, v in update.items())
        changed |= set_condition(conditions, "Ready", True)
        if changed:
            update["conditions"] = conditions
            await self.owner.upstream.patch(f"{CLUSTERS}/{self.cluster_id}/status", {"status": update})

    async def _clean_loop(self) -> None:
        await asyncio.sleep(min(5.0, self.clean_interval_seconds))
        while True:
            try:
                await self.accounts.clean_stale_secrets()
            except asyncio.CancelledError:
                raise
            except CorralError as e:
                logger.warning("cluster %s: cleaning stale token secrets: %s", self.cluster_id, e)
            await asyncio.sleep(self.clean_interval_seconds)


def _connected(obj: Mapping[str, Any] | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Connected" and c.get("status") == "True" for c in conditions)


def _reconnected(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """The cluster's agent connected again (``Connected`` turned True)."""
    return old is not None and not _connected(old) and _connected(new)


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj["metadata"]
    return (
        f"{metadata['namespace']}/{metadata['name']}" if metadata.get("namespace") else str(metadata["name"])
    )


def _binding_path(binding: Mapping[str, Any]) -> str:
    namespace = binding["metadata"].get("namespace")
    if namespace:
        return f"{RBAC}/namespaces/{namespace}/rolebindings/{_name(binding)}"
    return f"{RBAC}/clusterrolebindings/{_name(binding)}"


class ClusterControllers:
    """Every downstream cluster's controller, started and stopped as Cluster objects come and go.

    ``state`` is the server's state (its ``upstream`` client and, when it has them, its ``informers``
    by plural) or an upstream `AsyncKubeClient`; missing informers are made here.
    """

    def __init__(
        self,
        state: Any,
        *,
        trace: TraceSink | None = None,
        trace_time: Callable[[], float] | None = None,
        status_interval_seconds: float = 10.0,
        clean_interval_seconds: float = 60.0,
        routes: ClusterRoutes | None = None,
    ) -> None:
        self.routes = routes
        self._rerouting: set[asyncio.Task[None]] = set()
        self.upstream: AsyncKubeClient = state if isinstance(state, AsyncKubeClient) else state.upstream
        shared: Mapping[str, Informer] = getattr(state, "informers", None) or {}
        self.informers: dict[str, Informer] = {}
        self._own: list[Informer] = []
        for plural in WATCHED:
            informer = shared.get(plural)
            if informer is None:
                informer = Informer(self.upstream, f"{MGMT}/{plural}", name=f"controllers/{plural}")
                self._own.append(informer)
            self.informers[plural] = informer
        self.trace = trace
        started = time.monotonic()
        self.trace_time: Callable[[], float] = trace_time or (lambda: time.monotonic() - started)
        """Trace time: seconds since these controllers were made, unless the server gives its own clock."""
        self.status_interval_seconds = status_interval_seconds
        self.clean_interval_seconds = clean_interval_seconds
        self.controllers: dict[str, ClusterController] = {}
        self._fingerprints: dict[str, tuple[str, ...]] = {}
        self._lock = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, *, timeout_seconds: float = 60.0) -> None:
        self.informers["clusters"].on_change(self._cluster_changed)
        self.informers["clusterroletemplatebindings"].on_change(self._binding_changed)
        self.informers["projectroletemplatebindings"].on_change(self._binding_changed)
        self.informers["roletemplates"].on_change(self._template_changed)
        self.informers["userattributes"].on_change(self._attributes_changed)
        self.informers["users"].on_change(self._user_changed)
        self.informers["tokens"].on_change(self._token_changed)
        if self.routes is not None:
            self.routes.on_route_change(self._route_changed)
        for informer in self._own:
            await informer.start()
        for informer in self.informers.values():
            await informer.wait_synced(timeout_seconds)
        for cluster in self.informers["clusters"].list():
            await self._cluster_changed("ADDED", None, cluster)

    async def stop(self) -> None:
        for task in list(self._rerouting):
            task.cancel()
        async with self._lock:
            controllers, self.controllers = self.controllers, {}
            self._fingerprints.clear()
        for controller in controllers.values():
            await controller.stop()
        for informer in self._own:
            await informer.stop()

    async def wait_idle(self, timeout_seconds: float = 30.0) -> None:
        for controller in list(self.controllers.values()):
            await controller.wait_idle(timeout_seconds)

    # -- lookups ----------------------------------------------------------------------------------

    def user_info(self, user_id: str) -> UserInfo | None:
        user = self.informers["users"].get(user_id)
        if user is None:
            return None
        return user_info_from(user, self.informers["userattributes"].get(user_id))

    def crtbs_of(self, cluster_id: str) -> list[JSON]:
        return [
            b
            for b in self.informers["clusterroletemplatebindings"].list()
            if b.get("clusterName") == cluster_id
        ]

    def prtbs_of(self, cluster_id: str) -> list[JSON]:
        return [
            b
            for b in self.informers["projectroletemplatebindings"].list()
            if rbac.project_of(b)[0] == cluster_id
        ]

    def user_has_binding(self, cluster_id: str, user_id: str) -> bool:
        bindings = [*self.crtbs_of(cluster_id), *self.prtbs_of(cluster_id)]
        return any(
            b.get("userName") == user_id and not b["metadata"].get("deletionTimestamp") for b in bindings
        )

    # -- the proxy's seams ------------------------------------------------------------------------

    def _controller(self, cluster: str) -> ClusterController:
        controller = self.controllers.get(cluster)
        if controller is None:
            raise ImpersonationAccountError(
                f"unable to create impersonator account: cluster {cluster} is not provisioned "
                "or not registered"
            )
        return controller

    def client_for(self, cluster: str) -> AsyncKubeClient | None:
        """The client on ``cluster`` with Rancher's credential there (None until its controller runs)."""
        controller = self.controllers.get(cluster)
        return controller.client if controller is not None else None

    async def token_for(
        self,
        cluster: str,
        user: UserInfo | None = None,
        *,
        namespace: str = "",
        name: str = "",
        expiration_seconds: int = 600,
    ) -> str:
        """`ImpersonationAccounts.token_for` given a user; `ServiceAccountTokens.token_for` given a
        namespace and name (one method serves both protocols)."""
        if user is not None:
            return await self._controller(cluster).accounts.token_for(user)
        if not namespace or not name:
            raise ServiceAccountTokenError("a service account token needs its namespace and name")
        controller = self.controllers.get(cluster)
        if controller is None:
            raise ServiceAccountTokenError(f"cluster {cluster} is not provisioned or not registered")
        return await request_token(
            controller.client, namespace=namespace, name=name, expiration_seconds=expiration_seconds
        )

    # -- events -----------------------------------------------------------------------------------

    async def _cluster_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        cluster_id = _name(obj)
        async with self._lock:
            fingerprint = None if new is None or event == "DELETED" else await self._fingerprint(new)
            if fingerprint == self._fingerprints.get(cluster_id):
                running = self.controllers.get(cluster_id)
                if running is not None and running.ace is not None and _reconnected(old, new):
                    running.ace.enqueue("ace", "")  # the agent is back: catch up on what it missed
                return
            controller = self.controllers.pop(cluster_id, None)
            self._fingerprints.pop(cluster_id, None)
            if controller is not None:
                await controller.stop()
            if fingerprint is None or new is None:
                return
            try:
                client = await self._client_for(new)
            except (CorralError, ValueError) as e:
                logger.warning("cluster %s: cannot reach it yet: %s", cluster_id, e)
                return
            controller = ClusterController(
                cluster_id=cluster_id,
                client=client,
                owner=self,
                status_interval_seconds=self.status_interval_seconds,
                clean_interval_seconds=self.clean_interval_seconds,
            )
            self.controllers[cluster_id] = controller
            self._fingerprints[cluster_id] = fingerprint
            await controller.start()
            logger.info("cluster %s: controllers started", cluster_id)

    async def _fingerprint(self, cluster: JSON) -> tuple[str, ...] | None:
        if (cluster.get("spec") or {}).get("internal"):
            return ("internal", "", "")
        status = cluster.get("status") or {}
        if not condition_true(cluster, "Provisioned"):
            return None
        endpoint, ca, secret = (
            str(status.get(k) or "") for k in ("apiEndpoint", "caCert", "serviceAccountTokenSecret")
        )
        if not (endpoint and secret):
            return None
        return (endpoint, ca, secret, self._route_name(_name(cluster)))

    async def _client_for(self, cluster: JSON) -> AsyncKubeClient:
        if (cluster.get("spec") or {}).get("internal"):
            return self.upstream
        status = cluster["status"]
        secret = await self.upstream.get(
            f"/api/v1/namespaces/{GLOBAL_NAMESPACE}/secrets/{status['serviceAccountTokenSecret']}"
        )
        raw = (secret.get("data") or {}).get(CREDENTIAL_KEY)
        if not raw:
            raise ConfigError(f"secret {status['serviceAccountTokenSecret']} has no {CREDENTIAL_KEY}")
        ca = base64.b64decode(status["caCert"]) if status.get("caCert") else None
        config = KubeConfig(
            server=str(status["apiEndpoint"]),
            ca_pem=ca,
            token=base64.b64decode(raw).decode(),
            cluster_name=_name(cluster),
            user_name="cattle",
        )
        return AsyncKubeClient(config, timeout_seconds=45, connector=self._connector(_name(cluster)))

    # -- the route to a cluster: direct, or the proxy's dialer (its agents' tunnels) ---------------

    def _route_name(self, cluster_id: str) -> str:
        dialer = self.routes.route(cluster_id) if self.routes is not None else None
        return "direct" if dialer is None else "dialer"

    def _connector(self, cluster_id: str) -> Callable[[Any], DialerConnector] | None:
        dialer = self.routes.route(cluster_id) if self.routes is not None else None
        if dialer is None:
            return None
        return lambda context: DialerConnector(dialer, cluster_id, ssl=context)

    def _route_changed(self, cluster_id: str) -> None:
        """Start the cluster's controller again on its new route (its fingerprint names the route)."""
        task = asyncio.ensure_future(self._reroute(cluster_id))
        self._rerouting.add(task)
        task.add_done_callback(self._rerouting.discard)

    async def _reroute(self, cluster_id: str) -> None:
        cluster = self.informers["clusters"].get(cluster_id)
        if cluster is None:
            return
        try:
            await self._cluster_changed("MODIFIED", cluster, cluster)
        except CorralError as e:
            logger.warning("cluster %s: cannot move its controller to the new route: %s", cluster_id, e)
        else:
            logger.info("cluster %s: controllers now reach it %s", cluster_id, self._route_name(cluster_id))

    def _binding_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        for obj in (old, new):
            if obj is None:
                continue
            is_crtb = "clusterName" in obj
            cluster_id = str(obj.get("clusterName")) if is_crtb else rbac.project_of(obj)[0]
            controller = self.controllers.get(cluster_id)
            if controller is None:
                continue
            controller.enqueue("crtb" if is_crtb else "prtb", _key(obj))
            user = obj.get("userName")
            if user and (event == "DELETED" or obj is old):
                controller.enqueue("user", str(user))

    def _template_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        for controller in self.controllers.values():
            controller.enqueue("roletemplate", _name(obj))

    def _attributes_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        # A group change shows on the next request through the proxy; the eager path follows it too.
        obj = new or old
        if obj is None:
            return
        user_id = _name(obj)
        for cluster_id, controller in self.controllers.items():
            if self.user_has_binding(cluster_id, user_id):
                controller.accounts.invalidate(user_id)
        self._user_changed(event, old, new)

    def _user_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        """A user or their attributes changed: their ClusterUserAttribute wherever they have tokens."""
        obj = new or old
        if obj is None:
            return
        user_id = _name(obj)
        for controller in self.controllers.values():
            if controller.ace is not None and controller.ace.has_user(user_id):
                controller.enqueue("aceuser", user_id)

    def _token_changed(self, event: str, old: JSON | None, new: JSON | None) -> None:
        """A token changed: the clusters it is (or was) scoped to update or delete their copy."""
        clusters = {
            str(obj.get("clusterName")) for obj in (old, new) if obj is not None and obj.get("clusterName")
        }
        name = _name(new or old or {"metadata": {"name": ""}})
        for cluster_id in clusters:
            controller = self.controllers.get(cluster_id)
            if controller is not None and controller.ace is not None:
                controller.enqueue("acetoken", name)

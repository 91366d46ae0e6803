"""The v3 API subset (norman shapes) and the local provider's public login, on aiohttp.

Collections: users, tokens, clusters, clusterregistrationtokens, roletemplates,
clusterroletemplatebindings, projectroletemplatebindings, projects, settings; actions ``login``,
``logout`` and ``generateKubeconfig``. Reads come from the caches; a 2xx on a write means the
upstream stored it. Every failure is a norman error body (``{"type":"error",...}``), never a
traceback, and no message carries a secret.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from corral.auth.tokens import COOKIE_NAME, generate_secret, kubeconfig_token_prefix
from corral.errors import AlreadyExistsError, ConflictError, InvalidError, KubeAPIError, NotFoundError
from corral.server import norman
from corral.server.access import CLUSTER_OWNER, PROJECT_OWNER, Access
from corral.server.ace_sync import ace_enabled
from corral.server.authn import Authenticated, TokenAuthenticator, TokenIssuer, expires_at
from corral.server.etcd_backups import EtcdBackupError, EtcdBackups
from corral.server.kubeconfig import (
    AceEndpointsError,
    ace_entries,
    kubeconfig_host,
    token_kubeconfig,
    wants_nodes,
)
from corral.server.localauth import LocalAuth, PasswordPolicyError, UserExistsError
from corral.server.norman_views import CREATOR_ANNOTATION, TYPES, object_id, view
from corral.server.provisioning import LOCAL_DRIVER, LocalDriver
from corral.server.proxy_interfaces import AuthenticationError
from corral.server.state import JSON, ServerState

logger = logging.getLogger(__name__)

__all__ = ["PUBLIC_SETTINGS", "V3API", "V3Error", "json_body", "login_body", "login_error"]

PUBLIC_SETTINGS: Final = frozenset(
    {"cacerts", "first-login", "ui-banners", "ui-issues", "ui-pl", "ui-brand", "ui-default-landing"}
)
"""Settings Rancher serves to ``GET /v3/settings/<name>`` without authentication."""
_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_JSON_TYPE: Final = "application/json"
_RESERVED_QUERY: Final = frozenset({"limit", "marker", "sort", "order", "action", "me", "reverse"})


class V3Error(Exception):
    """Ends a v3 request with a norman error (``code`` from `norman.ERROR_CODES`)."""

    def __init__(self, code: str, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else norman.ERROR_CODES[code]


class _Unauthenticated(Exception):
    """No valid token: Rancher's auth filter answers 401 "must authenticate"."""


def _respond(status: int, body: Any, *, escape_html: bool = True) -> web.Response:
    return web.Response(
        status=status, body=norman.go_json(body, escape_html=escape_html), content_type=_JSON_TYPE
    )


def _error(exc: V3Error) -> web.Response:
    return _respond(exc.status, norman.api_error(code=exc.code, message=exc.message, status=exc.status))


def json_body(raw: bytes) -> JSON:
    """A request's body as a JSON object; an empty body is ``{}``, anything else not an object is refused."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise V3Error("InvalidBodyContent", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise V3Error("InvalidBodyContent", "request body must be a JSON object")
    return body


def login_body(raw: bytes) -> JSON | None:
    """A login's body as a JSON object; None when it is empty, not JSON or not an object (a 422)."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _not_found(id_: str) -> V3Error:
    return V3Error("NotFound", f"{id_} not found")


def _denied(verb: str, type_: str) -> V3Error:
    return V3Error("PermissionDenied", f"can not {verb} {type_} ")


def _not_allowed(method: str) -> V3Error:
    return V3Error("MethodNotAllow", f"method {method} not allowed")


def _valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    """One authenticated v3 request."""

    request: web.Request
    auth: Authenticated
    base_url: str

    @property
    def user_id(self) -> str:
        return self.auth.user_id


Handler = Callable[[_Call, str], Awaitable[web.StreamResponse]]


class V3API:
    """The handlers; mount with `add_routes`."""

    def __init__(
        self,
        *,
        state: ServerState,
        authenticator: TokenAuthenticator,
        issuer: TokenIssuer,
        local: LocalAuth,
        access: Access,
        etcd_backups: EtcdBackups | None = None,
        local_driver: LocalDriver | None = None,
    ) -> None:
        self.local_driver = local_driver  # provisions ``driver: local`` clusters; None refuses that driver
        self.state = state
        self.authenticator = authenticator
        self.issuer = issuer
        self.local = local
        self.access = access
        self.etcd_backups = etcd_backups

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/v3-public/{tail:.*}", self.public)
        app.router.add_route("*", "/v3", self.v3)
        app.router.add_route("*", "/v3/{tail:.*}", self.v3)

    # -- plumbing ----------------------------------------------------------------------------

    async def _guard(  # noqa: PLR0911 - one answer per failure kind
        self, request: web.Request, handler: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler()
        except V3Error as exc:
            return _error(exc)
        except _Unauthenticated:
            return _respond(401, norman.must_authenticate(), escape_html=False)
        except AlreadyExistsError:
            return _error(V3Error("NotUnique", "the object already exists"))
        except ConflictError:
            return _error(V3Error("Conflict", "the object was changed by another request; retry"))
        except NotFoundError:
            return _error(V3Error("NotFound", "not found"))
        except InvalidError as exc:
            return _error(V3Error("InvalidBodyContent", _cut(str(exc))))
        except KubeAPIError as exc:
            logger.warning("%s %s: the upstream failed: %s", request.method, request.path, exc)
            return _error(V3Error("ServerError", "the management cluster could not be reached or failed"))
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return _error(V3Error("ServerError", "internal error"))

    @staticmethod
    async def _body(request: web.Request) -> JSON:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise V3Error("InvalidBodyContent", "request body is too large") from None
        return json_body(raw)

    async def _authenticate(self, request: web.Request, cluster: str = "") -> Authenticated:
        try:
            return await self.authenticator.authenticate_headers(request.headers, cluster=cluster)
        except AuthenticationError as exc:
            logger.debug("v3 %s %s not authenticated: %s", request.method, request.path, exc)
            raise _Unauthenticated from None

    @staticmethod
    def _base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # -- public ------------------------------------------------------------------------------

    async def public(self, request: web.Request) -> web.StreamResponse:
        return await self._guard(request, lambda: self._public(request))

    async def _public(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"].strip("/")
        if tail.lower() != "localproviders/local":
            raise V3Error("NotFound", "not found")
        if request.method != "POST":
            raise V3Error("MethodNotAllow", f"method {request.method} not allowed")
        if request.query.get("action") != "login":
            raise V3Error("ActionNotAvailable", "")
        return await self._login(request)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        body = login_body(await request.read())
        if body is None:
            return login_error(422, "InvalidBodyContent")
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return login_error(422, "InvalidBodyContent")
        result = await self.local.verify(username, password)
        if result.user is None:
            return login_error(401, "Unauthorized", "authentication failed")
        if not result.enabled:
            return login_error(403, "PermissionDenied")
        await self.local.record_login(result.user)
        ttl = self.state.setting_int("auth-user-session-ttl-minutes", 960) * 60_000
        description = body.get("description") if isinstance(body.get("description"), str) else ""
        token, value = await self.issuer.create(
            result.user, ttl_millis=ttl, kind="session", description=str(description or "")
        )
        response_type = body.get("responseType")
        if response_type == "cookie":
            response = web.Response(status=200)
            response.set_cookie(COOKIE_NAME, value, path="/", secure=True, httponly=True, samesite="Lax")
            return response
        data = {
            "baseType": "token",
            "expiresAt": expires_at(token),
            "id": token["metadata"]["name"],
            "token": value,
            "type": "token",
        }
        return _respond(201, data, escape_html=True)

    # -- /v3 ---------------------------------------------------------------------------------

    async def v3(self, request: web.Request) -> web.StreamResponse:
        return await self._guard(request, lambda: self._v3(request))

    async def _v3(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "").strip("/")
        parts = tail.split("/") if tail else []
        if (
            request.method == "GET"
            and len(parts) == 2
            and parts[0] == "settings"
            and parts[1] in PUBLIC_SETTINGS
        ):
            return self._get_setting(parts[1], self._base_url(request))
        cluster_scope = parts[1] if len(parts) >= 2 and parts[0] == "clusters" else ""
        auth = await self._authenticate(request, cluster_scope)
        call = _Call(request=request, auth=auth, base_url=self._base_url(request))
        if not parts:
            return _respond(200, {"type": "apiRoot", "links": {p: f"{call.base_url}/v3/{p}" for p in TYPES}})
        collection = parts[0]
        if collection not in TYPES or len(parts) > 2:
            raise V3Error("NotFound", "not found")
        id_ = parts[1] if len(parts) == 2 else ""
        handler = getattr(self, f"_{collection}")
        result: web.StreamResponse = await handler(call, id_)
        return result

    # -- helpers for handlers ----------------------------------------------------------------

    def _collection(self, call: _Call, plural: str, items: list[JSON], *, create: bool) -> web.Response:
        query = call.request.query
        rendered = [self._view(call, plural, obj) for obj in items]
        for key, value in query.items():
            if key in _RESERVED_QUERY:
                continue
            rendered = [r for r in rendered if str(r.get(key)) == value or r.get(key) == value]
        limit = norman.parse_limit(query.get("limit"))
        page, pagination = norman.paginate(rendered, limit=limit, marker=query.get("marker", ""))
        url = f"{call.base_url}/v3/{plural}"
        body = norman.collection(
            resource_type=TYPES[plural],
            self_url=url,
            data=page,
            create_types={TYPES[plural]: url} if create else None,
            pagination=pagination.to_json(request_url=url, query={k: query.getall(k) for k in query}),
        )
        return _respond(200, body)

    def _view(self, call: _Call, plural: str, obj: JSON) -> JSON:
        admin = self.access.is_admin(call.auth.user)
        can_write = admin
        if plural == "tokens":
            can_write = True
        elif plural == "clusters":
            can_write = self.access.owns_cluster(call.auth.user, obj["metadata"]["name"])
        elif plural in ("clusterroletemplatebindings", "clusterregistrationtokens"):
            can_write = self.access.owns_cluster(call.auth.user, str(obj["metadata"].get("namespace")))
        elif plural == "projects":
            can_write = self.access.owns_project(call.auth.user, object_id(obj))
        elif plural == "projectroletemplatebindings":
            can_write = self.access.owns_project(call.auth.user, str(obj.get("projectName", "")))
        return view(
            plural,
            obj,
            base_url=call.base_url,
            can_update=can_write and plural not in ("roletemplates",),
            can_delete=can_write and plural not in ("settings", "roletemplates"),
            current_token=call.auth.token["metadata"]["name"],
            me=call.user_id,
        )

    def _one(self, call: _Call, plural: str, obj: JSON, status: int = 200) -> web.Response:
        return _respond(status, self._view(call, plural, obj))

    def _require_admin(self, call: _Call, verb: str, type_: str) -> None:
        if not self.access.is_admin(call.auth.user):
            raise _denied(verb, type_)

    @staticmethod
    def _split(id_: str) -> tuple[str, str]:
        """``ns:name`` into its parts; `V3Error` NotFound when malformed."""
        namespace, _, name = id_.partition(":")
        if not _valid_name(namespace) or not _valid_name(name):
            raise _not_found(id_)
        return namespace, name

    @staticmethod
    def _string(body: Mapping[str, Any], key: str, *, required: bool = True) -> str:
        value = body.get(key)
        if value is None or value == "":
            if required:
                raise V3Error("MissingRequired", f"{key} is required")
            return ""
        if not isinstance(value, str):
            raise V3Error("InvalidFormat", f"{key} must be a string")
        return value

    # -- settings ----------------------------------------------------------------------------

    def _get_setting(self, name: str, base_url: str) -> web.Response:
        obj = self.state.settings.get(name)
        if obj is None:
            raise _not_found(name)
        return _respond(200, view("settings", obj, base_url=base_url))

    async def _settings(self, call: _Call, id_: str) -> web.StreamResponse:
        method = call.request.method
        if not id_:
            if method != "GET":
                raise _not_allowed(method)
            return self._collection(call, "settings", self.state.settings.list(), create=False)
        obj = self.state.settings.get(id_) if _valid_name(id_) else None
        if obj is None:
            raise _not_found(id_)
        if method == "GET":
            return self._one(call, "settings", obj)
        if method == "PUT":
            self._require_admin(call, "update", "setting")
            value = (await self._body(call.request)).get("value", "")
            if not isinstance(value, str):
                raise V3Error("InvalidFormat", "value must be a string")
            return self._one(call, "settings", await self.state.patch("settings", id_, {"value": value}))
        raise _not_allowed(method)

    # -- role templates ----------------------------------------------------------------------

    async def _roletemplates(self, call: _Call, id_: str) -> web.StreamResponse:
        if call.request.method != "GET":
            raise _denied(call.request.method.lower(), "roleTemplate")
        if not id_:
            return self._collection(call, "roletemplates", self.state.roletemplates.list(), create=False)
        obj = self.state.roletemplates.get(id_) if _valid_name(id_) else None
        if obj is None:
            raise _not_found(id_)
        return self._one(call, "roletemplates", obj)

    # -- users -------------------------------------------------------------------------------

    async def _users(self, call: _Call, id_: str) -> web.StreamResponse:  # noqa: PLR0912 - per verb
        method, admin = call.request.method, self.access.is_admin(call.auth.user)
        if not id_:
            if method == "GET":
                users = self.state.users.list()
                if not admin or call.request.query.get("me") == "true":
                    users = [u for u in users if u["metadata"]["name"] == call.user_id]
                return self._collection(call, "users", users, create=admin)
            if method == "POST":
                self._require_admin(call, "create", "user")
                body = await self._body(call.request)
                username = self._string(body, "username")
                password = self._string(body, "password")
                enabled = body.get("enabled", True)
                try:
                    user = await self.local.create_user(
                        username=username,
                        password=password,
                        display_name=self._string(body, "name", required=False),
                        enabled=enabled is not False,
                        must_change_password=bool(body.get("mustChangePassword", False)),
                    )
                except UserExistsError:
                    raise V3Error("NotUnique", "Username is already in use.", status=422) from None
                except PasswordPolicyError as exc:
                    raise V3Error("InvalidFormat", str(exc)) from None
                return self._one(call, "users", user, 201)
            raise _not_allowed(method)
        obj = self.state.users.get(id_) if _valid_name(id_) else None
        if obj is None or (not admin and id_ != call.user_id):
            raise _not_found(id_)
        if method == "GET":
            return self._one(call, "users", obj)
        self._require_admin(call, "update" if method == "PUT" else "delete", "user")
        if method == "PUT":
            body = await self._body(call.request)
            patch: JSON = {}
            if "enabled" in body:
                if not isinstance(body["enabled"], bool):
                    raise V3Error("InvalidFormat", "enabled must be a boolean")
                patch["enabled"] = body["enabled"]
            if "name" in body:
                patch["displayName"] = self._string(body, "name", required=False)
            if "description" in body:
                patch["description"] = self._string(body, "description", required=False)
            stored = await self.state.patch("users", id_, patch) if patch else obj
            return self._one(call, "users", stored)
        if method == "DELETE":
            if id_ == call.user_id:
                raise V3Error("InvalidAction", "you cannot delete yourself")
            await self.state.delete("users", id_)
            return self._one(call, "users", obj)
        raise _not_allowed(method)

    # -- tokens ------------------------------------------------------------------------------

    async def _tokens(self, call: _Call, id_: str) -> web.StreamResponse:
        method = call.request.method
        action = call.request.query.get("action")
        if not id_:
            if method == "POST" and action == "logout":
                return await self._logout(call)
            if method == "GET":
                mine = self.state.tokens.by_index("user", call.user_id)
                return self._collection(call, "tokens", mine, create=True)
            if method == "POST":
                return await self._create_token(call)
            raise _not_allowed(method)
        token = self.state.tokens.get(id_) if _valid_name(id_) else None
        if token is None or token.get("userId") != call.user_id:
            raise _not_found(id_)
        if method == "GET":
            return self._one(call, "tokens", token)
        if method == "PUT":
            body = await self._body(call.request)
            patch: JSON = {}
            if "enabled" in body:
                if not isinstance(body["enabled"], bool):
                    raise V3Error("InvalidFormat", "enabled must be a boolean")
                patch["enabled"] = body["enabled"]
            if "description" in body:
                patch["description"] = self._string(body, "description", required=False)
            stored = await self.state.patch("tokens", id_, patch) if patch else token
            return self._one(call, "tokens", stored)
        if method == "DELETE":
            await self.state.delete("tokens", id_)
            return web.Response(status=204)
        raise _not_allowed(method)

    async def _logout(self, call: _Call) -> web.StreamResponse:
        await self.state.delete("tokens", call.auth.token["metadata"]["name"])
        response = web.Response(status=200)
        response.set_cookie(COOKIE_NAME, "", path="/", max_age=0, secure=True, httponly=True)
        return response

    def _ttl(self, requested: object, *, default_minutes: int) -> int:
        """Rancher's IngestTTL: 0 or absent means the default; above the maximum is clamped to it."""
        if requested is None:
            requested = 0
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise V3Error("InvalidFormat", "ttl must be a non-negative integer (milliseconds)")
        maximum = self.state.setting_int("auth-token-max-ttl-minutes", 129600) * 60_000
        ttl = requested or default_minutes * 60_000
        return min(ttl, maximum) if maximum > 0 else ttl

    async def _create_token(self, call: _Call) -> web.StreamResponse:
        body = await self._body(call.request)
        user = self.state.users.get(call.user_id)
        if user is None:
            raise _Unauthenticated
        cluster = self._string(body, "clusterId", required=False)
        if cluster and (
            self.state.clusters.get(cluster) is None
            or not self.access.can_see_cluster(call.auth.user, cluster)
        ):
            raise V3Error("InvalidReference", f"cluster {cluster} is not valid", status=422)
        ttl = self._ttl(
            body.get("ttl"), default_minutes=self.state.setting_int("auth-token-default-ttl-minutes", 129600)
        )
        token, value = await self.issuer.create(
            user,
            ttl_millis=ttl,
            description=self._string(body, "description", required=False),
            derived=True,
            cluster=cluster,
        )
        shown = self._view(call, "tokens", token)
        shown["token"] = value
        return _respond(201, shown)

    # -- clusters ----------------------------------------------------------------------------

    async def _clusters(self, call: _Call, id_: str) -> web.StreamResponse:  # noqa: PLR0911, PLR0912 - per verb
        method = call.request.method
        user = call.auth.user
        if not id_:
            if method == "GET":
                clusters = self.access.filter_clusters(user, self.state.clusters.list())
                return self._collection(call, "clusters", clusters, create=True)
            if method == "POST":
                return await self._create_cluster(call)
            raise _not_allowed(method)
        if not _valid_name(id_) or not self.access.can_see_cluster(user, id_):
            raise _not_found(id_)
        obj = self.state.clusters.get(id_)
        if obj is None:
            raise _not_found(id_)
        action = call.request.query.get("action")
        if method == "POST" and action == "generateKubeconfig":
            return await self._generate_kubeconfig(call, obj)
        if method == "POST" and action in ("backupEtcd", "restoreFromEtcdBackup"):
            return await self._etcd_action(call, id_, action)
        if method == "POST" and action is not None:
            raise V3Error("InvalidAction", f"invalid action: {action}")
        if method == "GET":
            return self._one(call, "clusters", obj)
        if not self.access.owns_cluster(user, id_):
            raise _denied("update" if method == "PUT" else "delete", "cluster")
        if method == "PUT":
            body = await self._body(call.request)
            spec: JSON = {}
            if "name" in body:
                spec["displayName"] = self._string(body, "name")
            if "description" in body:
                spec["description"] = self._string(body, "description", required=False)
            stored = await self.state.patch("clusters", id_, {"spec": spec}) if spec else obj
            return self._one(call, "clusters", stored)
        if method == "DELETE":
            if (obj.get("spec") or {}).get("internal"):
                raise V3Error("InvalidAction", "the local cluster cannot be deleted")
            await self.state.delete("clusters", id_)
            await self._delete_cluster_objects(id_)
            if (obj.get("status") or {}).get("driver") == LOCAL_DRIVER and self.local_driver is not None:
                self.local_driver.remove(id_)
            return self._one(call, "clusters", obj)
        raise _not_allowed(method)

    async def _etcd_action(self, call: _Call, cluster_id: str, action: str) -> web.StreamResponse:
        """``backupEtcd`` (answers the new EtcdBackup) and ``restoreFromEtcdBackup`` (``etcdBackupId``),
        done by a node agent of the cluster (`corral.server.etcd_backups`); cluster owners only."""
        if self.etcd_backups is None:
            raise V3Error("ActionNotAvailable", f"action {action} is not available")
        if not self.access.owns_cluster(call.auth.user, cluster_id):
            raise _denied("update", "cluster")
        codes = {404: "NotFound", 422: "InvalidBodyContent", 503: "ClusterUnavailable"}
        try:
            if action == "backupEtcd":
                backup = await self.etcd_backups.backup(cluster_id)
                meta = backup["metadata"]
                view = {**backup, "type": "etcdBackup", "id": f"{meta['namespace']}:{meta['name']}"}
                return _respond(201, view)
            body = await self._body(call.request)
            result = await self.etcd_backups.restore(cluster_id, self._string(body, "etcdBackupId"))
        except EtcdBackupError as exc:
            raise V3Error(codes.get(exc.status, "ServerError"), str(exc)) from None
        return _respond(200, {"type": "etcdRestore", "clusterId": cluster_id, **result})

    async def _delete_cluster_objects(self, cluster_id: str) -> None:
        """What Rancher's cluster removal takes along: bindings, projects, registration tokens, namespaces."""
        for project in self.state.projects.by_index("cluster", cluster_id):
            for binding in self.state.prtbs.by_index("project", object_id(project)):
                meta = binding["metadata"]
                await self.state.delete(
                    "projectroletemplatebindings", meta["name"], namespace=meta["namespace"]
                )
            await self.state.delete("projects", project["metadata"]["name"], namespace=cluster_id)
            backing = str((project.get("status") or {}).get("backingNamespace") or "")
            if backing:
                await self.state.upstream.delete(f"/api/v1/namespaces/{backing}")
        for binding in self.state.crtbs.by_index("cluster", cluster_id):
            await self.state.delete(
                "clusterroletemplatebindings", binding["metadata"]["name"], namespace=cluster_id
            )
        for token in self.state.crts.list(cluster_id):
            await self.state.delete(
                "clusterregistrationtokens", token["metadata"]["name"], namespace=cluster_id
            )
        await self.state.upstream.delete(f"/api/v1/namespaces/{cluster_id}")

    async def _create_cluster(self, call: _Call) -> web.StreamResponse:
        body = await self._body(call.request)
        name = self._string(body, "name")
        if not _valid_name(name) or len(name) > 63:
            raise V3Error("InvalidFormat", "name must be a lowercase RFC 1123 label")
        if any((c.get("spec") or {}).get("displayName") == name for c in self.state.clusters.list()):
            raise V3Error("NotUnique", f"cluster name {name} is already in use", status=422)
        driver = self._string(body, "driver", required=False) or "imported"
        if driver not in ("imported", LOCAL_DRIVER) or (driver == LOCAL_DRIVER and self.local_driver is None):
            offered = "imported or local" if self.local_driver is not None else "imported only"
            raise V3Error("InvalidOption", f"driver {driver} is not supported here ({offered})", status=422)
        cluster = await self.state.create(
            "clusters",
            {
                "metadata": {"generateName": "c-", "annotations": {CREATOR_ANNOTATION: call.user_id}},
                "spec": {
                    "displayName": name,
                    "description": self._string(body, "description", required=False),
                    "internal": False,
                },
            },
        )
        cluster_id = cluster["metadata"]["name"]
        cluster = await self.state.patch_status("clusters", cluster_id, {"driver": driver, "conditions": []})
        await self.state.ensure_namespace(cluster_id)
        await self._bind_cluster(cluster_id, call.user_id, CLUSTER_OWNER)
        if driver == LOCAL_DRIVER and self.local_driver is not None:
            self.local_driver.start(cluster_id)
        return self._one(call, "clusters", cluster, 201)

    async def _bind_cluster(self, cluster_id: str, user_id: str, role: str) -> JSON:
        return await self.state.create(
            "clusterroletemplatebindings",
            {
                "metadata": {"generateName": "crtb-", "annotations": {CREATOR_ANNOTATION: user_id}},
                "clusterName": cluster_id,
                "userName": user_id,
                "userPrincipalName": f"local://{user_id}",
                "roleTemplateName": role,
            },
            namespace=cluster_id,
        )

    async def _generate_kubeconfig(self, call: _Call, cluster: JSON) -> web.StreamResponse:
        user = self.state.users.get(call.user_id)
        if user is None:
            raise _Unauthenticated
        cluster_id = cluster["metadata"]["name"]
        ttl = self._ttl(
            0, default_minutes=self.state.setting_int("kubeconfig-default-token-ttl-minutes", 43200)
        )
        if self.state.setting("kubeconfig-generate-token", "true").lower() != "true":
            raise V3Error("InvalidAction", "kubeconfig-generate-token is false: exec plugins are not offered")
        try:
            ace = ace_entries(
                cluster, nodes=await self._management_nodes(cluster) if wants_nodes(cluster) else ()
            )
        except AceEndpointsError as exc:
            raise V3Error("ServerError", str(exc)) from None
        _, value = await self.issuer.create(
            user,
            prefix=kubeconfig_token_prefix(call.user_id),
            ttl_millis=ttl,
            kind="kubeconfig",
            description="Kubeconfig token",
            derived=True,
            cluster=cluster_id if ace_enabled(cluster) else "",  # scoped, and so copied down, with ACE on
        )
        host = kubeconfig_host(self.state.setting("server-url"), call.request.host)
        config = token_kubeconfig(
            cluster_name=str((cluster.get("spec") or {}).get("displayName") or ""),
            cluster_id=cluster_id,
            host=host,
            token=value,
            cacerts=self.state.setting("cacerts"),
            ace=ace,
        )
        return _respond(200, {"config": config, "type": "generateKubeconfigOutput"})

    async def _management_nodes(self, cluster: JSON) -> list[JSON]:
        """The cluster's management Node objects, where the upstream serves them (corral's does not)."""
        path = f"/apis/management.cattle.io/v3/namespaces/{cluster['metadata']['name']}/nodes"
        try:
            return list((await self.state.upstream.list(path)).get("items") or [])
        except NotFoundError:
            return []

    # -- cluster registration tokens ---------------------------------------------------------

    async def _clusterregistrationtokens(self, call: _Call, id_: str) -> web.StreamResponse:
        user = call.auth.user

        def listing() -> list[JSON]:
            crts = self.state.crts.list()
            return [t for t in crts if self.access.owns_cluster(user, t["metadata"]["namespace"])]

        def find(namespace: str, name: str) -> JSON | None:
            obj = self.state.crts.get(f"{namespace}/{name}")
            return obj if obj is not None and self.access.owns_cluster(user, namespace) else None

        return await self._namespaced(
            call, id_, "clusterregistrationtokens", listing=listing, create=self._create_crt, find=find
        )

    async def _create_crt(self, call: _Call) -> JSON:
        body = await self._body(call.request)
        cluster_id = self._cluster_reference(body)
        if not self.access.owns_cluster(call.auth.user, cluster_id):
            raise _denied("create", "clusterRegistrationToken")
        token = generate_secret()
        url = self.state.setting("server-url") or call.base_url
        manifest = f"{url}/v3/import/{token}_{cluster_id}.yaml"
        return await self.state.create(
            "clusterregistrationtokens",
            {
                "metadata": {"generateName": "crt-", "annotations": {CREATOR_ANNOTATION: call.user_id}},
                "spec": {"clusterName": cluster_id},
                "status": {
                    "token": token,
                    "manifestUrl": manifest,
                    "command": f"kubectl apply -f {manifest}",
                    "insecureCommand": f"curl --insecure -sfL {manifest} | kubectl apply -f -",
                },
            },
            namespace=cluster_id,
        )

    def _cluster_reference(self, body: Mapping[str, Any]) -> str:
        """The body's ``clusterId``, which must name an existing cluster (InvalidReference otherwise)."""
        cluster_id = self._string(body, "clusterId")
        if not _valid_name(cluster_id) or self.state.clusters.get(cluster_id) is None:
            raise V3Error("InvalidReference", f"cluster {cluster_id} is not valid", status=422)
        return cluster_id

    async def _namespaced(
        self,
        call: _Call,
        id_: str,
        plural: str,
        *,
        listing: Callable[[], list[JSON]],
        create: Callable[[_Call], Awaitable[JSON]],
        find: Callable[[str, str], JSON | None],
        may_delete: Callable[[JSON], None] = lambda obj: None,
    ) -> web.StreamResponse:
        """List and create on the collection, get and delete on ``<namespace>:<name>``.

        The shape registration tokens and role-template bindings share: ``find`` answers None for
        what the caller may not see (NotFound, as Rancher hides it), ``may_delete`` raises
        PermissionDenied for what the caller sees but may not delete.
        """
        method = call.request.method
        if not id_:
            if method == "GET":
                return self._collection(call, plural, listing(), create=True)
            if method == "POST":
                return self._one(call, plural, await create(call), 201)
            raise _not_allowed(method)
        namespace, name = self._split(id_)
        obj = find(namespace, name)
        if obj is None:
            raise _not_found(id_)
        if method == "GET":
            return self._one(call, plural, obj)
        if method == "DELETE":
            may_delete(obj)
            await self.state.delete(plural, name, namespace=namespace)
            return self._one(call, plural, obj)
        raise _not_allowed(method)

    # -- bindings ----------------------------------------------------------------------------

    def _subject(self, body: Mapping[str, Any]) -> JSON:
        """The binding's subject: ``userId``/``userPrincipalId``, ``groupPrincipalId`` or ``groupId``."""
        user_id = self._string(body, "userId", required=False)
        group_principal = self._string(body, "groupPrincipalId", required=False)
        group = self._string(body, "groupId", required=False)
        principal = self._string(body, "userPrincipalId", required=False)
        if not user_id and principal.startswith("local://"):
            user_id = principal.removeprefix("local://")
        elif not user_id and principal:  # an external provider's principal: the user that logged in with it
            owners = self.state.users.by_index("principal", principal)
            user_id = str(owners[0]["metadata"]["name"]) if owners else ""
            if not user_id:
                raise V3Error("InvalidReference", f"no user has principal {principal}", status=422)
        if sum(map(bool, (user_id, group_principal, group))) != 1:
            raise V3Error(
                "MissingRequired",
                "exactly one of userId, userPrincipalId, groupPrincipalId or groupId is required",
            )
        if user_id:
            if not _valid_name(user_id) or self.state.users.get(user_id) is None:
                raise V3Error("InvalidReference", f"user {user_id} is not valid", status=422)
            return {"userName": user_id, "userPrincipalName": principal or f"local://{user_id}"}
        if group:
            return {"groupName": group}
        return {"groupPrincipalName": group_principal}

    def _role(self, body: Mapping[str, Any], context: str) -> str:
        role = self._string(body, "roleTemplateId")
        template = self.state.roletemplates.get(role) if _valid_name(role) else None
        if template is None or template.get("context") != context:
            raise V3Error(
                "InvalidReference", f"roleTemplate {role} is not a {context} role template", status=422
            )
        return role

    async def _clusterroletemplatebindings(self, call: _Call, id_: str) -> web.StreamResponse:
        user = call.auth.user

        def listing() -> list[JSON]:
            mine = {id(b) for b in self.access.cluster_bindings(user)}
            crtbs = self.state.crtbs.list()
            return [
                b for b in crtbs if id(b) in mine or self.access.owns_cluster(user, str(b.get("clusterName")))
            ]

        def find(namespace: str, name: str) -> JSON | None:
            obj = self.state.crtbs.get(f"{namespace}/{name}")
            return obj if obj is not None and self.access.can_see_cluster(user, namespace) else None

        def may_delete(obj: JSON) -> None:
            if not self.access.owns_cluster(user, str(obj["metadata"]["namespace"])):
                raise _denied("delete", "clusterRoleTemplateBinding")

        return await self._namespaced(
            call,
            id_,
            "clusterroletemplatebindings",
            listing=listing,
            create=self._create_crtb,
            find=find,
            may_delete=may_delete,
        )

    async def _create_crtb(self, call: _Call) -> JSON:
        body = await self._body(call.request)
        cluster_id = self._cluster_reference(body)
        if not self.access.owns_cluster(call.auth.user, cluster_id):
            raise _denied("create", "clusterRoleTemplateBinding")
        fields = {**self._subject(body), "roleTemplateName": self._role(body, "cluster")}
        return await self.state.create(
            "clusterroletemplatebindings",
            {
                "metadata": {"generateName": "crtb-", "annotations": {CREATOR_ANNOTATION: call.user_id}},
                "clusterName": cluster_id,
                **fields,
            },
            namespace=cluster_id,
        )

    async def _projectroletemplatebindings(self, call: _Call, id_: str) -> web.StreamResponse:
        user = call.auth.user

        def listing() -> list[JSON]:
            prtbs = self.state.prtbs.list()
            return [b for b in prtbs if self.access.can_see_project(user, str(b.get("projectName", "")))]

        def find(namespace: str, name: str) -> JSON | None:
            obj = self.state.prtbs.get(f"{namespace}/{name}")
            visible = obj is not None and self.access.can_see_project(user, str(obj.get("projectName", "")))
            return obj if visible else None

        def may_delete(obj: JSON) -> None:
            if not self.access.owns_project(user, str(obj.get("projectName", ""))):
                raise _denied("delete", "projectRoleTemplateBinding")

        return await self._namespaced(
            call,
            id_,
            "projectroletemplatebindings",
            listing=listing,
            create=self._create_prtb,
            find=find,
            may_delete=may_delete,
        )

    async def _create_prtb(self, call: _Call) -> JSON:
        body = await self._body(call.request)
        project_id = self._string(body, "projectId")
        project = self._project(project_id)
        if project is None:
            raise V3Error("InvalidReference", f"project {project_id} is not valid", status=422)
        if not self.access.owns_project(call.auth.user, project_id):
            raise _denied("create", "projectRoleTemplateBinding")
        fields = {**self._subject(body), "roleTemplateName": self._role(body, "project")}
        return await self._bind_project(project, project_id, fields, creator=call.user_id)

    def _project(self, project_id: str) -> JSON | None:
        cluster, _, name = project_id.partition(":")
        if not _valid_name(cluster) or not _valid_name(name):
            return None
        return self.state.projects.get(f"{cluster}/{name}")

    async def _bind_project(self, project: JSON, project_id: str, fields: JSON, *, creator: str) -> JSON:
        namespace = str((project.get("status") or {}).get("backingNamespace") or project["metadata"]["name"])
        return await self.state.create(
            "projectroletemplatebindings",
            {
                "metadata": {"generateName": "prtb-", "annotations": {CREATOR_ANNOTATION: creator}},
                "projectName": project_id,
                **fields,
            },
            namespace=namespace,
        )

    # -- global role bindings ----------------------------------------------------------------

    async def _globalrolebindings(self, call: _Call, id_: str) -> web.StreamResponse:
        method, admin = call.request.method, self.access.is_admin(call.auth.user)
        if not id_:
            if method == "GET":
                items = self.state.globalrolebindings.list()
                if not admin:
                    items = [b for b in items if b.get("userName") == call.user_id]
                return self._collection(call, "globalrolebindings", items, create=admin)
            if method == "POST":
                self._require_admin(call, "create", "globalRoleBinding")
                body = await self._body(call.request)
                role = self._string(body, "globalRoleId")
                if role not in ("admin", "user"):
                    raise V3Error("InvalidReference", f"globalRole {role} is not valid", status=422)
                subject = self._subject(body)
                if "userName" not in subject:
                    raise V3Error("MissingRequired", "userId is required")
                stored = await self.state.create(
                    "globalrolebindings",
                    {
                        "metadata": {
                            "generateName": "grb-",
                            "annotations": {CREATOR_ANNOTATION: call.user_id},
                        },
                        "userName": subject["userName"],
                        "globalRoleName": role,
                    },
                )
                return self._one(call, "globalrolebindings", stored, 201)
            raise _not_allowed(method)
        obj = self.state.globalrolebindings.get(id_) if _valid_name(id_) else None
        if obj is None or (not admin and obj.get("userName") != call.user_id):
            raise _not_found(id_)
        if method == "GET":
            return self._one(call, "globalrolebindings", obj)
        if method == "DELETE":
            self._require_admin(call, "delete", "globalRoleBinding")
            await self.state.delete("globalrolebindings", id_)
            return self._one(call, "globalrolebindings", obj)
        raise _not_allowed(method)

    # -- projects ----------------------------------------------------------------------------

    async def _projects(self, call: _Call, id_: str) -> web.StreamResponse:
        method, user = call.request.method, call.auth.user
        if not id_:
            if method == "GET":
                items = [
                    p for p in self.state.projects.list() if self.access.can_see_project(user, object_id(p))
                ]
                return self._collection(call, "projects", items, create=True)
            if method == "POST":
                return await self._create_project(call)
            raise _not_allowed(method)
        project = self._project(id_)
        if project is None or not self.access.can_see_project(user, id_):
            raise _not_found(id_)
        if method == "GET":
            return self._one(call, "projects", project)
        if method == "DELETE":
            if not self.access.owns_project(user, id_):
                raise _denied("delete", "project")
            cluster, _, name = id_.partition(":")
            for binding in self.state.prtbs.by_index("project", id_):
                metadata = binding["metadata"]
                await self.state.delete(
                    "projectroletemplatebindings", metadata["name"], namespace=metadata["namespace"]
                )
            await self.state.delete("projects", name, namespace=cluster)
            backing = str((project.get("status") or {}).get("backingNamespace") or "")
            if backing:
                await self.state.upstream.delete(f"/api/v1/namespaces/{backing}")
            return self._one(call, "projects", project)
        raise _not_allowed(method)

    async def _create_project(self, call: _Call) -> web.StreamResponse:
        body = await self._body(call.request)
        cluster_id = self._string(body, "clusterId")
        display = self._string(body, "name")
        if not _valid_name(cluster_id) or self.state.clusters.get(cluster_id) is None:
            raise V3Error("InvalidReference", f"cluster {cluster_id} is not valid", status=422)
        if not self.access.member_of_cluster(call.auth.user, cluster_id):
            raise _denied("create", "project")
        project = await self.state.create(
            "projects",
            {
                "metadata": {"generateName": "p-", "annotations": {CREATOR_ANNOTATION: call.user_id}},
                "spec": {
                    "clusterName": cluster_id,
                    "displayName": display,
                    "description": self._string(body, "description", required=False),
                },
            },
            namespace=cluster_id,
        )
        name = project["metadata"]["name"]
        backing = f"{cluster_id}-{name}"
        await self.state.ensure_namespace(backing)
        project = await self.state.patch(
            "projects", name, {"status": {"backingNamespace": backing}}, namespace=cluster_id
        )
        project_id = f"{cluster_id}:{name}"
        await self._bind_project(
            project,
            project_id,
            {
                "userName": call.user_id,
                "userPrincipalName": f"local://{call.user_id}",
                "roleTemplateName": PROJECT_OWNER,
            },
            creator=call.user_id,
        )
        return self._one(call, "projects", project, 201)


def login_error(status: int, code: str, message: str = "") -> web.Response:
    """The public API's error (``util.ReturnAPIError``): struct order, message omitted when empty."""
    body: JSON = {"code": code, "status": status}
    if message:
        body["message"] = message
    body["type"] = "error"
    body["baseType"] = "error"
    return _respond(status, body, escape_html=False)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

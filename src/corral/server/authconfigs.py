"""Rancher's external auth providers in the server: v3 auth configs, their logins, principals, refresh.

AuthConfig objects (``management.cattle.io/v3``, one per provider) hold the settings; the service
account's password and GitHub's client secret live in Secrets of ``cattle-global-data`` and the config
names them, as Rancher stores them. A first login creates the User with the provider's principal id;
every login and the periodic refresh (``auth-user-info-resync-cron``, ``auth-user-info-max-age-seconds``)
write the user's group principals to its UserAttribute, which the proxy, the impersonation accounts
and the cluster sync read through `ServerState.user_groups`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from corral.auth.tokens import COOKIE_NAME
from corral.errors import AlreadyExistsError, KubeAPIError, NotFoundError
from corral.server import norman
from corral.server.authn import Authenticated, TokenAuthenticator, TokenIssuer, expires_at, parse_time
from corral.server.providers import (
    AuthConfig,
    AuthProvider,
    GithubConfig,
    LoginResult,
    Principal,
    PrincipalNotFoundError,
    ProviderConfigError,
    ProviderError,
    RefreshSettings,
    auth_config_json,
    parse_auth_config,
    parse_principal_id,
    provider_for,
    refresh_due,
)
from corral.server.providers.errors import AccountDisabledError, LoginRefusedError, ProviderUnavailableError
from corral.server.providers.refresh import SETTING_MAX_AGE, SETTING_RESYNC_CRON
from corral.server.proxy_interfaces import AuthenticationError
from corral.server.state import JSON, ServerState
from corral.server.v3 import V3Error, json_body, login_body, login_error
from corral.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

__all__ = ["PROVIDERS", "AuthConfigAPI", "GroupRefresher"]

PROVIDERS: Final[Mapping[str, str]] = {
    "activedirectory": "activeDirectoryConfig",
    "openldap": "openLdapConfig",
    "github": "githubConfig",
}
"""Provider name (the AuthConfig's name and the principal ids' prefix) to its config type."""
_PUBLIC_PATHS: Final[Mapping[str, str]] = {
    "activedirectory": "/v3-public/activeDirectoryProviders/activedirectory",
    "openldap": "/v3-public/openLdapProviders/openldap",
    "github": "/v3-public/githubProviders/github",
}
_PROVIDER_TYPES: Final = {
    "activedirectory": "activeDirectoryProvider",
    "openldap": "openLdapProvider",
    "github": "githubProvider",
}
_TEST_INPUT: Final = {
    "activedirectory": "activeDirectoryConfig",
    "openldap": "ldapConfig",
    "github": "githubConfig",
}
"""The key of the config in each provider's ``testAndApply`` input (Rancher's *TestAndApplyInput)."""
_SECRET_FIELDS: Final = {
    "activedirectory": ("serviceAccountPassword",),
    "openldap": ("serviceAccountPassword",),
    "github": ("clientSecret",),
}
GLOBAL_DATA: Final = "cattle-global-data"
USER_SECRETS_NAMESPACE: Final = "cattle-system"
_JSON_TYPE: Final = "application/json"
_LOCAL_PREFIX: Final = "local://"


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _respond(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=norman.go_json(body), content_type=_JSON_TYPE)


def _error(code: str, message: str, status: int | None = None) -> web.Response:
    shown = status if status is not None else norman.ERROR_CODES.get(code, 500)
    return _respond(shown, norman.api_error(code=code, message=message, status=shown))


def principal_json(principal: Principal) -> JSON:
    """A principal as Rancher stores it in a UserAttribute and a token: the id is ``metadata.name``."""
    body: JSON = {"metadata": {"name": principal.id}}
    for key, value in (
        ("displayName", principal.display_name),
        ("loginName", principal.login_name),
        ("profilePicture", principal.profile_picture),
        ("profileURL", principal.profile_url),
        ("principalType", principal.principal_type),
        ("me", principal.me),
        ("memberOf", principal.member_of),
        ("provider", principal.provider),
    ):
        if value:
            body[key] = value
    return body


def _principal_view(item: Mapping[str, Any], *, base_url: str) -> JSON:
    """A stored principal (``metadata.name`` is its id) as a v3 ``principal`` resource."""
    id_ = str((item.get("metadata") or {}).get("name") or "")
    values = {k: v for k, v in item.items() if k != "metadata"}
    link = f"{base_url}/v3/principals/{_quote(id_)}"
    return norman.resource(type_="principal", id_=id_, values=values, links={"self": link})


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _secret_name(provider: str, field_name: str) -> str:
    """``openldapconfig-serviceaccountpassword``: Rancher's name for an auth config's secret field."""
    return f"{PROVIDERS[provider].lower()}-{field_name.lower()}"


class _RefusedError(Exception):
    """Ends an external login with the public API's error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class AuthConfigAPI:
    """The auth-config, principal and external-login handlers, and each enabled provider's client."""

    def __init__(
        self,
        *,
        state: ServerState,
        authenticator: TokenAuthenticator,
        issuer: TokenIssuer,
        timeout: float | None = None,
    ) -> None:
        self.state = state
        self.authenticator = authenticator
        self.issuer = issuer
        self.timeout = timeout
        self._providers: dict[str, tuple[str, AuthProvider]] = {}
        self._retired: list[AuthProvider] = []

    @property
    def configs(self) -> Any:
        return self.state.informers["authconfigs"]

    # -- setup -------------------------------------------------------------------------------

    async def ensure_configs(self) -> None:
        """Create the disabled AuthConfig of each provider (and local's, enabled) when missing."""
        wanted: list[JSON] = [{"metadata": {"name": "local"}, "type": "localConfig", "enabled": True}]
        wanted += [
            {"metadata": {"name": name}, "type": kind, "enabled": False, "accessMode": "unrestricted"}
            for name, kind in PROVIDERS.items()
        ]
        for body in wanted:
            if self.configs.get(body["metadata"]["name"]) is None:
                with contextlib.suppress(AlreadyExistsError):
                    await self.state.create("authconfigs", body)

    def add_routes(self, app: web.Application) -> None:
        """Mount before `corral.server.v3.V3API`'s catch-all routes."""
        for prefix in ("/v3/authConfigs", "/v3/authconfigs"):
            app.router.add_route("*", prefix, self.config_collection)
            app.router.add_route("*", prefix + "/{name}", self.config_resource)
        app.router.add_route("*", "/v3/principals", self.principals)
        for name, path in _PUBLIC_PATHS.items():
            app.router.add_route("*", path, self._public_login_handler(name))
        app.router.add_route("GET", "/v3-public/authProviders", self.public_providers)

    async def close(self) -> None:
        for _, provider in self._providers.values():
            await provider.aclose()
        for provider in self._retired:
            await provider.aclose()
        self._providers.clear()
        self._retired.clear()

    # -- providers ---------------------------------------------------------------------------

    async def _read_secret(self, reference: object, field_name: str) -> str:
        """The value a ``cattle-global-data:<name>`` reference points at ("" when absent)."""
        if not isinstance(reference, str) or not reference.startswith(GLOBAL_DATA + ":"):
            return reference if isinstance(reference, str) else ""
        name = reference.split(":", 1)[1]
        try:
            secret = await self.state.upstream.get(f"/api/v1/namespaces/{GLOBAL_DATA}/secrets/{name}")
        except NotFoundError:
            return ""
        raw = (secret.get("data") or {}).get(field_name.lower(), "")
        return base64.b64decode(raw).decode() if raw else ""

    async def _config_of(self, name: str, obj: Mapping[str, Any]) -> AuthConfig:
        data = dict(obj)
        for field_name in _SECRET_FIELDS[name]:
            data[field_name] = await self._read_secret(obj.get(field_name), field_name)
        return parse_auth_config(data)

    async def provider(self, name: str) -> AuthProvider | None:
        """The enabled provider ``name`` (made again when its AuthConfig changes); None when disabled."""
        obj = self.configs.get(name)
        if name not in PROVIDERS or obj is None or obj.get("enabled") is not True:
            return None
        version = str(obj["metadata"].get("resourceVersion", ""))
        cached = self._providers.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        provider = provider_for(await self._config_of(name, obj), timeout=self.timeout)
        if cached is not None:
            self._retired.append(cached[1])
        self._providers[name] = (version, provider)
        return provider

    # -- plumbing ----------------------------------------------------------------------------

    async def _guard(self, request: web.Request, work: Callable[[], Awaitable[web.Response]]) -> web.Response:
        try:
            return await work()
        except V3Error as exc:
            return _error(exc.code, exc.message, exc.status)
        except ProviderConfigError as exc:
            return _error(exc.code, str(exc), exc.status)
        except ProviderError as exc:
            return _error(exc.code, str(exc), exc.status)
        except AuthenticationError:
            return _respond(401, norman.must_authenticate())
        except KubeAPIError as exc:
            logger.warning("%s %s: the upstream failed: %s", request.method, request.path, exc)
            return _error("ServerError", "the management cluster could not be reached or failed")

    async def _admin(self, request: web.Request) -> Authenticated:
        auth = await self.authenticator.authenticate_headers(request.headers, cluster="")
        if not self.state.is_admin(auth.user_id):
            raise V3Error("PermissionDenied", "can not access authConfigs ")
        return auth

    @staticmethod
    async def _body(request: web.Request) -> JSON:
        return json_body(await request.read())

    @staticmethod
    def _base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # -- /v3/authConfigs ---------------------------------------------------------------------

    def _view(self, obj: Mapping[str, Any], base_url: str) -> JSON:
        name = str(obj["metadata"]["name"])
        hidden = {"apiVersion", "kind", "metadata", *_SECRET_FIELDS.get(name, ())}
        values = {key: value for key, value in obj.items() if key not in hidden}
        values["name"] = name
        values["created"] = obj["metadata"].get("creationTimestamp")
        values["uuid"] = obj["metadata"].get("uid")
        url = f"{base_url}/v3/authConfigs/{name}"
        actions: dict[str, str] = {}
        if name in PROVIDERS:
            actions["testAndApply"] = f"{url}?action=testAndApply"
        if name == "github":
            actions["configureTest"] = f"{url}?action=configureTest"
        if obj.get("enabled") is True and name != "local":
            actions["disable"] = f"{url}?action=disable"
        links = {"self": url, "update": url}
        return norman.resource(
            type_=str(obj.get("type") or "authConfig"), id_=name, values=values, links=links, actions=actions
        )

    async def config_collection(self, request: web.Request) -> web.Response:
        async def work() -> web.Response:
            await self._admin(request)
            if request.method != "GET":
                raise V3Error("MethodNotAllow", f"method {request.method} not allowed")
            base = self._base_url(request)
            items = sorted(self.configs.list(), key=lambda o: str(o["metadata"]["name"]))
            body = norman.collection(
                resource_type="authConfig",
                self_url=f"{base}/v3/authConfigs",
                data=[self._view(obj, base) for obj in items],
            )
            return _respond(200, body)

        return await self._guard(request, work)

    async def config_resource(self, request: web.Request) -> web.Response:
        return await self._guard(request, lambda: self._config_resource(request))

    async def _config_resource(self, request: web.Request) -> web.Response:
        auth = await self._admin(request)
        name = request.match_info["name"]
        obj = self.configs.get(name)
        if obj is None:
            raise V3Error("NotFound", f"{name} not found")
        action = request.query.get("action")
        base = self._base_url(request)
        if request.method == "GET" and action is None:
            return _respond(200, self._view(obj, base))
        if request.method == "PUT" and action is None and name in PROVIDERS:
            return _respond(200, self._view(await self._update(name, obj, await self._body(request)), base))
        if request.method != "POST" or action is None:
            raise V3Error("MethodNotAllow", f"method {request.method} not allowed")
        if action == "disable" and obj.get("enabled") is True and name in PROVIDERS:
            stored = await self.state.patch("authconfigs", name, {"enabled": False})
            logger.info("auth provider %s disabled", name)
            return _respond(200, self._view(stored, base))
        if action == "configureTest" and name == "github":
            config = parse_auth_config(
                {**await self._body(request), "type": PROVIDERS[name]}, require_complete=False
            )
            assert isinstance(config, GithubConfig)
            redirect = f"{config.web_url}/login/oauth/authorize?client_id={_quote(config.client_id)}"
            return _respond(200, {"redirectUrl": redirect, "type": "githubConfigTestOutput"})
        if action == "testAndApply" and name in PROVIDERS:
            return await self._test_and_apply(request, auth, name, obj)
        raise V3Error("InvalidAction", f"invalid action: {action}")

    async def _save_secrets(self, name: str, values: Mapping[str, Any]) -> dict[str, str]:
        """Store each given secret field in its Secret; the references the AuthConfig keeps."""
        refs: dict[str, str] = {}
        for field_name in _SECRET_FIELDS[name]:
            value = values.get(field_name)
            if not isinstance(value, str) or not value or value.startswith(GLOBAL_DATA + ":"):
                continue
            secret_name = _secret_name(name, field_name)
            body: JSON = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": GLOBAL_DATA},
                "type": "Opaque",
                "stringData": {field_name.lower(): value},
            }
            collection = f"/api/v1/namespaces/{GLOBAL_DATA}/secrets"
            try:
                await self.state.upstream.create(collection, body)
            except AlreadyExistsError:
                await self.state.upstream.replace(f"{collection}/{secret_name}", body)
            refs[field_name] = f"{GLOBAL_DATA}:{secret_name}"
        return refs

    async def _store(
        self, name: str, current: Mapping[str, Any], config: AuthConfig, refs: Mapping[str, str]
    ) -> JSON:
        body: JSON = {
            "apiVersion": current.get("apiVersion"),
            "kind": current.get("kind"),
            "metadata": current["metadata"],
            **auth_config_json(config),
        }
        for field_name in _SECRET_FIELDS[name]:
            reference = refs.get(field_name) or current.get(field_name)
            if reference:
                body[field_name] = reference
        return await self.state.replace("authconfigs", body)

    async def _merged_config(
        self, name: str, current: Mapping[str, Any], given: Mapping[str, Any], *, complete: bool
    ) -> AuthConfig:
        data = {**{k: v for k, v in current.items() if k != "metadata"}, **given, "type": PROVIDERS[name]}
        for field_name in _SECRET_FIELDS[name]:
            value = given.get(field_name)
            if not isinstance(value, str) or not value or value.startswith(GLOBAL_DATA + ":"):
                data[field_name] = await self._read_secret(current.get(field_name), field_name)
        return parse_auth_config(data, require_complete=complete)

    async def _update(self, name: str, current: JSON, body: Mapping[str, Any]) -> JSON:
        enabled = body.get("enabled", current.get("enabled") is True)
        if not isinstance(enabled, bool):
            raise V3Error("InvalidFormat", "enabled must be a boolean")
        config = await self._merged_config(name, current, body, complete=enabled)
        refs = await self._save_secrets(name, body)
        return await self._store(name, current, config, refs)

    async def _test_and_apply(
        self, request: web.Request, auth: Authenticated, name: str, current: JSON
    ) -> web.Response:
        body = await self._body(request)
        given = body.get(_TEST_INPUT[name])
        if not isinstance(given, dict):
            raise V3Error("MissingRequired", f"{_TEST_INPUT[name]} is required")
        enabled = body.get("enabled", False)
        if not isinstance(enabled, bool):
            raise V3Error("InvalidFormat", "enabled must be a boolean")
        config = await self._merged_config(name, current, {**given, "enabled": enabled}, complete=True)
        provider = provider_for(config, timeout=self.timeout)
        try:
            result = await provider.test_config(body)
        except LoginRefusedError as exc:
            raise V3Error("Unauthorized", f"the test login was refused: {exc}", status=401) from None
        finally:
            await provider.aclose()
        owner = self.state.users.by_index("principal", result.user.id)
        if owner and owner[0]["metadata"]["name"] != auth.user_id:
            raise V3Error("InvalidState", f"principal {result.user.id} belongs to another user", status=422)
        refs = await self._save_secrets(name, given)
        await self._store(name, current, config, refs)
        logger.info("auth provider %s configured (enabled: %s) by %s", name, enabled, auth.user_id)
        user = self.state.users.get(auth.user_id) or {}
        ids = [str(p) for p in user.get("principalIds") or ()]
        if result.user.id not in ids:
            user = await self.state.patch("users", auth.user_id, {"principalIds": [*ids, result.user.id]})
        await self.record_login(user, name, result)
        return await self._issue(user, name, result, description=f"Token via {name} configuration")

    # -- logins ------------------------------------------------------------------------------

    def _public_login_handler(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if request.method == "GET":
                return await self._public_provider(request, name)
            if request.method != "POST":
                return login_error(405, "MethodNotAllow", f"method {request.method} not allowed")
            if request.query.get("action") != "login":
                return login_error(404, "ActionNotAvailable")
            try:
                return await self.login(request, name)
            except KubeAPIError as exc:
                logger.warning("%s login: the upstream failed: %s", name, exc)
                return login_error(
                    500, "ServerError", "the management cluster could not be reached or failed"
                )

        return handler

    async def _public_provider(self, request: web.Request, name: str) -> web.Response:
        obj = self.configs.get(name)
        if obj is None or obj.get("enabled") is not True:
            return login_error(404, "NotFound", f"{name} is not enabled")
        return _respond(200, self._provider_view(name, obj, self._base_url(request)))

    def _provider_view(self, name: str, obj: Mapping[str, Any], base_url: str) -> JSON:
        url = base_url + _PUBLIC_PATHS[name]
        values: JSON = {}
        if name == "github":
            config = parse_auth_config({**obj, "type": PROVIDERS[name]}, require_complete=False)
            assert isinstance(config, GithubConfig)
            values["redirectUrl"] = (
                f"{config.web_url}/login/oauth/authorize?client_id={_quote(config.client_id)}"
            )
        return norman.resource(
            type_=_PROVIDER_TYPES[name],
            id_=name,
            values=values,
            links={"self": url},
            actions={"login": f"{url}?action=login"},
        )

    async def public_providers(self, request: web.Request) -> web.Response:
        base = self._base_url(request)
        data = [
            norman.resource(
                type_="localProvider",
                id_="local",
                values={},
                links={"self": f"{base}/v3-public/localProviders/local"},
            )
        ]
        for name in PROVIDERS:
            obj = self.configs.get(name)
            if obj is not None and obj.get("enabled") is True:
                data.append(self._provider_view(name, obj, base))
        body = norman.collection(
            resource_type="authProvider", self_url=f"{base}/v3-public/authProviders", data=data
        )
        return _respond(200, body)

    def _has_bindings(self, user_id: str | None) -> Callable[[Sequence[str]], bool]:
        """Rancher's restricted mode: a user or one of its groups holds a cluster or project role."""

        def check(principal_ids: Sequence[str]) -> bool:
            for informer in (self.state.crtbs, self.state.prtbs):
                if user_id and informer.by_index("user", user_id):
                    return True
                if any(informer.by_index("group", pid) for pid in principal_ids):
                    return True
            return False

        return check

    async def login(self, request: web.Request, name: str) -> web.Response:
        """``POST /v3-public/<kind>Providers/<name>?action=login``: Rancher's answer and token."""
        body = login_body(await request.read())
        if body is None:
            return login_error(422, "InvalidBodyContent")
        try:
            user, result = await self._external_login(name, body)
        except _RefusedError as exc:
            return login_error(exc.status, exc.code, exc.message)
        await self.record_login(user, name, result)
        ttl = self.state.setting_int("auth-user-session-ttl-minutes", 960) * 60_000
        description = body.get("description") if isinstance(body.get("description"), str) else ""
        cookie = body.get("responseType") == "cookie"
        return await self._issue(
            user, name, result, description=str(description or ""), ttl=ttl, status=201, cookie=cookie
        )

    async def _external_login(self, name: str, body: Mapping[str, Any]) -> tuple[JSON, LoginResult]:
        """The provider's login, the access mode, and the user (created on a first login)."""
        try:
            provider = await self.provider(name)
        except ProviderError as exc:
            logger.warning("%s: the stored config does not load: %s", name, exc)
            raise _RefusedError(500, "ServerError", f"{name} is not configured properly") from None
        if provider is None:
            raise _RefusedError(404, "NotFound", f"auth provider {name} is not enabled")
        try:
            result = await provider.test_config(body)
        except (LoginRefusedError, PrincipalNotFoundError) as exc:
            reason = "the account is disabled" if isinstance(exc, AccountDisabledError) else "refused"
            logger.info("%s login refused (%s)", name, reason)
            raise _RefusedError(401, "Unauthorized", "authentication failed") from None
        except ProviderError as exc:
            if isinstance(exc, ProviderUnavailableError):
                logger.warning("%s login failed: %s", name, exc)
            raise _RefusedError(exc.status, exc.code, str(exc)) from None
        found = self.state.users.by_index("principal", result.user.id)
        existing = found[0] if found else None
        user_id = str(existing["metadata"]["name"]) if existing else None
        others = [str(p) for p in (existing or {}).get("principalIds") or ()]
        if not provider.check_access(
            result.user.id,
            result.groups,
            other_user_principal_ids=others,
            has_role_bindings=self._has_bindings(user_id),
        ):
            logger.info("%s login of %s refused by the access mode", name, result.user.id)
            raise _RefusedError(403, "PermissionDenied", "the access mode does not admit this user")
        user = existing or await self._create_user(result)
        if user.get("enabled") is False:
            raise _RefusedError(403, "PermissionDenied", "")
        return user, result

    async def _issue(
        self,
        user: Mapping[str, Any],
        name: str,
        result: LoginResult,
        *,
        description: str,
        ttl: int = 0,
        status: int = 200,
        cookie: bool = False,
    ) -> web.Response:
        token, value = await self.issuer.create(
            user,
            ttl_millis=ttl,
            kind="session",
            description=description,
            auth_provider=name,
            principal=principal_json(result.user),
        )
        data = {
            "baseType": "token",
            "expiresAt": expires_at(token),
            "id": token["metadata"]["name"],
            "token": value,
            "type": "token",
        }
        if not cookie:
            return _respond(status, data)
        response = web.Response(status=200)
        response.set_cookie(COOKIE_NAME, value, path="/", secure=True, httponly=True, samesite="Lax")
        return response

    async def _create_user(self, result: LoginResult) -> JSON:
        """Rancher's EnsureUser: a ``u-`` user whose principal ids are the provider's and its local one."""
        user = await self.state.create(
            "users",
            {
                "metadata": {"generateName": "u-"},
                "displayName": result.user.display_name,
                "username": "",
                "principalIds": [result.user.id],
                "enabled": True,
            },
        )
        user_id = str(user["metadata"]["name"])
        logger.info("created user %s for %s", user_id, result.user.id)
        return await self.state.patch(
            "users", user_id, {"principalIds": [result.user.id, f"{_LOCAL_PREFIX}{user_id}"]}
        )

    async def record_login(self, user: Mapping[str, Any], name: str, result: LoginResult) -> None:
        """The UserAttribute's group principals and extras for the provider; the provider secret stored."""
        user_id = str(user["metadata"]["name"])
        extras = {
            "principalid": [result.user.id],
            "username": [result.user.login_name or result.user.display_name],
        }
        await self._write_groups(user_id, name, result.groups, extras=extras, login=True)
        if result.provider_secret:
            await self._save_user_secret(user_id, name, result.provider_secret)

    async def _write_groups(
        self,
        user_id: str,
        name: str,
        groups: Sequence[Principal],
        *,
        extras: Mapping[str, list[str]] | None = None,
        login: bool = False,
    ) -> None:
        now = _now_text()
        items = [principal_json(group) for group in groups]
        existing = self.state.userattributes.get(user_id)
        if existing is None:
            body: JSON = {
                "metadata": {"name": user_id},
                "UserName": "",
                "GroupPrincipals": {name: {"items": items}},
                "ExtraByProvider": {name: dict(extras or {})},
                "LastRefresh": now,
                "NeedsRefresh": False,
                "lastLogin": now,
            }
            try:
                await self.state.create("userattributes", body)
                return
            except AlreadyExistsError:
                pass
        patch: JSON = {"GroupPrincipals": {name: {"items": items}}, "LastRefresh": now, "NeedsRefresh": False}
        if extras is not None:
            patch["ExtraByProvider"] = {name: dict(extras)}
        if login:
            patch["lastLogin"] = now
        await self.state.patch("userattributes", user_id, patch)

    async def _save_user_secret(self, user_id: str, name: str, secret: str) -> None:
        """Rancher's token manager keeps a provider's token in ``cattle-system/<user>-secret``."""
        collection = f"/api/v1/namespaces/{USER_SECRETS_NAMESPACE}/secrets"
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{user_id}-secret", "namespace": USER_SECRETS_NAMESPACE},
            "stringData": {name: secret},
        }
        try:
            await self.state.upstream.create(collection, body)
        except AlreadyExistsError:
            await self.state.upstream.patch(f"{collection}/{user_id}-secret", {"stringData": {name: secret}})

    async def user_secret(self, user_id: str, name: str) -> str:
        try:
            secret = await self.state.upstream.get(
                f"/api/v1/namespaces/{USER_SECRETS_NAMESPACE}/secrets/{user_id}-secret"
            )
        except NotFoundError:
            return ""
        raw = (secret.get("data") or {}).get(name, "")
        return base64.b64decode(raw).decode() if raw else ""

    # -- /v3/principals ----------------------------------------------------------------------

    async def principals(self, request: web.Request) -> web.Response:
        return await self._guard(request, lambda: self._principals(request))

    async def _principals(self, request: web.Request) -> web.Response:
        auth = await self.authenticator.authenticate_headers(request.headers, cluster="")
        base = self._base_url(request)
        action = request.query.get("action")
        if request.method == "GET" and action is None:
            items = self._own_principals(auth)
        elif request.method == "POST" and action == "search":
            body = await self._body(request)
            query = body.get("name", "")
            kind = body.get("principalType") or None
            if not isinstance(query, str) or kind not in (None, "user", "group"):
                raise V3Error("InvalidFormat", "name must be a string and principalType user or group")
            items = await self._search(auth, query, kind)
        else:
            raise V3Error("MethodNotAllow", f"method {request.method} not allowed")
        body_out = norman.collection(
            resource_type="principal",
            self_url=f"{base}/v3/principals",
            data=[_principal_view(item, base_url=base) for item in items],
            actions={"search": f"{base}/v3/principals?action=search"},
        )
        return _respond(200, body_out)

    def _own_principals(self, auth: Authenticated) -> list[JSON]:
        me = auth.token.get("userPrincipal")
        items: list[JSON] = [dict(me)] if isinstance(me, Mapping) else []
        attribute = self.state.userattributes.get(auth.user_id) or {}
        for principals in (attribute.get("GroupPrincipals") or {}).values():
            items.extend(dict(item) for item in (principals or {}).get("items") or ())
        return items

    async def _search(self, auth: Authenticated, query: str, kind: str | None) -> list[JSON]:
        """The caller's provider; a local caller (an admin setting up bindings) searches local users
        and every enabled directory, and GitHub when it holds a GitHub token of its own."""
        own = str(auth.token.get("authProvider") or "local")
        names = [own] if own in PROVIDERS else ["local", *PROVIDERS]
        found: list[JSON] = []
        for name in names:
            if name == "local":
                found.extend(self._search_local(query) if kind in (None, "user") else [])
                continue
            provider = await self.provider(name)
            if provider is None:
                continue
            secret = await self.user_secret(auth.user_id, name) if name == "github" else ""
            if name == "github" and not secret:
                continue
            principals = await provider.search_principals(
                query, "user" if kind == "user" else "group" if kind else None, secret=secret
            )
            found.extend(principal_json(p) for p in principals)
        return found

    def _search_local(self, query: str) -> list[JSON]:
        found = []
        for user in self.state.users.list():
            username, display = str(user.get("username") or ""), str(user.get("displayName") or "")
            if not username:
                continue
            if username.startswith(query) or display.startswith(query):
                found.append(
                    {
                        "metadata": {"name": f"{_LOCAL_PREFIX}{user['metadata']['name']}"},
                        "displayName": display or username,
                        "loginName": username,
                        "principalType": "user",
                        "provider": "local",
                    }
                )
        return found

    # -- refresh -----------------------------------------------------------------------------

    async def refresh_user(
        self, user: Mapping[str, Any], *, force: bool = False, now: datetime | None = None
    ) -> bool:
        """Refresh the user's groups from each enabled provider it has a principal of; True if written."""
        user_id = str(user["metadata"]["name"])
        moment = now or datetime.now(UTC)
        attribute = self.state.userattributes.get(user_id) or {}
        settings = _refresh_settings(self.state)
        last = parse_time(attribute.get("LastRefresh"))
        if not refresh_due(last_refresh=last, now=moment, max_age=settings.max_age, force=force):
            return False
        wrote = False
        for pid in user.get("principalIds") or ():
            try:
                name, scope, _ = parse_principal_id(str(pid))
            except ProviderConfigError:
                continue
            provider = await self.provider(name) if scope == "user" else None
            if provider is None:
                continue
            secret = await self.user_secret(user_id, name) if name == "github" else ""
            try:
                groups = await provider.refresh(str(pid), secret=secret)
            except (PrincipalNotFoundError, AccountDisabledError, LoginRefusedError) as exc:
                logger.info("refresh of %s: %s; its %s groups are dropped", user_id, exc, name)
                groups = ()
            except ProviderError as exc:
                logger.warning("refresh of %s from %s failed, its groups are kept: %s", user_id, name, exc)
                continue
            await self._write_groups(user_id, name, groups)
            wrote = True
        return wrote

    async def refresh_all(self, *, force: bool = False) -> int:
        """One pass over every user with an external principal; how many were rewritten."""
        users = [
            u
            for u in self.state.users.list()
            if any(not str(p).startswith(_LOCAL_PREFIX) for p in u.get("principalIds") or ())
        ]
        gate = asyncio.Semaphore(4)

        async def one(user: JSON) -> bool:
            async with gate:
                try:
                    return await self.refresh_user(user, force=force)
                except KubeAPIError as exc:
                    logger.warning("refresh of %s not written: %s", user["metadata"]["name"], exc)
                    return False

        done = await asyncio.gather(*(one(user) for user in users))
        return sum(done)


def _refresh_settings(state: ServerState) -> RefreshSettings:
    values = {SETTING_RESYNC_CRON: state.setting(SETTING_RESYNC_CRON, "0 0 * * *")}
    values[SETTING_MAX_AGE] = state.setting(SETTING_MAX_AGE, "3600")
    try:
        return RefreshSettings.from_settings(values)
    except ProviderConfigError as exc:
        logger.warning("the refresh settings are invalid, Rancher's defaults apply: %s", exc)
        return RefreshSettings.from_settings({})


class GroupRefresher:
    """Runs `AuthConfigAPI.refresh_all` on ``auth-user-info-resync-cron``, re-read as it changes."""

    def __init__(self, api: AuthConfigAPI, *, tick_seconds: float = 0.5) -> None:
        self.api = api
        self.tick_seconds = tick_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        schedule_text = ""
        due: datetime | None = None
        while True:
            now = datetime.now(UTC)
            settings = _refresh_settings(self.api.state)
            text = settings.resync.text if settings.resync is not None else ""
            if text != schedule_text:
                schedule_text = text
                due = settings.resync.next_after(now) if settings.resync is not None else None
            if due is not None and now >= due and settings.resync is not None:
                try:
                    count = await self.api.refresh_all()
                    logger.debug("user attribute refresh: %d users rewritten", count)
                except Exception:
                    logger.exception("the user attribute refresh failed")
                due = settings.resync.next_after(datetime.now(UTC))
            await asyncio.sleep(self.tick_seconds)

"""GitHub login, principal search and group refresh over GitHub's REST API, as Rancher's provider does.

An OAuth code is exchanged at the login host for an access token, then ``/user``, ``/user/orgs`` and
``/user/teams`` (pages followed through ``Link: rel="next"``) give the user principal and its
``github_org://`` and ``github_team://`` groups. github.com by default; ``hostname``/``tls`` select a
GitHub Enterprise server. Rate limits, 5xx and timeouts become typed errors; tokens are never logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import aiohttp
import yarl

from corral.server.providers.base import (
    LoginResult,
    Principal,
    PrincipalKind,
    check_access,
    parse_principal_id,
    principal_id,
    read_github_login,
)
from corral.server.providers.config import GithubConfig
from corral.server.providers.errors import (
    AccessDeniedError,
    LoginRefusedError,
    PrincipalNotFoundError,
    ProviderConfigError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    UpstreamStatusError,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMEOUT", "GithubProvider"]

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds one GitHub request (connect, headers and body) may take."""
_MAX_PAGES: Final = 100
_USER_AGENT: Final = "corral-auth"


def _retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait: ``Retry-After`` (seconds or an HTTP date), else ``X-RateLimit-Reset`` (epoch)."""
    value = headers.get("Retry-After", "").strip()
    if value:
        if value.isdigit():
            return float(value)
        try:
            return max(email.utils.parsedate_to_datetime(value).timestamp() - now, 0.0)
        except (TypeError, ValueError):
            pass
    reset = headers.get("X-RateLimit-Reset", "").strip()
    if reset.isdigit():
        return max(float(reset) - now, 0.0)
    return None


class GithubProvider:
    """``github``: one instance per config; it owns an aiohttp session (close it with `aclose`)."""

    def __init__(
        self,
        config: GithubConfig,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._config = config
        self._timeout = timeout
        self._session = session
        self._own_session = session is None

    @property
    def name(self) -> str:
        return "github"

    @property
    def config(self) -> GithubConfig:
        return self._config

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": _USER_AGENT},
            )
            self._own_session = True
        return self._session

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    # --- HTTP -------------------------------------------------------------------------------------------

    def _raise_for(self, response: aiohttp.ClientResponse, what: str) -> None:
        status = response.status
        if status in (200, 201):
            return
        headers = response.headers
        limited = headers.get("X-RateLimit-Remaining") == "0" or "Retry-After" in headers
        if status == 429 or (status == 403 and limited):
            wait = _retry_after(headers, now=time.time())
            hint = f"; retry in {wait:.0f} s" if wait is not None else ""
            raise RateLimitedError(
                f"github: {what}: rate limit exceeded (HTTP {status}){hint}", retry_after=wait
            )
        if status == 401:
            raise LoginRefusedError(f"github: {what}: the access token was refused (HTTP 401)")
        if status == 404:
            raise PrincipalNotFoundError(f"github: {what}: not found (HTTP 404)")
        raise UpstreamStatusError(f"github: {what}: unexpected HTTP {status}", upstream_status=status)

    async def _request(
        self,
        method: str,
        url: str | yarl.URL,
        what: str,
        *,
        token: str = "",
        form: Mapping[str, str] | None = None,
    ) -> tuple[Any, str]:
        """The decoded JSON body and the next page's URL ("" when none)."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"token {token}"
        try:
            async with self._http().request(method, url, headers=headers, data=form) as response:
                self._raise_for(response, what)
                body = await response.json(content_type=None)
                next_link = response.links.get("next")
                next_url = str(next_link.get("url", "")) if next_link else ""
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise ProviderTimeoutError(f"github: {what}: no answer within {self._timeout:g} s") from e
        except aiohttp.ClientResponseError as e:
            raise UpstreamStatusError(f"github: {what}: {e.message}", upstream_status=e.status) from e
        except aiohttp.ClientError as e:
            raise ProviderUnavailableError(f"github: {what}: {type(e).__name__}: {e}") from e
        except ValueError as e:
            raise UpstreamStatusError(f"github: {what}: the answer is not JSON", upstream_status=200) from e
        return body, next_url

    def _same_origin(self, url: str) -> bool:
        base, other = yarl.URL(self._config.api_url), yarl.URL(url)
        return (base.scheme, base.host, base.port) == (other.scheme, other.host, other.port)

    async def _pages(self, url: str, what: str, token: str) -> list[Any]:
        items: list[Any] = []
        next_url = url
        for _ in range(_MAX_PAGES):
            body, next_url = await self._request("GET", next_url, what, token=token)
            if not isinstance(body, list):
                raise UpstreamStatusError(f"github: {what}: expected a JSON list", upstream_status=200)
            items.extend(body)
            if not next_url:
                return items
            if not self._same_origin(next_url):
                raise UpstreamStatusError(f"github: {what}: a next page on another host", upstream_status=200)
        raise UpstreamStatusError(f"github: {what}: more than {_MAX_PAGES} pages", upstream_status=200)

    async def _access_token(self, code: str, config: GithubConfig) -> str:
        form = {"client_id": config.client_id, "client_secret": config.client_secret, "code": code}
        body, _ = await self._request("POST", config.login_url, "OAuth code exchange", form=form)
        if not isinstance(body, Mapping):
            raise UpstreamStatusError(
                "github: OAuth code exchange: expected a JSON object", upstream_status=200
            )
        if body.get("error"):
            # GitHub's error names the problem (bad_verification_code, incorrect_client_credentials).
            raise LoginRefusedError(f"github: OAuth code exchange refused: {body['error']}")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstreamStatusError("github: OAuth code exchange: no access_token", upstream_status=200)
        return token

    # --- principals -----------------------------------------------------------------------------------

    def _principal(self, scope: str, account: Mapping[str, Any]) -> Principal:
        account_id = account.get("id")
        if isinstance(account_id, bool) or not isinstance(account_id, int):
            raise UpstreamStatusError(f"github: a {scope} without a numeric id", upstream_status=200)
        login = str(account.get("slug") if scope == "team" else account.get("login") or "")
        return Principal(
            id=principal_id("github", scope, str(account_id)),
            principal_type="user" if scope == "user" else "group",
            provider="github",
            display_name=str(account.get("name") or login),
            login_name=login,
            profile_picture=str(
                account.get("avatar_url") or (account.get("organization") or {}).get("avatar_url") or ""
            ),
        )

    async def _groups(self, token: str) -> tuple[Principal, ...]:
        api = self._config.api_url
        orgs, teams = await asyncio.gather(
            self._pages(f"{api}/user/orgs?per_page=100", "list the user's organizations", token),
            self._pages(f"{api}/user/teams?per_page=100", "list the user's teams", token),
        )
        groups = [replace(self._principal("org", org), member_of=True) for org in orgs]
        groups += [replace(self._principal("team", team), member_of=True) for team in teams]
        return tuple(groups)

    async def _login(self, code: str, config: GithubConfig) -> LoginResult:
        token = await self._access_token(code, config)
        body, _ = await self._request("GET", f"{config.api_url}/user", "get the user", token=token)
        if not isinstance(body, Mapping):
            raise UpstreamStatusError("github: get the user: expected a JSON object", upstream_status=200)
        user = replace(self._principal("user", body), me=True)
        groups = await self._groups(token)
        return LoginResult(user=user, groups=groups, provider_secret=token)

    # --- the provider surface -------------------------------------------------------------------------

    async def login(self, credentials: Mapping[str, Any], *, host: str = "") -> LoginResult:
        """``host``: the request's host, whose OAuth app (hostnameToClientId) Rancher uses."""
        code = read_github_login(credentials)
        result = await self._login(code, self._config.for_host(host))
        if not self.check_access(result.user.id, result.groups):
            raise AccessDeniedError("unauthorized", code="Unauthorized", status=401)
        return result

    async def test_config(self, credentials: Mapping[str, Any]) -> LoginResult:
        return await self._login(read_github_login(credentials), self._config)

    async def refresh(self, user_id: str, *, secret: str = "") -> tuple[Principal, ...]:
        provider, scope, _ = parse_principal_id(user_id)
        if provider != "github" or scope != "user":
            raise ProviderConfigError(f"{user_id!r} is not a github_user principal id")
        if not secret:
            raise ProviderError(
                "github: refreshing a user needs their access token (the login's provider_secret)"
            )
        return await self._groups(secret)

    async def search_principals(
        self, query: str, kind: PrincipalKind | None = None, *, secret: str = ""
    ) -> tuple[Principal, ...]:
        if kind not in (None, "user", "group"):
            raise ProviderConfigError(f"expected user or group, got {kind!r}", field_name="principalType")
        if not secret:
            raise ProviderError("github: searching needs the searching user's access token")
        api = self._config.api_url
        terms = urllib.parse.quote(query, safe="")
        if kind is not None:
            terms += "+type:" + ("org" if kind == "group" else "user")
        url = yarl.URL(f"{api}/search/users?q={terms}", encoded=True)
        body, _ = await self._request("GET", url, "search users and organizations", token=secret)
        items = body.get("items", []) if isinstance(body, Mapping) else []
        found = [
            self._principal("org" if str(item.get("type", "")).lower() == "organization" else "user", item)
            for item in items
            if isinstance(item, Mapping)
        ]
        if kind in (None, "group"):
            found.extend(await self._search_teams(query, secret))
        return tuple(found)

    async def _search_teams(self, query: str, token: str) -> list[Principal]:
        """GitHub's search has no teams: list the teams of the user's organizations, match name prefixes."""
        api = self._config.api_url
        orgs = await self._pages(f"{api}/user/orgs?per_page=100", "list the user's organizations", token)
        prefix = query.lower()
        teams: list[Principal] = []
        for org in orgs:
            login = urllib.parse.quote(str(org.get("login", "")), safe="")
            for team in await self._pages(f"{api}/orgs/{login}/teams?per_page=100", "list teams", token):
                if str(team.get("name", "")).lower().startswith(prefix):
                    teams.append(self._principal("team", {**team, "organization": org}))
        return teams

    def check_access(
        self,
        user_id: str,
        groups: Iterable[Principal],
        *,
        other_user_principal_ids: Iterable[str] = (),
        has_role_bindings: Callable[[Sequence[str]], bool] | None = None,
    ) -> bool:
        return check_access(
            access_mode=self._config.access_mode,
            allowed_principal_ids=self._config.allowed_principal_ids,
            user_id=user_id,
            groups=groups,
            other_user_principal_ids=other_user_principal_ids,
            has_role_bindings=has_role_bindings,
        )

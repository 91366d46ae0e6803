"""Rancher tokens in the server: issuing them (stored hashed) and authenticating requests by them.

`TokenAuthenticator` is Rancher's token authenticator (``pkg/auth/requests/authenticate.go``): the
credential from Bearer, Basic or ``R_SESS``, the token from the watch-fed cache (a miss asks the
upstream once: another process may have just created it), the hash, expiry, ``enabled``, the
cluster scope and the user checked, groups and extras from the UserAttribute. `TokenIssuer` creates
tokens as Rancher's token manager does: ``generateName`` names, 54-character secrets, SHA3 hashes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from corral.auth import hashers
from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.auth.tokens import (
    TOKEN_NAME_PREFIX,
    TokenFormatError,
    credential_from_headers,
    expires_at_text,
    generate_secret,
    is_expired,
    is_idle_expired,
    last_used_update,
    parse_token,
)
from corral.errors import KubeAPIError
from corral.server.proxy_interfaces import AuthenticationError, AuthRequest
from corral.server.state import JSON, STORED, USER_ID_LABEL, ServerState

logger = logging.getLogger(__name__)

__all__ = [
    "HASHED_ANNOTATION",
    "KIND_LABEL",
    "Authenticated",
    "TokenAuthenticator",
    "TokenIssuer",
    "parse_time",
    "principal_id",
]

HASHED_ANNOTATION: Final = "authn.management.cattle.io/token-hashed"
KIND_LABEL: Final = "authn.management.cattle.io/kind"
LOCAL_PROVIDER: Final = "local"
IDLE_TTL_SETTING: Final = "auth-user-session-idle-ttl-minutes"
_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 timestamp as the apiserver writes it (``2026-01-02T03:04:05Z``); None if absent or bad."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def principal_id(user_id: str) -> str:
    """A local user's principal: ``local://<userID>``."""
    return f"local://{user_id}"


def user_principal(user: Mapping[str, Any]) -> JSON:
    """The ``userPrincipal`` a local login token carries."""
    name = str(user["metadata"]["name"])
    return {
        "metadata": {"name": principal_id(name)},
        "displayName": user.get("displayName") or user.get("username") or name,
        "loginName": user.get("username") or "",
        "principalType": "user",
        "me": True,
        "provider": LOCAL_PROVIDER,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated:
    """A request's user and the token object that authenticated it."""

    user: UserInfo
    token: JSON = field(repr=False)

    @property
    def user_id(self) -> str:
        return self.user.name


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verified:
    """A credential already checked against these very cached objects (the hot path's shortcut)."""

    token: JSON = field(repr=False)
    user: JSON = field(repr=False)
    attribute: JSON | None = field(repr=False)
    created: datetime | None
    ttl: int
    expires: datetime | None
    """``created`` plus the TTL: the token is expired from this moment on (None: never)."""
    last_activity: datetime | None
    info: UserInfo


class TokenAuthenticator:
    """Authenticates requests by Rancher token; implements the proxy's `Authenticator` protocol.

    A credential that passed every check is remembered with the cached token, user and
    UserAttribute objects it was checked against; while the caches still hold those very objects
    (the informers replace an object on every change), the next request with it skips the hash and
    the identity building, and only the time-dependent checks (expiry, cluster scope) run again.
    """

    #: Remembered credentials; the memo is emptied when it grows past this.
    MEMO_LIMIT: Final = 20_000

    def __init__(
        self, state: ServerState, *, now: Callable[[], datetime] | None = None, track_last_used: bool = True
    ) -> None:
        self.state = state
        self._now = now or (lambda: datetime.now(UTC))
        self._last_written: dict[str, datetime] = {}
        self._last_second: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._verified: dict[str, _Verified] = {}
        self.track_last_used = track_last_used

    async def authenticate(self, request: AuthRequest) -> UserInfo:
        return (await self.authenticate_headers(request.headers, cluster=request.cluster)).user

    async def authenticate_headers(self, headers: Mapping[str, str], *, cluster: str) -> Authenticated:
        """The user behind the request's token; `AuthenticationError` (never naming the secret) if none."""
        credential = credential_from_headers(headers)
        if credential is None:
            raise AuthenticationError("must authenticate")
        return await self.authenticate_value(credential.value, cluster=cluster)

    async def authenticate_value(self, value: str, *, cluster: str) -> Authenticated:
        hit = self._verified.get(value)
        if hit is not None and self._still_current(hit):
            return self._recheck(hit, cluster=cluster)
        return await self._verify(value, cluster=cluster)

    async def _verify(self, value: str, *, cluster: str) -> Authenticated:
        try:
            ref = parse_token(value)
        except TokenFormatError as exc:
            raise AuthenticationError(f"must authenticate: {exc}") from None
        if ref.ext or not _NAME.fullmatch(ref.name):
            raise AuthenticationError("must authenticate: no such token")
        token = await self.lookup(ref.name)
        if token is None:
            raise AuthenticationError("must authenticate: no such token")
        if not _secret_matches(token, ref.secret):
            raise AuthenticationError("must authenticate: invalid token")
        now = self._now()
        created = parse_time(token["metadata"].get("creationTimestamp"))
        ttl = _int(token.get("ttl"))
        if created is not None and is_expired(created, ttl, now=now):
            raise AuthenticationError("must authenticate: token is expired")
        last_activity = parse_time(token.get("activityLastSeenAt"))
        self._check_idle(last_activity, now)
        if token.get("enabled") is False:
            raise AuthenticationError("must authenticate: user's token is not enabled")
        scope = str(token.get("clusterName") or "")
        if scope and scope != cluster:
            raise AuthenticationError("must authenticate: clusterID does not match")
        provider = str(token.get("authProvider") or "")
        if not self.state.auth_provider_enabled(provider):
            raise AuthenticationError(f"must authenticate: auth provider {provider} is disabled")
        user_id = str(token.get("userId") or "")
        user = self.state.users.get(user_id)
        if user is None:
            user = await self.state.get_fresh("users", user_id) if _NAME.fullmatch(user_id) else None
        if user is None:
            raise AuthenticationError("must authenticate: user does not exist")
        if user.get("enabled") is False:
            raise AuthenticationError("must authenticate: user is not enabled")
        if self.track_last_used:
            self._touch(token, now)
        info = self.user_info(user, token_name=str(token["metadata"]["name"]))
        self._remember(
            value, token=token, user=user, created=created, ttl=ttl, last_activity=last_activity, info=info
        )
        return Authenticated(user=info, token=token)

    def _remember(
        self,
        value: str,
        *,
        token: JSON,
        user: JSON,
        created: datetime | None,
        ttl: int,
        last_activity: datetime | None,
        info: UserInfo,
    ) -> None:
        """Memo a verified credential, when it was checked against the caches' own objects."""
        if token is not self.state.tokens.get(info.token_name) or user is not self.state.users.get(info.name):
            return  # read fresh from the upstream: the caches will hold other objects
        if len(self._verified) >= self.MEMO_LIMIT:
            self._verified.clear()
        self._verified[value] = _Verified(
            token=token,
            user=user,
            attribute=self.state.userattributes.get(info.name),
            created=created,
            ttl=ttl,
            expires=created + timedelta(milliseconds=ttl) if created is not None and ttl else None,
            last_activity=last_activity,
            info=info,
        )

    def _check_idle(self, last_activity: datetime | None, now: datetime) -> None:
        """Rancher's IsIdleExpired: a session whose ``activityLastSeenAt`` is older than the idle TTL.

        Only tokens with recorded activity (sessions whose activity is reported) can idle out, and
        ``auth-user-session-idle-ttl-minutes`` 0 turns the check off; the setting is read each time.
        """
        if last_activity is None:
            return
        minutes = self.state.setting_int(IDLE_TTL_SETTING, 0)
        if is_idle_expired(last_activity, max(minutes, 0), now=now):
            raise AuthenticationError("must authenticate: session idle timeout expired")

    def _still_current(self, hit: _Verified) -> bool:
        user_id = hit.info.name
        return (
            self.state.tokens.get(hit.info.token_name) is hit.token
            and self.state.users.get(user_id) is hit.user
            and self.state.userattributes.get(user_id) is hit.attribute
        )

    def _recheck(self, hit: _Verified, *, cluster: str) -> Authenticated:
        """The checks that depend on the moment and the request, for a remembered credential."""
        now = self._now()
        if hit.expires is not None and now >= hit.expires:  # is_expired, with the sum made once
            raise AuthenticationError("must authenticate: token is expired")
        self._check_idle(hit.last_activity, now)
        scope = str(hit.token.get("clusterName") or "")
        if scope and scope != cluster:
            raise AuthenticationError("must authenticate: clusterID does not match")
        if self.track_last_used:
            self._touch(hit.token, now)
        return Authenticated(user=hit.info, token=hit.token)

    async def lookup(self, name: str) -> JSON | None:
        """The token from the cache, or (a miss) from the upstream: it may be seconds old."""
        token = self.state.tokens.get(name)
        if token is not None:
            return token
        try:
            return await self.state.get_fresh("tokens", name)
        except KubeAPIError as exc:
            logger.warning("reading token %s from the upstream failed: %s", name, exc)
            return None

    async def token_owner(self, token_name: str) -> str | None:
        if not _NAME.fullmatch(token_name):
            return None
        token = await self.lookup(token_name)
        return None if token is None else str(token.get("userId") or "") or None

    def user_info(self, user: Mapping[str, Any], *, token_name: str = "") -> UserInfo:
        """Rancher's identity for a user: groups from its UserAttribute plus the authenticated groups."""
        user_id = str(user["metadata"]["name"])
        attribute = self.state.userattributes.get(user_id) or {}
        groups = self.state.user_groups(user_id)
        extras: dict[str, list[str]] = {}
        for provider_extras in (attribute.get("ExtraByProvider") or {}).values():
            for key, values in (provider_extras or {}).items():
                extras.setdefault(key, []).extend(str(v) for v in values or [] if v)
        if not extras:
            extras = {
                "principalid": [str(p) for p in user.get("principalIds") or [principal_id(user_id)]],
                "username": [str(user.get("username") or user.get("displayName") or "")],
            }
        clean = {key: tuple(dict.fromkeys(v for v in values if v)) for key, values in extras.items()}
        return UserInfo(
            name=user_id,
            groups=(*groups, *AUTHENTICATED_GROUPS),
            extras={key: values for key, values in clean.items() if values},
            token_name=token_name,
        )

    def _touch(self, token: JSON, now: datetime) -> None:
        """Patch ``lastUsedAt`` in the background, at most once per second per token."""
        name = str(token["metadata"]["name"])
        second = int(now.timestamp())
        if self._last_second.get(name) == second:
            return  # this second's write was made or found not needed
        self._last_second[name] = second
        if len(self._last_second) > 100_000:
            self._last_second.clear()
        previous = self._last_written.get(name) or parse_time(token.get("lastUsedAt"))
        moment = last_used_update(previous, now=now)
        if moment is None:
            return
        self._last_written[name] = moment
        if len(self._last_written) > 100_000:
            self._last_written.clear()
        text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")

        async def write() -> None:
            try:
                await self.state.upstream.patch(STORED["tokens"].path(name), {"lastUsedAt": text})
            except KubeAPIError as exc:
                logger.debug("lastUsedAt of token %s not written: %s", name, exc)

        task = asyncio.get_running_loop().create_task(write())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the background ``lastUsedAt`` writes (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def _secret_matches(token: Mapping[str, Any], secret: str) -> bool:
    stored = str(token.get("token") or "")
    if not stored:
        return False
    annotations = (token.get("metadata") or {}).get("annotations") or {}
    if annotations.get(HASHED_ANNOTATION) == "true":
        try:
            return hashers.verify(stored, secret)
        except hashers.HashFormatError:
            logger.warning("token %s has a malformed hash", token["metadata"].get("name"))
            return False
    return hmac.compare_digest(stored.encode(), secret.encode())


class TokenIssuer:
    """Creates v3 Tokens upstream; the secret is returned once and stored only as its SHA3 hash."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def create(
        self,
        user: Mapping[str, Any],
        *,
        prefix: str = TOKEN_NAME_PREFIX,
        ttl_millis: int = 0,
        kind: str = "",
        description: str = "",
        derived: bool = False,
        cluster: str = "",
        labels: Mapping[str, str] | None = None,
        auth_provider: str = LOCAL_PROVIDER,
        principal: JSON | None = None,
    ) -> tuple[JSON, str]:
        """``(stored token, "<name>:<secret>")`` for a new token of ``user``; ``auth_provider`` and
        ``principal`` (the userPrincipal) name an external provider's login, local's by default."""
        user_id = str(user["metadata"]["name"])
        secret = generate_secret()
        all_labels = {**(labels or {}), USER_ID_LABEL: user_id}
        if kind:
            all_labels[KIND_LABEL] = kind
        body: JSON = {
            "metadata": {
                "generateName": prefix,
                "labels": all_labels,
                "annotations": {HASHED_ANNOTATION: "true"},
            },
            "token": hashers.hash_secret(secret),
            "userId": user_id,
            "authProvider": auth_provider,
            "userPrincipal": principal if principal is not None else user_principal(user),
            "ttl": ttl_millis,
            "isDerived": derived,
            "description": description,
            "enabled": True,
        }
        if cluster:
            body["clusterName"] = cluster
        stored = await self.state.create("tokens", body)
        return stored, f"{stored['metadata']['name']}:{secret}"


def expires_at(token: Mapping[str, Any]) -> str:
    """The token's ``expiresAt`` as Rancher's SetTokenExpiresAt computes it ("" when it never expires)."""
    created = parse_time((token.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return ""
    return expires_at_text(created, _int(token.get("ttl")))


def is_token_expired(token: Mapping[str, Any], *, now: datetime) -> bool:
    created = parse_time((token.get("metadata") or {}).get("creationTimestamp"))
    return created is not None and is_expired(created, _int(token.get("ttl")), now=now)

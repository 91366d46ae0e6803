"""The decisions of kube-api-auth on one TokenReview, as pure functions of the request and a snapshot.

Parsing (a malformed request is a 400), then the verification steps of kube-api-auth in their order:
the ClusterAuthToken exists and is enabled, the ClusterUserAttribute exists and is enabled, the hash
comes from the legacy field (to be migrated) or from the Secret, the token is enabled and not expired,
the hasher picked by version verifies the secret; on success, whether to flag ``needsRefresh`` and
whether to write ``lastUsedAt``. No I/O here: the server feeds cached objects and carries out the
effects, and tests drive every branch with plain values. Reasons never contain the secret or a hash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from corral.auth import hashers
from corral.errors import CorralError
from corral.kubeapiauth.objects import (
    ClusterAuthToken,
    ClusterUserAttribute,
    ObjectFormatError,
    format_rfc3339,
    parse_rfc3339,
)

logger = logging.getLogger(__name__)

__all__ = [
    "API_VERSION",
    "Accepted",
    "Candidate",
    "Credentials",
    "Refused",
    "ReviewRequestError",
    "Snapshot",
    "conclude",
    "examine",
    "parse_review",
    "review",
    "success_body",
    "verify_secret",
]

API_VERSION = "authentication.k8s.io/v1beta1"
"""What kube-api-auth answers with, whatever version the request had."""
KIND = "TokenReview"
EXT_PREFIX = "ext/"


class ReviewRequestError(CorralError):
    """The request is not a TokenReview kube-api-auth can read (answered with 400); never holds the token."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A token split once on ``:`` into the token's name (``ext/`` removed) and its secret."""

    access_key: str
    secret_key: str = field(repr=False)


def _field(obj: Mapping[str, Any], name: str) -> Any:
    """A JSON member as Go's encoding/json finds it: the exact key, else one differing only in case."""
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if key.lower() == name:
            return value
    return None


def parse_review(body: bytes) -> Credentials:
    """The credentials of a TokenReview body; `ReviewRequestError` when kube-api-auth answers 400.

    Only ``kind`` (must be ``TokenReview``) and ``spec.token`` (must not be empty) are looked at;
    ``apiVersion`` is ignored. A token without ``:`` is malformed too.
    """
    try:
        document = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        raise ReviewRequestError("the body is not JSON") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ReviewRequestError(f"the body is a JSON {type(document).__name__}, not an object")
    kind = _field(document, "kind")
    if kind is not None and not isinstance(kind, str):
        raise ReviewRequestError("kind is not a string")
    spec = _field(document, "spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ReviewRequestError("spec is not an object")
    token = _field(spec, "token")
    if token is not None and not isinstance(token, str):
        raise ReviewRequestError("spec.token is not a string")
    if kind != KIND:
        raise ReviewRequestError("authentication request kind is not TokenReview")
    if not token:
        raise ReviewRequestError("authentication request is missing Token")
    access_key, colon, secret_key = token.partition(":")
    if not colon:
        raise ReviewRequestError("found 1 parts of token")
    return Credentials(access_key.removeprefix(EXT_PREFIX), secret_key)


class Snapshot(Protocol):
    """What the checks read: the cached objects of the namespace."""

    def token(self, name: str) -> ClusterAuthToken | None: ...

    def attribute(self, name: str) -> ClusterUserAttribute | None: ...

    def secret_hash(self, name: str) -> str | None:
        """The Secret's ``data.hash`` ("" when the key is missing), or None when there is no Secret."""
        ...

    def debounce_seconds(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """Not authenticated (401); ``reason`` is safe to log, ``user`` is empty when the token is unknown."""

    reason: str
    user: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A token whose hash is still to be checked against the secret."""

    token: ClusterAuthToken
    attribute: ClusterUserAttribute
    hashed: str = field(repr=False)
    migrate: bool
    """The hash came from the legacy ``hash`` field: move it into the Secret once verified."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """Authenticated, with the effects kube-api-auth carries out before answering."""

    user: str
    groups: tuple[str, ...]
    migrate: bool
    mark_needs_refresh: bool
    last_used_at: str | None
    """The second to write into ``lastUsedAt``, or None when it already holds this second."""


def examine(credentials: Credentials, snapshot: Snapshot, *, now: datetime) -> Candidate | Refused:  # noqa: PLR0911 - one return per step, in order
    """Steps 1 to 4 up to the hash: token, user attribute, Secret, enabled, expiry, hash source."""
    token = snapshot.token(credentials.access_key)
    if token is None:
        return Refused(reason="clusterauthtoken not found")
    if not token.enabled:
        return Refused(reason="token is not enabled", user=token.user_name)
    attribute = snapshot.attribute(token.user_name)
    if attribute is None:
        return Refused(reason="clusteruserattribute not found", user=token.user_name)
    if not attribute.enabled:
        return Refused(reason="user is not enabled", user=token.user_name)
    stored = snapshot.secret_hash(credentials.access_key)
    if token.expires_at:
        try:
            expires = parse_rfc3339(token.expires_at, what="expiresAt")
        except ObjectFormatError as e:
            return Refused(reason=str(e), user=token.user_name)
        if expires < now:
            return Refused(reason=f"auth expired at {token.expires_at}", user=token.user_name)
    if token.legacy_hash:
        return Candidate(token=token, attribute=attribute, hashed=token.legacy_hash, migrate=True)
    if stored is None:
        return Refused(reason="hash secret is missing", user=token.user_name)
    return Candidate(token=token, attribute=attribute, hashed=stored, migrate=False)


def verify_secret(candidate: Candidate, credentials: Credentials) -> Refused | None:
    """The hasher chosen by the hash's version: None when the secret matches."""
    try:
        if hashers.verify(candidate.hashed, credentials.secret_key):
            return None
    except hashers.HashFormatError as e:
        return Refused(reason=f"unable to get hasher for the token: {e}", user=candidate.token.user_name)
    return Refused(reason="the secret does not match the hash", user=candidate.token.user_name)


def conclude(candidate: Candidate, *, debounce_seconds: int, now: datetime) -> Accepted | Refused:
    """Steps 5 and 6 for a verified token: the refresh flag and the ``lastUsedAt`` second."""
    attribute = candidate.attribute
    mark = False
    if debounce_seconds >= 0 and attribute.last_refresh and not attribute.needs_refresh:
        try:
            refreshed = parse_rfc3339(attribute.last_refresh, what="lastRefresh")
        except ObjectFormatError as e:
            return Refused(reason=f"error parsing lastRefresh: {e}", user=candidate.token.user_name)
        mark = refreshed + timedelta(seconds=debounce_seconds) < now
    second = format_rfc3339(now)
    return Accepted(
        user=candidate.token.user_name,
        groups=attribute.groups,
        migrate=candidate.migrate,
        mark_needs_refresh=mark,
        last_used_at=None if _same_second(candidate.token.last_used_at, now) else second,
    )


def _same_second(recorded: str, now: datetime) -> bool:
    if not recorded:
        return False
    try:
        moment = parse_rfc3339(recorded, what="lastUsedAt")
    except ObjectFormatError:
        return False
    return int(moment.timestamp()) == int(now.timestamp())


def review(credentials: Credentials, snapshot: Snapshot, *, now: datetime) -> Accepted | Refused:
    """All steps in order, synchronously (the server splits them to run scrypt off the event loop)."""
    candidate = examine(credentials, snapshot, now=now)
    if isinstance(candidate, Refused):
        return candidate
    refused = verify_secret(candidate, credentials)
    if refused is not None:
        return refused
    return conclude(candidate, debounce_seconds=snapshot.debounce_seconds(), now=now)


def success_body(user: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """The answer to an authenticated review: no uid and no extra; groups left out when there are none."""
    identity: dict[str, Any] = {"username": user}
    if groups:
        identity["groups"] = list(groups)
    return {"apiVersion": API_VERSION, "kind": KIND, "status": {"authenticated": True, "user": identity}}

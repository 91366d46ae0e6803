"""Rancher tokens: names, secrets, the ``<name>:<secret>`` value, where a request carries it, expiry.

Everything here is a pure function, so the proxy, the v3 API and the tests read a credential exactly the
same way: as Rancher's GetTokenAuthFromRequest, SplitTokenParts, Token.GetIsExpired and the lastUsedAt
throttle do (``pkg/auth/tokens``, ``pkg/auth/requests/authenticate.go``; names from the apiserver's
generateName and ``wrangler/pkg/randomtoken``).
"""

from __future__ import annotations

import base64
import enum
import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from corral.errors import CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "COOKIE_NAME",
    "EXT_PREFIX",
    "SECRET_ALPHABET",
    "SECRET_LENGTH",
    "TOKEN_NAME_PREFIX",
    "CredentialSource",
    "HeaderSource",
    "RequestCredential",
    "TokenFormatError",
    "TokenRef",
    "credential_from_headers",
    "expires_at",
    "expires_at_text",
    "generate_name",
    "generate_secret",
    "is_expired",
    "is_idle_expired",
    "kubeconfig_token_name",
    "kubeconfig_token_prefix",
    "last_used_update",
    "parse_token",
    "split_token_parts",
]

SECRET_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # noqa: S105 - an alphabet, not a secret
"""Secrets and generated name suffixes use this alphabet (no vowels, no 0/1/3: no words, no confusion)."""
SECRET_LENGTH = 54
"""Characters in a token secret (wrangler randomtoken)."""
TOKEN_NAME_PREFIX = "token-"  # noqa: S105 - a name prefix, not a secret
"""generateName of API keys and login session tokens (v3 and ext)."""
KUBECONFIG_NAME_PREFIX = "kubeconfig-"
EXT_PREFIX = "ext/"
"""A token name starting with this is an ``ext.cattle.io`` token; the prefix is not part of its name."""
COOKIE_NAME = "R_SESS"
"""The session cookie, read only when the request has no Authorization value."""

GENERATED_SUFFIX_LENGTH = 5
"""The apiserver appends this many random characters to a generateName."""
MAX_GENERATE_NAME_PREFIX = 58
"""The apiserver cuts a longer generateName to this length (63 minus the suffix)."""

# Go's unicode.IsSpace set: what strings.TrimSpace removes (Python's str.isspace also has U+001C..U+001F).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
# net/textproto's TrimString: ASCII space, tab, CR, LF only.
_ASCII_SPACE = " \t\r\n"
_B64_URL_PADDED = re.compile(r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?")

HeaderSource = Mapping[str, str] | Mapping[str, Sequence[str]] | Iterable[tuple[str, str]]
"""Request headers: a mapping (a multidict's ``items()`` yields every value), a name to values mapping,
or ``(name, value)`` pairs in arrival order. Names are matched ASCII case-insensitively."""


class TokenFormatError(CorralError):
    """A token value is not ``<name>:<secret>``; the message says why and never repeats the value."""


class CredentialSource(enum.Enum):
    """Where a request's token came from."""

    BEARER = "bearer"
    BASIC = "basic"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCredential:
    """The raw token value a request carries (``<name>:<secret>``, or a bare JWT) and its source."""

    value: str = field(repr=False)
    source: CredentialSource


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRef:
    """A token value split into the name to look up and the secret to verify."""

    name: str
    """The object name, without the ``ext/`` prefix."""
    secret: str = field(repr=False)
    ext: bool = False
    """True for ``ext/<name>:<secret>``: the token lives in the ext store (``ext.cattle.io/v1``)."""


def generate_secret() -> str:
    """A new 54-character token secret, each character drawn uniformly from `SECRET_ALPHABET`."""
    return "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def generate_name(prefix: str) -> str:
    """The name the apiserver gives an object created with ``generateName: prefix``.

    The prefix is cut to 58 characters and 5 characters from `SECRET_ALPHABET` are appended
    (apiserver ``SimpleNameGenerator``), e.g. ``token-x7k2q``.
    """
    suffix = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(GENERATED_SUFFIX_LENGTH))
    return prefix[:MAX_GENERATE_NAME_PREFIX] + suffix


def kubeconfig_token_prefix(user_id: str) -> str:
    """generateName of a token made by the ``generateKubeconfig`` action: ``kubeconfig-<userID>``.

    There is no separator before the random suffix: user ``u-abcde`` gets ``kubeconfig-u-abcdexxxxx``.
    """
    return KUBECONFIG_NAME_PREFIX + user_id


def kubeconfig_token_name(user_id: str, *, cluster_id: str = "") -> str:
    """The fixed name of a CLI login kubeconfig token: ``kubeconfig-<userID>[.<clusterID>]``.

    Rancher deletes and recreates a token of that name on each such login (GetKubeConfigToken).
    """
    name = KUBECONFIG_NAME_PREFIX + user_id
    return f"{name}.{cluster_id}" if cluster_id else name


def split_token_parts(value: str) -> tuple[str, str]:
    """Rancher's SplitTokenParts: ``(name, secret)`` when there is exactly one ``:``, else ``(first, "")``."""
    parts = value.split(":")
    if len(parts) != 2:
        return parts[0], ""
    return parts[0], parts[1]


def parse_token(value: str) -> TokenRef:
    """Split ``[ext/]<name>:<secret>``; raise `TokenFormatError` unless both parts are there and non-empty."""
    count = value.count(":") + 1
    if count != 2:
        raise TokenFormatError(
            f"token value has {count} ':'-separated parts, expected exactly 2 (name:secret)"
        )
    name, secret = split_token_parts(value)
    ext = name.startswith(EXT_PREFIX)
    name = name.removeprefix(EXT_PREFIX)
    if not name:
        raise TokenFormatError("token value has an empty name")
    if not secret:
        raise TokenFormatError("token value has an empty secret")
    return TokenRef(name=name, secret=secret, ext=ext)


def _is_ascii_name(candidate: str, lowered: str) -> bool:
    # ASCII-only folding: str.lower() would map KELVIN SIGN to 'k' and accept a header Go does not.
    return candidate.isascii() and candidate.lower() == lowered


def _header_values(headers: HeaderSource, name: str) -> list[str]:
    lowered = name.lower()
    pairs: Iterable[tuple[str, str | Sequence[str]]]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    values: list[str] = []
    for key, value in pairs:
        if _is_ascii_name(key, lowered):
            if isinstance(value, str):
                values.append(value)
            else:
                values.extend(value)
    return values


def _decode_basic(encoded: str) -> str | None:
    """Go's base64.URLEncoding (padded, URL alphabet, CR/LF ignored), then UTF-8; None if either fails."""
    cleaned = encoded.replace("\r", "").replace("\n", "")
    if not _B64_URL_PADDED.fullmatch(cleaned):
        logger.debug("Authorization Basic value is not padded URL-safe base64; no credential")
        return None
    try:
        return base64.urlsafe_b64decode(cleaned).decode("utf-8")
    except UnicodeDecodeError:
        logger.debug("Authorization Basic value does not decode to UTF-8 text; no credential")
        return None


def _cookie_value(headers: HeaderSource, name: str) -> str | None:
    """The first valid cookie ``name`` across every Cookie header, parsed like Go's net/http readCookies."""
    for line in _header_values(headers, "Cookie"):
        for raw_part in line.strip(_ASCII_SPACE).split(";"):
            part = raw_part.strip(_ASCII_SPACE)
            if not part:
                continue
            key, _, value = part.partition("=")
            if key.strip(_ASCII_SPACE) != name:
                continue
            if len(value) > 1 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            if all(0x20 <= ord(c) < 0x7F and c not in '";\\' for c in value):
                return value
    return None


def credential_from_headers(headers: HeaderSource) -> RequestCredential | None:
    """The token a request carries, read as Rancher's GetTokenAuthFromRequest; None when there is none.

    * The first ``Authorization`` value, trimmed, is split once on a space. Scheme ``Bearer``
      (case-insensitive) gives the trimmed rest; ``Basic`` gives the rest decoded from padded URL-safe
      base64 (normally ``name:secret``); any other scheme, or a scheme alone, gives no credential.
    * Only when that first value is empty or blank is the ``R_SESS`` cookie used. A second
      Authorization header is never looked at.
    Malformed input (bad base64, non-UTF-8 bytes) yields None, never an exception.
    """
    authorization = _header_values(headers, "Authorization")
    auth = authorization[0].strip(_GO_SPACE) if authorization else ""
    if not auth:
        cookie = _cookie_value(headers, COOKIE_NAME)
        return RequestCredential(value=cookie, source=CredentialSource.COOKIE) if cookie else None
    scheme, separator, rest = auth.partition(" ")
    folded = scheme.casefold()
    if not separator or folded not in ("bearer", "basic"):
        return None
    if folded == "bearer":
        value = rest.strip(_GO_SPACE)
        return RequestCredential(value=value, source=CredentialSource.BEARER) if value else None
    decoded = _decode_basic(rest.strip(_GO_SPACE))
    return RequestCredential(value=decoded, source=CredentialSource.BASIC) if decoded else None


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return moment


def expires_at(created: datetime, ttl_millis: int) -> datetime | None:
    """When a token made at ``created`` with ``ttl`` milliseconds expires; None for ``ttl == 0`` (never)."""
    if ttl_millis == 0:
        return None
    return _aware(created, "created") + timedelta(milliseconds=ttl_millis)


def expires_at_text(created: datetime, ttl_millis: int) -> str:
    """The token's ``expiresAt`` field: RFC 3339 in UTC to the second, or "" when it never expires."""
    moment = expires_at(created, ttl_millis)
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_expired(created: datetime, ttl_millis: int, *, now: datetime) -> bool:
    """Token.GetIsExpired: expired once the time since creation reaches the TTL (0 means never)."""
    if ttl_millis == 0:
        return False
    elapsed = _aware(now, "now") - _aware(created, "created")
    return elapsed >= timedelta(milliseconds=ttl_millis)


def is_idle_expired(last_activity: datetime | None, idle_minutes: int, *, now: datetime) -> bool:
    """IsIdleExpired: past ``auth-user-session-idle-ttl-minutes`` since the last activity (0: off)."""
    if last_activity is None or idle_minutes == 0:
        return False
    return _aware(now, "now") > _aware(last_activity, "last_activity") + timedelta(minutes=idle_minutes)


def last_used_update(last_used: datetime | None, *, now: datetime) -> datetime | None:
    """The new ``lastUsedAt`` to write after a successful authentication, or None to skip the write.

    Rancher truncates ``now`` to the second and skips the write when ``lastUsedAt`` falls in that same
    second, so a token is written at most once per wall-clock second.
    """
    second = _aware(now, "now").replace(microsecond=0)
    if last_used is not None and _aware(last_used, "last_used").replace(microsecond=0) == second:
        return None
    return second

"""Redaction of what tests record: request and response summaries lose every secret before they are kept.

Allure attachments, the conformance report and logs show requests to the v3 API, the proxy and
kube-api-auth. Credentials travel in headers (``Authorization``, cookies, the tunnel's token and
params), in bodies (passwords, tokens, Secret data, TokenReview tokens) and in URLs (query values,
user info); all of them are replaced here, and a Rancher token keeps only its public name
(``token-abcde:<redacted>``) so a reader can still tell which token was used.
"""

from __future__ import annotations

import base64
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

logger = logging.getLogger(__name__)

__all__ = ["REDACTED", "redact_exchange", "redact_headers", "redact_json", "redact_text", "redact_url"]

REDACTED: Final = "<redacted>"

SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-tunnel-token",
        "x-api-tunnel-params",  # carries the cluster's service-account token
        "x-api-auth-header",
    }
)
SECRET_KEYS: Final = frozenset(
    {
        "password",
        "currentpassword",
        "newpassword",
        "token",
        "secret",
        "secretkey",
        "bearertoken",
        "hash",
        "client-key-data",
        "client-certificate-data",
        "privatekey",
        "private_key",
        "credential",
        "previoustoken",
        "apikey",
        "access_token",
        "refresh_token",
    }
)
"""JSON keys (compared in lower case) whose values are secrets wherever they appear."""

_RANCHER_SECRET = r"[bcdfghjklmnpqrstvwxz2456789]{54}"  # noqa: S105 (the pattern of a secret, not one)
_TOKEN = re.compile(rf"((?:ext/)?[a-z0-9][a-z0-9.-]{{0,252}}):({_RANCHER_SECRET}+)")
_BARE_SECRET = re.compile(rf"{_RANCHER_SECRET}+")
_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+")
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL)
_SECRET_QUERY = re.compile(r"(?i)(token|password|secret|key|code)")


def redact_text(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with Rancher tokens (name kept), bare token secrets, JWTs, bearer/basic credentials,
    private keys and every string in ``secrets`` replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _PEM_KEY.sub(lambda m: f"-----BEGIN {m.group(1)}-----{REDACTED}-----END {m.group(1)}-----", text)
    text = _TOKEN.sub(lambda m: f"{m.group(1)}:{REDACTED}", text)
    text = _BARE_SECRET.sub(REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], *, secrets: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Header pairs in order, each secret header's value replaced (the scheme and a token's name kept)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    known = tuple(secrets)
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        lowered = name.lower()
        if lowered in {"authorization", "proxy-authorization"}:
            out.append((name, _credential(value)))
        elif lowered in SECRET_HEADERS:
            out.append((name, REDACTED))
        else:
            out.append((name, redact_text(value, secrets=known)))
    return out


def _credential(value: str) -> str:
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        name, sep, _ = credential.partition(":")
        return f"{scheme} {name}:{REDACTED}" if sep and _is_token_name(name) else f"{scheme} {REDACTED}"
    if scheme.lower() == "basic":
        try:
            name, sep, _ = base64.urlsafe_b64decode(credential + "==").decode().partition(":")
        except ValueError:
            return f"{scheme} {REDACTED}"
        return f"{scheme} {name}:{REDACTED}" if sep and _is_token_name(name) else f"{scheme} {REDACTED}"
    return REDACTED


def _is_token_name(name: str) -> bool:
    return re.fullmatch(r"(ext/)?[a-z0-9][a-z0-9.-]{0,252}", name) is not None


def redact_json(value: Any, *, secrets: Iterable[str] = ()) -> Any:
    """A copy of a decoded JSON value with secret keys' values, Secret data and secret strings replaced."""
    known = tuple(secrets)
    if isinstance(value, Mapping):
        secret_object = value.get("kind") == "Secret"
        out: dict[str, Any] = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if lowered in SECRET_KEYS or (secret_object and lowered in {"data", "stringdata"}):
                out[key] = _redact_secret_value(item)
            else:
                out[key] = redact_json(item, secrets=known)
        return out
    if isinstance(value, list | tuple):
        return [redact_json(item, secrets=known) for item in value]
    if isinstance(value, str):
        return redact_text(value, secrets=known)
    return value


def _redact_secret_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict.fromkeys(value, REDACTED)
    if isinstance(value, str):
        match = _TOKEN.fullmatch(value)
        return f"{match.group(1)}:{REDACTED}" if match else REDACTED
    return REDACTED if value not in (None, "", [], {}) else value


def redact_url(url: str, *, secrets: Iterable[str] = ()) -> str:
    """``url`` without user info or secret query values (names kept), and secret strings replaced."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"{REDACTED}@{netloc}"
    query = urllib.parse.urlencode(
        [
            (k, REDACTED if _SECRET_QUERY.search(k) else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="<>",
    )
    rebuilt = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return redact_text(rebuilt, secrets=secrets)


def redact_exchange(
    *,
    method: str,
    url: str,
    status: int,
    request_headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    request_body: Any = None,
    response_headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    response_body: Any = None,
    seconds: float | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """A JSON-ready summary of one request and its answer, safe to attach to a report."""
    known = tuple(secrets)
    summary: dict[str, Any] = {
        "request": {
            "method": method,
            "url": redact_url(url, secrets=known),
            "headers": dict(redact_headers(request_headers, secrets=known)),
            "body": _body(request_body, known),
        },
        "response": {
            "status": status,
            "headers": dict(redact_headers(response_headers, secrets=known)),
            "body": _body(response_body, known),
        },
    }
    if seconds is not None:
        summary["seconds"] = round(seconds, 6)
    return summary


def _body(body: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        return redact_text(body, secrets=secrets)
    return redact_json(body, secrets=secrets)

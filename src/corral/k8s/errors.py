"""One mapping from a Kubernetes API failure to corral's typed errors, for the sync and async clients.

An answer with a status >= 400 (or a watch ERROR event carrying a ``Status``) becomes the
`KubeAPIError` subclass for its status and reason; a request that got no answer becomes a plain
`KubeAPIError` with status 0. Messages name the request (verb and path, no query) and carry the
API's own message cut to ~256 characters; credentials are never part of either.
"""

from __future__ import annotations

import http
import json
from collections.abc import Mapping
from typing import Any

from corral.errors import (
    AlreadyExistsError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeAPIError,
    NotFoundError,
    ServerTimeoutError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)

__all__ = [
    "AlreadyExistsError",
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubeAPIError",
    "NotFoundError",
    "ServerTimeoutError",
    "ServiceUnavailableError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "api_error",
    "connection_error",
    "cut",
    "decode_body",
]

MESSAGE_LIMIT = 256

_BY_STATUS: Mapping[int, type[KubeAPIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
    429: TooManyRequestsError,
    503: ServiceUnavailableError,
    504: ServerTimeoutError,
}

# A ``Status`` reason decides where the status code alone is ambiguous (409) or too coarse.
_BY_REASON: Mapping[str, type[KubeAPIError]] = {
    "AlreadyExists": AlreadyExistsError,
    "Conflict": ConflictError,
    "Expired": GoneError,
    "Gone": GoneError,
    "Invalid": InvalidError,
    "Timeout": ServerTimeoutError,
}


def error_class(status: int, reason: str) -> type[KubeAPIError]:
    """The `KubeAPIError` subclass for an HTTP status and a ``Status`` reason."""
    by_reason = _BY_REASON.get(reason)
    if by_reason is not None and (status == 0 or _BY_STATUS.get(status) in (by_reason, ConflictError, None)):
        return by_reason
    return _BY_STATUS.get(status, KubeAPIError)


def api_error(method: str, path: str, status: int, body: Any) -> KubeAPIError:
    """The typed error for an answer: ``body`` is the raw body, its decoded JSON, or a ``Status`` dict."""
    decoded = body if isinstance(body, Mapping) else decode_body(body)
    if decoded.get("kind") == "Status" and isinstance(decoded.get("code"), int) and not status:
        status = decoded["code"]
    reason = str(decoded.get("reason") or _phrase(status))
    message = cut(str(decoded.get("message") or decoded.get("text") or ""))
    text = f"{method} {_bare(path)}: {status} {reason}" + (f": {message}" if message else "")
    return error_class(status, reason)(text, status=status, reason=reason)


def connection_error(method: str, path: str, server: str, error: BaseException) -> KubeAPIError:
    """A request that got no answer (refused, reset, TLS failure, timeout): status 0."""
    return KubeAPIError(
        f"{method} {_bare(path)}: cannot reach {server}: {type(error).__name__}: {cut(str(error))}",
        status=0,
        reason="ConnectionError",
    )


def decode_body(raw: bytes | str | None) -> dict[str, Any]:
    """A body as a dict: ``{}`` when empty, ``{"items": [...]}`` for a bare list, ``{"text": ...}``
    when not JSON."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        return {"text": text[:MESSAGE_LIMIT]}
    return value if isinstance(value, dict) else {"items": value}


def cut(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` shortened to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return "Unknown"


def _bare(path: str) -> str:
    return path.split("?", 1)[0]

"""Errors of the authentication providers, each carrying the norman code and HTTP status the v3 API answers.

A wrong password, a disabled account or an unknown user is a `LoginRefusedError` (401, one message for
all, as Rancher's "Unauthorized"); a directory or GitHub that is down, slow or rate limiting is a
`ProviderUnavailableError` (500 or 503), so the server can tell a caller's mistake from an outage.
Messages never include passwords, client secrets, OAuth codes or access tokens.
"""

from __future__ import annotations

import logging

from corral.errors import ConfigError, CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "AccessDeniedError",
    "AccountDisabledError",
    "LoginInputError",
    "LoginRefusedError",
    "PrincipalNotFoundError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ServiceAccountError",
    "UpstreamStatusError",
]


class ProviderError(CorralError):
    """Base of the providers' errors; ``code`` and ``status`` are what norman's error body carries."""

    code: str = "ServerError"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ProviderConfigError(ProviderError, ConfigError):
    """An auth config is invalid: ``field_name`` is Rancher's JSON name of the offending field."""

    code = "InvalidFormat"
    status = 422

    def __init__(self, message: str, *, field_name: str = "", code: str | None = None) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message, code=code)
        self.field_name = field_name


class LoginInputError(ProviderError):
    """The login action's body lacks a field or has one of the wrong type (422)."""

    code = "MissingRequired"
    status = 422


class LoginRefusedError(ProviderError):
    """Unknown user, wrong password, locked or disabled account, a revoked OAuth code (401)."""

    code = "Unauthorized"
    status = 401


class AccountDisabledError(LoginRefusedError):
    """The directory marks the account disabled (userEnabledAttribute and userDisabledBitMask)."""


class AccessDeniedError(ProviderError):
    """The user authenticated but the access mode does not admit them (403)."""

    code = "PermissionDenied"
    status = 403


class PrincipalNotFoundError(ProviderError):
    """The principal no longer exists in the directory (404): its refresh cannot succeed again."""

    code = "NotFound"
    status = 404


class ServiceAccountError(ProviderError):
    """The configured service account could not bind: a configuration problem, not the user's (500)."""


class ProviderUnavailableError(ProviderError):
    """The directory or GitHub could not be reached or did not answer properly (503)."""

    code = "ServiceUnavailable"
    status = 503


class ProviderTimeoutError(ProviderUnavailableError):
    """No answer within the configured timeout (connectionTimeout, or the HTTP client's)."""


class UpstreamStatusError(ProviderUnavailableError):
    """GitHub answered with an unexpected status (5xx and the like); ``upstream_status`` is its code."""

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class RateLimitedError(ProviderUnavailableError):
    """GitHub's rate limit is exhausted; ``retry_after`` is how many seconds to wait, when it said."""

    code = "RateLimited"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

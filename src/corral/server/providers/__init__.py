"""Authentication providers the server plugs in: Active Directory, OpenLDAP and GitHub, as Rancher's.

`provider_for` turns a parsed auth config into an `AuthProvider`; the server calls its ``login``,
``test_config``, ``search_principals`` and ``refresh`` and maps the typed errors to norman error bodies.
"""

from __future__ import annotations

from corral.server.providers.base import (
    ACCESS_MODES,
    AuthProvider,
    LoginResult,
    Principal,
    PrincipalKind,
    check_access,
    parse_principal_id,
    principal_id,
    read_basic_login,
    read_github_login,
)
from corral.server.providers.config import (
    CONFIG_TYPES,
    ActiveDirectoryConfig,
    AuthConfig,
    GithubConfig,
    OpenLdapConfig,
    auth_config_json,
    parse_auth_config,
)
from corral.server.providers.errors import (
    AccessDeniedError,
    AccountDisabledError,
    LoginInputError,
    LoginRefusedError,
    PrincipalNotFoundError,
    ProviderConfigError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    ServiceAccountError,
    UpstreamStatusError,
)
from corral.server.providers.refresh import (
    CronSchedule,
    GroupRefresh,
    RefreshSettings,
    refresh_due,
    refresh_groups,
)

__all__ = [
    "ACCESS_MODES",
    "CONFIG_TYPES",
    "AccessDeniedError",
    "AccountDisabledError",
    "ActiveDirectoryConfig",
    "AuthConfig",
    "AuthProvider",
    "CronSchedule",
    "GithubConfig",
    "GroupRefresh",
    "LoginInputError",
    "LoginRefusedError",
    "LoginResult",
    "OpenLdapConfig",
    "Principal",
    "PrincipalKind",
    "PrincipalNotFoundError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RefreshSettings",
    "ServiceAccountError",
    "UpstreamStatusError",
    "auth_config_json",
    "check_access",
    "parse_auth_config",
    "parse_principal_id",
    "principal_id",
    "provider_for",
    "read_basic_login",
    "read_github_login",
    "refresh_due",
    "refresh_groups",
]


def provider_for(config: AuthConfig, *, timeout: float | None = None) -> AuthProvider:
    """The provider for a config. ``timeout`` (seconds) bounds a whole LDAP conversation or one GitHub
    request; by default 4 x connectionTimeout for LDAP, 10 s for GitHub. Imports the client library lazily."""
    if isinstance(config, GithubConfig):
        from corral.server.providers.github import DEFAULT_TIMEOUT, GithubProvider

        return GithubProvider(config, timeout=timeout or DEFAULT_TIMEOUT)
    from corral.server.providers.ldap import ActiveDirectoryProvider, OpenLdapProvider

    if isinstance(config, ActiveDirectoryConfig):
        return ActiveDirectoryProvider(config, deadline=timeout)
    return OpenLdapProvider(config, deadline=timeout)

"""What every authentication provider is to the server: principals, a login result, the access check.

A principal id is ``<provider>_<kind>://<external id>`` as Rancher writes it (a DN for Active Directory
and OpenLDAP, a numeric id for GitHub). `AuthProvider` is the small surface the v3 API's login,
``testAndApply``, principal search and the periodic user-attribute refresh call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

from corral.server import norman
from corral.server.providers.config import AuthConfig
from corral.server.providers.errors import LoginInputError, ProviderConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "ACCESS_MODES",
    "PRINCIPAL_KINDS",
    "AuthProvider",
    "LoginResult",
    "Principal",
    "PrincipalKind",
    "check_access",
    "parse_principal_id",
    "principal_id",
    "read_basic_login",
    "read_github_login",
]

PrincipalKind = Literal["user", "group"]
PRINCIPAL_KINDS: Final = ("user", "group")
ACCESS_MODES: Final = ("unrestricted", "restricted", "required")
"""Rancher's access modes; an empty mode means unrestricted."""

#: The scheme of each provider's principal ids: ``<provider>_<scope>``.
SCOPES: Final[Mapping[str, tuple[str, ...]]] = {
    "activedirectory": ("user", "group"),
    "openldap": ("user", "group"),
    "github": ("user", "team", "org"),
}


def principal_id(provider: str, scope: str, external_id: str) -> str:
    """``activedirectory_user://CN=...``, ``github_team://42``: Rancher's principal id."""
    if scope not in SCOPES.get(provider, ()):
        raise ProviderConfigError(f"provider {provider!r} has no principal scope {scope!r}")
    if not external_id:
        raise ProviderConfigError(f"a {provider}_{scope} principal needs a non-empty external id")
    return f"{provider}_{scope}://{external_id}"


def parse_principal_id(value: str) -> tuple[str, str, str]:
    """``(provider, scope, external id)`` of a principal id; the error names what is wrong."""
    scheme, sep, rest = value.partition("://")
    if not sep or not rest:
        raise ProviderConfigError(f"principal id {value!r}: expected '<provider>_<scope>://<id>'")
    provider, sep, scope = scheme.partition("_")
    if not sep or scope not in SCOPES.get(provider, ()):
        known = ", ".join(f"{p}_{s}" for p, scopes in SCOPES.items() for s in scopes)
        raise ProviderConfigError(f"principal id {value!r}: unknown scheme {scheme!r} (known: {known})")
    return provider, scope, rest


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A user or group as a provider knows it (Rancher's v3 ``principal``)."""

    id: str
    principal_type: PrincipalKind
    provider: str
    display_name: str = ""
    login_name: str = ""
    me: bool = False
    member_of: bool = False
    profile_picture: str = ""
    profile_url: str = ""

    def to_json(self) -> dict[str, Any]:
        """The v3 resource body (Go's omitempty: empty strings and false flags are left out)."""
        values: dict[str, Any] = {}
        for key, value in (
            ("displayName", self.display_name),
            ("loginName", self.login_name),
            ("profilePicture", self.profile_picture),
            ("profileURL", self.profile_url),
            ("principalType", self.principal_type),
            ("me", self.me),
            ("memberOf", self.member_of),
            ("provider", self.provider),
        ):
            if value:
                values[key] = value
        return norman.resource(type_="principal", id_=self.id, values=values)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginResult:
    """Who logged in and their group principals, as the login action and ``testAndApply`` give them."""

    user: Principal
    groups: tuple[Principal, ...]
    provider_secret: str = field(default="", repr=False)
    """What the provider needs to refresh this user later (GitHub's access token; empty for LDAP).
    The server keeps it as Rancher keeps it, in a Secret, and passes it to `AuthProvider.refresh`."""

    @property
    def group_ids(self) -> tuple[str, ...]:
        """The group principal ids: the ``Impersonate-Group`` values and the user attribute's groups."""
        return tuple(group.id for group in self.groups)


def check_access(
    *,
    access_mode: str,
    allowed_principal_ids: Sequence[str],
    user_id: str,
    groups: Iterable[Principal],
    other_user_principal_ids: Iterable[str] = (),
    has_role_bindings: Callable[[Sequence[str]], bool] | None = None,
) -> bool:
    """Rancher's CheckAccess: may this user log in under the access mode?

    ``unrestricted`` (or empty) admits everyone. ``required`` admits a user whose principal id, one of
    their other principal ids (``other_user_principal_ids``, from their User object) or one of their
    groups is in ``allowed_principal_ids``. ``restricted`` admits those too, and also anyone for whom
    ``has_role_bindings`` (the server's lookup of cluster and project role bindings, given the user's and
    groups' principal ids) says yes.
    """
    if access_mode in ("", "unrestricted"):
        return True
    if access_mode not in ACCESS_MODES:
        raise ProviderConfigError(f"expected one of {', '.join(ACCESS_MODES)}", field_name="accessMode")
    allowed = set(allowed_principal_ids)
    user_ids = [user_id, *(p for p in other_user_principal_ids if p != user_id)]
    group_ids = [group.id for group in groups]
    if allowed.intersection(user_ids) or allowed.intersection(group_ids):
        return True
    if access_mode == "restricted" and has_role_bindings is not None:
        return has_role_bindings([*group_ids, *user_ids])
    return False


def _string_field(body: Mapping[str, Any], name: str, *, secret: bool) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise LoginInputError(f"{name}: required, not provided")
    if not isinstance(value, str):
        shown = "a value" if secret else repr(value)
        raise LoginInputError(
            f"{name}: expected a string, got {shown} of type {type(value).__name__}", code="InvalidFormat"
        )
    return value


def read_basic_login(body: Mapping[str, Any]) -> tuple[str, str]:
    """``(username, password)`` from a v3 ``basicLogin`` body (Active Directory and OpenLDAP login)."""
    return _string_field(body, "username", secret=False), _string_field(body, "password", secret=True)


def read_github_login(body: Mapping[str, Any]) -> str:
    """The OAuth ``code`` from a v3 ``githubLogin`` body."""
    return _string_field(body, "code", secret=True)


@runtime_checkable
class AuthProvider(Protocol):
    """One configured provider; instances are cheap, the server makes one per auth config version."""

    @property
    def name(self) -> str:
        """``activedirectory``, ``openldap`` or ``github``: the provider part of its principal ids."""
        ...

    @property
    def config(self) -> AuthConfig:
        """The auth config this provider was made from (secrets included: never log it)."""
        ...

    async def login(self, credentials: Mapping[str, Any]) -> LoginResult:
        """The login action: a ``basicLogin`` or ``githubLogin`` body to the user and their groups.

        Applies the access mode; raises `LoginRefusedError`, `AccessDeniedError`, `LoginInputError`
        or `ProviderUnavailableError` (and its timeout and rate-limit kinds).
        """
        ...

    async def test_config(self, credentials: Mapping[str, Any]) -> LoginResult:
        """``testAndApply``: log in under this (not yet saved) config; the tester is always admitted."""
        ...

    async def search_principals(
        self, query: str, kind: PrincipalKind | None = None, *, secret: str = ""
    ) -> tuple[Principal, ...]:
        """Users and/or groups whose names start with (groups: contain) ``query``.

        ``secret`` is the searching user's provider secret (GitHub searches with their token).
        """
        ...

    async def refresh(self, user_id: str, *, secret: str = "") -> tuple[Principal, ...]:
        """The user's current group principals (the periodic user-attribute refresh).

        Raises `PrincipalNotFoundError` when the user is gone and `AccountDisabledError` when disabled.
        """
        ...

    def check_access(
        self,
        user_id: str,
        groups: Iterable[Principal],
        *,
        other_user_principal_ids: Iterable[str] = (),
        has_role_bindings: Callable[[Sequence[str]], bool] | None = None,
    ) -> bool:
        """`check_access` under this provider's access mode and allowed principal ids."""
        ...

    async def aclose(self) -> None:
        """Release connections (the GitHub client's HTTP session)."""
        ...

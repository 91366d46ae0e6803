"""Rancher's v3 auth configs (``activedirectory``, ``openldap``, ``github``) as typed, validated data.

Field names, defaults and required fields are Rancher's (``authn_types.go`` and its norman tags), so a
body written for Rancher's API parses here. `parse_auth_config` names the offending field and what it
expected; secrets (``serviceAccountPassword``, ``clientSecret``, client ids' secrets) are never echoed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from cryptography import x509

from corral.server.providers.errors import ProviderConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_TYPES",
    "ActiveDirectoryConfig",
    "AuthConfig",
    "GithubConfig",
    "LdapConfig",
    "OpenLdapConfig",
    "auth_config_json",
    "parse_auth_config",
]

_SHORT_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_OID: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")


def _attr(value: Any) -> str | None:
    return (
        None if _SHORT_NAME.fullmatch(value) or _OID.fullmatch(value) else "expected an LDAP attribute name"
    )


def _attr_or_empty(value: Any) -> str | None:
    return None if value == "" else _attr(value)


def _attr_list(value: Any) -> str | None:
    bad = [part for part in value.split("|") if _attr(part)]
    return f"expected attribute names separated by '|', {bad[0]!r} is not one" if bad else None


def _filter(value: Any) -> str | None:
    """An extra filter clause: empty, or one parenthesised RFC 4515 filter (balanced, unescaped parens)."""
    if value == "":
        return None
    if not (value.startswith("(") and value.endswith(")")):
        return "expected an LDAP filter in parentheses, such as (memberOf=cn=ops,dc=example,dc=org)"
    depth = 0
    for index, char in enumerate(value):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or (depth == 0 and index != len(value) - 1):
            return "expected one LDAP filter: parentheses do not balance"
    return None if depth == 0 else "expected one LDAP filter: parentheses do not balance"


def _port(value: Any) -> str | None:
    return None if 0 < value < 65536 else "expected a port between 1 and 65535"


def _positive(value: Any) -> str | None:
    return None if value > 0 else "expected a positive number of milliseconds"


def _servers(value: Any) -> str | None:
    if any(not server or any(c.isspace() or c in "/:" for c in server) for server in value):
        return "expected host names or addresses without scheme or port (the port is a field of its own)"
    return None


def _certificate(value: Any) -> str | None:
    if value == "":
        return None
    try:
        x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        return "expected one or more PEM certificates (the CA that signed the directory's certificate)"
    return None


def _access_mode(value: Any) -> str | None:
    modes = ("", "unrestricted", "restricted", "required")
    return None if value in modes else "expected one of unrestricted, restricted, required"


def _hostname(value: Any) -> str | None:
    return None if _HOSTNAME.fullmatch(value) else "expected a host name with an optional :port, no scheme"


def _spec(
    json: str,
    *,
    required: bool = False,
    secret: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> dict[str, Any]:
    return {"json": json, "required": required, "secret": secret, "check": check}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Common:
    """The fields every auth config has (Rancher's AuthConfig)."""

    enabled: bool = field(default=False, metadata=_spec("enabled"))
    access_mode: str = field(default="unrestricted", metadata=_spec("accessMode", check=_access_mode))
    allowed_principal_ids: tuple[str, ...] = field(default=(), metadata=_spec("allowedPrincipalIds"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveDirectoryConfig(_Common):
    """``activeDirectoryConfig``: Rancher's fields and defaults."""

    servers: tuple[str, ...] = field(default=(), metadata=_spec("servers", required=True, check=_servers))
    port: int = field(default=389, metadata=_spec("port", check=_port))
    tls: bool = field(default=False, metadata=_spec("tls"))
    starttls: bool = field(default=False, metadata=_spec("starttls"))
    certificate: str = field(default="", repr=False, metadata=_spec("certificate", check=_certificate))
    default_login_domain: str = field(default="", metadata=_spec("defaultLoginDomain"))
    service_account_username: str = field(default="", metadata=_spec("serviceAccountUsername", required=True))
    service_account_password: str = field(
        default="", repr=False, metadata=_spec("serviceAccountPassword", required=True, secret=True)
    )
    user_disabled_bit_mask: int = field(default=2, metadata=_spec("userDisabledBitMask"))
    user_search_base: str = field(default="", metadata=_spec("userSearchBase", required=True))
    user_search_attribute: str = field(
        default="sAMAccountName|sn|givenName", metadata=_spec("userSearchAttribute", check=_attr_list)
    )
    user_search_filter: str = field(default="", metadata=_spec("userSearchFilter", check=_filter))
    user_login_attribute: str = field(
        default="sAMAccountName", metadata=_spec("userLoginAttribute", check=_attr)
    )
    user_object_class: str = field(default="person", metadata=_spec("userObjectClass", check=_attr))
    user_name_attribute: str = field(default="name", metadata=_spec("userNameAttribute", check=_attr))
    user_enabled_attribute: str = field(
        default="userAccountControl", metadata=_spec("userEnabledAttribute", check=_attr_or_empty)
    )
    user_login_filter: str = field(default="", metadata=_spec("userLoginFilter", check=_filter))
    group_search_base: str = field(default="", metadata=_spec("groupSearchBase"))
    group_search_attribute: str = field(
        default="sAMAccountName", metadata=_spec("groupSearchAttribute", check=_attr)
    )
    group_search_filter: str = field(default="", metadata=_spec("groupSearchFilter", check=_filter))
    group_object_class: str = field(default="group", metadata=_spec("groupObjectClass", check=_attr))
    group_name_attribute: str = field(default="name", metadata=_spec("groupNameAttribute", check=_attr))
    group_dn_attribute: str = field(
        default="distinguishedName", metadata=_spec("groupDNAttribute", check=_attr)
    )
    group_member_user_attribute: str = field(
        default="distinguishedName", metadata=_spec("groupMemberUserAttribute", check=_attr)
    )
    group_member_mapping_attribute: str = field(
        default="member", metadata=_spec("groupMemberMappingAttribute", check=_attr)
    )
    connection_timeout: int = field(default=5000, metadata=_spec("connectionTimeout", check=_positive))
    nested_group_membership_enabled: bool = field(
        default=False, metadata=_spec("nestedGroupMembershipEnabled")
    )

    TYPE: ClassVar[str] = "activeDirectoryConfig"
    NAME: ClassVar[str] = "activedirectory"


@dataclass(frozen=True, slots=True, kw_only=True)
class LdapConfig(_Common):
    """Rancher's LdapFields: the OpenLDAP (and FreeIPA) settings."""

    servers: tuple[str, ...] = field(default=(), metadata=_spec("servers", required=True, check=_servers))
    port: int = field(default=389, metadata=_spec("port", check=_port))
    tls: bool = field(default=False, metadata=_spec("tls"))
    starttls: bool = field(default=False, metadata=_spec("starttls"))
    certificate: str = field(default="", repr=False, metadata=_spec("certificate", check=_certificate))
    service_account_distinguished_name: str = field(
        default="", metadata=_spec("serviceAccountDistinguishedName", required=True)
    )
    service_account_password: str = field(
        default="", repr=False, metadata=_spec("serviceAccountPassword", required=True, secret=True)
    )
    user_disabled_bit_mask: int = field(default=0, metadata=_spec("userDisabledBitMask"))
    user_search_base: str = field(default="", metadata=_spec("userSearchBase", required=True))
    user_search_attribute: str = field(
        default="uid|sn|givenName", metadata=_spec("userSearchAttribute", check=_attr_list)
    )
    user_search_filter: str = field(default="", metadata=_spec("userSearchFilter", check=_filter))
    user_login_attribute: str = field(default="uid", metadata=_spec("userLoginAttribute", check=_attr))
    user_object_class: str = field(default="inetOrgPerson", metadata=_spec("userObjectClass", check=_attr))
    user_name_attribute: str = field(default="cn", metadata=_spec("userNameAttribute", check=_attr))
    user_member_attribute: str = field(default="memberOf", metadata=_spec("userMemberAttribute", check=_attr))
    user_enabled_attribute: str = field(
        default="", metadata=_spec("userEnabledAttribute", check=_attr_or_empty)
    )
    user_login_filter: str = field(default="", metadata=_spec("userLoginFilter", check=_filter))
    group_search_base: str = field(default="", metadata=_spec("groupSearchBase"))
    group_search_attribute: str = field(default="cn", metadata=_spec("groupSearchAttribute", check=_attr))
    group_search_filter: str = field(default="", metadata=_spec("groupSearchFilter", check=_filter))
    group_object_class: str = field(default="groupOfNames", metadata=_spec("groupObjectClass", check=_attr))
    group_name_attribute: str = field(default="cn", metadata=_spec("groupNameAttribute", check=_attr))
    group_dn_attribute: str = field(default="entryDN", metadata=_spec("groupDNAttribute", check=_attr))
    group_member_user_attribute: str = field(
        default="entryDN", metadata=_spec("groupMemberUserAttribute", check=_attr)
    )
    group_member_mapping_attribute: str = field(
        default="member", metadata=_spec("groupMemberMappingAttribute", check=_attr)
    )
    connection_timeout: int = field(default=5000, metadata=_spec("connectionTimeout", check=_positive))
    nested_group_membership_enabled: bool = field(
        default=False, metadata=_spec("nestedGroupMembershipEnabled")
    )
    search_using_service_account: bool = field(default=False, metadata=_spec("searchUsingServiceAccount"))


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenLdapConfig(LdapConfig):
    """``openLdapConfig``: exactly Rancher's LdapFields."""

    TYPE: ClassVar[str] = "openLdapConfig"
    NAME: ClassVar[str] = "openldap"


@dataclass(frozen=True, slots=True, kw_only=True)
class GithubConfig(_Common):
    """``githubConfig``: github.com by default; ``hostname`` and ``tls`` select a GitHub Enterprise server.

    The API is ``https://api.github.com`` for github.com and ``<scheme>://<hostname>/api/v3`` otherwise;
    the OAuth code exchange goes to ``<scheme>://<hostname>/login/oauth/access_token``.
    """

    hostname: str = field(default="github.com", metadata=_spec("hostname", check=_hostname))
    tls: bool = field(default=True, metadata=_spec("tls"))
    client_id: str = field(default="", metadata=_spec("clientId", required=True))
    client_secret: str = field(
        default="", repr=False, metadata=_spec("clientSecret", required=True, secret=True)
    )
    additional_client_ids: Mapping[str, str] = field(
        default_factory=dict, repr=False, metadata=_spec("additionalClientIds", secret=True)
    )
    hostname_to_client_id: Mapping[str, str] = field(
        default_factory=dict, metadata=_spec("hostnameToClientId")
    )

    TYPE: ClassVar[str] = "githubConfig"
    NAME: ClassVar[str] = "github"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def login_url(self) -> str:
        """Where the OAuth code is exchanged for an access token."""
        return f"{self.scheme}://{self.hostname or 'github.com'}/login/oauth/access_token"

    @property
    def api_url(self) -> str:
        """The REST API's base URL (no trailing slash)."""
        if self.hostname in ("", "github.com") and self.tls:
            return "https://api.github.com"
        return f"{self.scheme}://{self.hostname}/api/v3"

    @property
    def web_url(self) -> str:
        return f"{self.scheme}://{self.hostname or 'github.com'}"

    def for_host(self, host: str) -> GithubConfig:
        """Rancher's choseClientID: the client id and secret registered for the request's host, if any."""
        client_id = self.hostname_to_client_id.get(host, "")
        secret = self.additional_client_ids.get(client_id, "")
        if not host or not secret:
            return self
        return dataclasses.replace(self, client_id=client_id, client_secret=secret)


AuthConfig = ActiveDirectoryConfig | OpenLdapConfig | GithubConfig
CONFIG_TYPES: Final[Mapping[str, type[ActiveDirectoryConfig | OpenLdapConfig | GithubConfig]]] = {
    "activeDirectoryConfig": ActiveDirectoryConfig,
    "openLdapConfig": OpenLdapConfig,
    "githubConfig": GithubConfig,
}
_BY_NAME: Final = {cls.NAME: cls for cls in CONFIG_TYPES.values()}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _convert(spec: Mapping[str, Any], default: Any, value: Any) -> Any:
    """Check one JSON value against the field's Python type (taken from its default)."""
    name, secret = spec["json"], spec["secret"]
    shown = "a value" if secret else repr(value)
    if isinstance(default, bool):
        if value is None:  # nestedGroupMembershipEnabled is a *bool in Rancher's AD config
            return default
        if not isinstance(value, bool):
            raise ProviderConfigError(f"expected true or false, got {shown}", field_name=name)
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProviderConfigError(f"expected an integer, got {shown}", field_name=name)
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ProviderConfigError(f"expected a string, got {_type_name(value)}", field_name=name)
        return value if secret else value.strip()
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ProviderConfigError(f"expected a list of strings, got {shown}", field_name=name)
        return tuple(item.strip() for item in value)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ProviderConfigError(f"expected an object of strings, got {_type_name(value)}", field_name=name)
    return dict(value)


def parse_auth_config(data: Mapping[str, Any], *, require_complete: bool = True) -> AuthConfig:
    """An auth config from its v3 JSON (the resource, or the ``testAndApply`` input's config).

    The kind comes from ``type`` (``activeDirectoryConfig``, ``openLdapConfig``, ``githubConfig``) or,
    without it, from ``id``/``metadata.name``. Unknown keys (links, status, metadata) are ignored, as
    norman drops them. With ``require_complete`` (the default) the fields a working provider needs must
    be set; stored configs that were never enabled may leave them empty.
    """
    if not isinstance(data, Mapping):
        raise ProviderConfigError(f"expected a JSON object, got {_type_name(data)}")
    kind = data.get("type")
    name = data.get("id") or (data.get("metadata") or {}).get("name")
    if isinstance(kind, str) and kind in CONFIG_TYPES:
        cls: type[AuthConfig] = CONFIG_TYPES[kind]
    elif kind is None and isinstance(name, str) and name in _BY_NAME:
        cls = _BY_NAME[name]
    else:
        raise ProviderConfigError(
            f"expected one of {', '.join(CONFIG_TYPES)}, got {kind!r}",
            field_name="type",
            code="InvalidOption",
        )
    values: dict[str, Any] = {}
    for spec_field in dataclasses.fields(cls):
        spec = spec_field.metadata
        default = (
            spec_field.default_factory()
            if spec_field.default_factory is not dataclasses.MISSING
            else spec_field.default
        )
        raw = data.get(spec["json"])
        value = default if raw is None and not isinstance(default, bool) else _convert(spec, default, raw)
        if isinstance(value, str) and value == "" and not spec["secret"] and isinstance(default, str):
            value = default  # norman fills an empty field with its default
        if require_complete and spec["required"] and value in ("", ()):
            raise ProviderConfigError(
                "required, not provided", field_name=spec["json"], code="MissingRequired"
            )
        check = spec["check"]
        if check is not None and value not in ("", ()):
            problem = check(value)
            if problem:
                raise ProviderConfigError(problem, field_name=spec["json"])
        values[spec_field.name] = value
    config = cls(**values)
    if isinstance(config, ActiveDirectoryConfig | OpenLdapConfig) and config.tls and config.starttls:
        raise ProviderConfigError(
            "tls and starttls are exclusive: choose LDAPS or StartTLS", field_name="starttls"
        )
    return config


def auth_config_json(config: AuthConfig, *, include_secrets: bool = False) -> dict[str, Any]:
    """The config's fields under Rancher's names, plus ``type``; password fields only when asked."""
    body: dict[str, Any] = {"type": config.TYPE}
    for spec_field in dataclasses.fields(config):
        spec = spec_field.metadata
        if spec["secret"] and not include_secrets:
            continue
        value = getattr(config, spec_field.name)
        body[spec["json"]] = (
            list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, Mapping) else value
        )
    return body

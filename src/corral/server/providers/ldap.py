"""Active Directory and OpenLDAP login, principal search and group refresh, as Rancher's providers do.

The client is ldap3: pure Python, so installing corral needs no libldap headers or compiler (bonsai and
python-ldap build against libldap and ship no Linux wheels), and it implements RFC 4510-4515 including
paged results and StartTLS. It is synchronous: every directory conversation runs in a worker thread
(`asyncio.to_thread`), each socket operation bounded by ``connectionTimeout`` and the whole conversation
by a deadline, so the event loop never blocks. Filters are built only from RFC 4515-escaped values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from corral.server.providers.base import (
    LoginResult,
    Principal,
    PrincipalKind,
    check_access,
    parse_principal_id,
    principal_id,
    read_basic_login,
)
from corral.server.providers.config import ActiveDirectoryConfig, OpenLdapConfig
from corral.server.providers.errors import (
    AccessDeniedError,
    AccountDisabledError,
    LoginRefusedError,
    PrincipalNotFoundError,
    ProviderConfigError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    ServiceAccountError,
)

with warnings.catch_warnings():
    # ldap3 2.9 reads pyasn1's old encoder tables, which pyasn1 0.6 flags as deprecated at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap_errors
    from ldap3.core.tls import Tls

logger = logging.getLogger(__name__)

__all__ = ["ActiveDirectoryProvider", "LdapProvider", "OpenLdapProvider", "escape_filter_value"]

_INVALID_CREDENTIALS: Final = 49
_NO_SUCH_OBJECT: Final = 32
_PAGE_SIZE: Final = 1000
_MEMBER_BATCH: Final = 50
_DEADLINE_FACTOR: Final = 4
"""A whole login may take this many connectionTimeouts (connect, binds, searches) before it is abandoned."""


def escape_filter_value(value: str) -> str:
    """RFC 4515 escaping of an assertion value: ``*``, ``(``, ``)``, ``\\`` and NUL become ``\\2a`` etc.

    Non-ASCII characters stay as they are (the filter is UTF-8 on the wire, which RFC 4515 allows).
    """
    return "".join(f"\\{ord(char):02x}" if char in "*()\\\x00" else char for char in value)


class _VerifiedTls(Tls):
    """ldap3's TLS with the standard library's own verification: chain and host name (IP SANs too).

    ldap3 checks names itself with ``ssl.match_hostname``, deprecated since Python 3.7; here OpenSSL
    does it during the handshake, on the LDAPS connection and after StartTLS alike.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=True,
            server_hostname=connection.server.host,
        )


def _tls_context(certificate: str) -> ssl.SSLContext:
    """The system's roots plus the configured CA, as Rancher's NewCAPool."""
    context = ssl.create_default_context()
    if certificate:
        context.load_verify_locations(cadata=certificate)
    return context


@dataclass(frozen=True, slots=True)
class _Entry:
    dn: str
    attributes: Mapping[str, list[str]]
    """Case-insensitive by construction: keys are lower-cased."""

    def values(self, name: str) -> list[str]:
        return self.attributes.get(name.lower(), [])

    def first(self, name: str) -> str:
        values = self.values(name)
        return values[0] if values else ""

    def is_a(self, object_class: str) -> bool:
        return object_class.lower() in (value.lower() for value in self.values("objectClass"))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Flavour:
    """What differs between Rancher's Active Directory and OpenLDAP providers."""

    name: str
    service_account: Callable[[Any], str]
    login_filter: Callable[[Any, str], str]
    extra_user_attributes: tuple[str, ...]
    member_of_attribute: Callable[[Any], str]
    search_by_member_dn: bool
    """OpenLDAP also asks which groups name the user in groupMemberMappingAttribute (AD reads memberOf)."""


def _ad_service_account(config: ActiveDirectoryConfig) -> str:
    """Rancher's GetUserExternalID: ``DOMAIN\\user`` unless the name has a domain or is a DN already."""
    name = config.service_account_username
    if "\\" in name or "=" in name or not config.default_login_domain:
        return name
    return f"{config.default_login_domain}\\{name}"


def _ad_login_filter(config: ActiveDirectoryConfig, username: str) -> str:
    account = username.split("\\", 1)[1] if "\\" in username else username
    return f"(&({config.user_login_attribute}={escape_filter_value(account)}){config.user_login_filter})"


def _ldap_login_filter(config: OpenLdapConfig, username: str) -> str:
    return (
        f"(&(objectClass={config.user_object_class})"
        f"({config.user_login_attribute}={escape_filter_value(username)}){config.user_login_filter})"
    )


_ACTIVE_DIRECTORY: Final = _Flavour(
    name="activedirectory",
    service_account=_ad_service_account,
    login_filter=_ad_login_filter,
    extra_user_attributes=("memberOf", "objectClass", "objectGUID"),
    member_of_attribute=lambda config: "memberOf",
    search_by_member_dn=False,
)
_OPENLDAP: Final = _Flavour(
    name="openldap",
    service_account=lambda config: config.service_account_distinguished_name,
    login_filter=_ldap_login_filter,
    extra_user_attributes=("objectClass", "+"),
    member_of_attribute=lambda config: config.user_member_attribute,
    search_by_member_dn=True,
)

LdapConfigs = ActiveDirectoryConfig | OpenLdapConfig


class _Session:
    """One connection to the first reachable server; every method runs in a worker thread."""

    def __init__(self, config: LdapConfigs, flavour: _Flavour) -> None:
        self.config = config
        self.flavour = flavour
        # ldap3 sets SO_RCVTIMEO from whole seconds: round up, never below one second.
        self.timeout = max(1, math.ceil(config.connection_timeout / 1000))
        self.conn = self._connect()

    def _connect(self) -> Any:
        config = self.config
        tls = _VerifiedTls(_tls_context(config.certificate)) if config.tls or config.starttls else None
        failures: list[str] = []
        for host in config.servers:
            server = ldap3.Server(
                host,
                port=config.port,
                use_ssl=config.tls,
                tls=tls,
                connect_timeout=self.timeout,
                get_info=ldap3.NONE,
            )
            conn = ldap3.Connection(
                server,
                receive_timeout=self.timeout,
                raise_exceptions=False,
                read_only=True,
                auto_referrals=False,
            )
            try:
                conn.open()
                # ldap3 writes a request in pieces: without TCP_NODELAY, Nagle and delayed ACKs add 40 ms.
                conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if config.starttls and not conn.start_tls():
                    raise ProviderUnavailableError(f"{host}:{config.port}: StartTLS refused")
            except ldap_errors.LDAPException as e:
                _discard(conn)
                failures.append(f"{host}:{config.port}: {_describe(e)}")
                continue
            return conn
        timed_out = all("timed out" in failure for failure in failures)
        kind = ProviderTimeoutError if timed_out else ProviderUnavailableError
        raise kind(f"{self.flavour.name}: no directory server reachable ({'; '.join(failures)})")

    def close(self) -> None:
        try:
            self.conn.unbind()
        except ldap_errors.LDAPException:
            logger.debug("closing an LDAP connection failed", exc_info=True)

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        try:
            return operation()
        except ldap_errors.LDAPException as e:
            kind = ProviderTimeoutError if _is_timeout(e) else ProviderUnavailableError
            raise kind(f"{self.flavour.name}: {what}: {_describe(e)}") from e

    def bind(self, dn: str, password: str) -> bool:
        """True on success, False on invalidCredentials (wrong password, locked account); else an error."""
        self.conn.authentication = ldap3.SIMPLE
        self.conn.user, self.conn.password = dn, password
        try:
            if self._call("bind", self.conn.bind):
                return True
        finally:
            self.conn.password = None
        result = self.conn.result or {}
        if result.get("result") == _INVALID_CREDENTIALS:
            return False
        if result.get("result") == 34:  # invalidDNSyntax: a name that cannot be anyone
            return False
        raise ProviderUnavailableError(f"{self.flavour.name}: bind: {result.get('description', 'failed')}")

    def bind_service_account(self) -> None:
        if not self.config.service_account_password:
            raise ServiceAccountError(f"{self.flavour.name}: serviceAccountPassword: not provided")
        if not self.bind(self.flavour.service_account(self.config), self.config.service_account_password):
            raise ServiceAccountError(
                f"{self.flavour.name}: the service account's bind was refused "
                "(check its name and serviceAccountPassword)"
            )

    def search(
        self, base: str, query: str, attributes: Sequence[str], *, subtree: bool = True
    ) -> list[_Entry]:
        scope = ldap3.SUBTREE if subtree else ldap3.BASE
        attrs = sorted({attr for attr in attributes if attr and attr != "dn"})

        def run() -> Any:
            if subtree:
                return self.conn.extend.standard.paged_search(
                    base, query, search_scope=scope, attributes=attrs, paged_size=_PAGE_SIZE, generator=False
                )
            self.conn.search(base, query, search_scope=scope, attributes=attrs)
            return self.conn.response

        response = self._call(f"search under {base!r}", run) or []
        result = self.conn.result or {}
        code = result.get("result", 0)
        if code == _NO_SUCH_OBJECT:
            if not subtree:
                raise PrincipalNotFoundError(f"{self.flavour.name}: {base} not found")
            return []
        if code not in (0, 4):  # success, sizeLimitExceeded (a partial page is still an answer)
            raise ProviderUnavailableError(
                f"{self.flavour.name}: search under {base!r} failed: {result.get('description', code)}"
            )
        entries = []
        for item in response:
            if item.get("type") != "searchResEntry":
                continue
            values_of = {
                str(key).lower(): [
                    _text(value) for value in (values if isinstance(values, list) else [values])
                ]
                for key, values in (item.get("raw_attributes") or {}).items()
            }
            entries.append(_Entry(dn=item["dn"], attributes=values_of))
        return entries


def _discard(conn: Any) -> None:
    """Close a connection that failed half-way (ldap3 leaves its socket open then)."""
    with contextlib.suppress(ldap_errors.LDAPException):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        sock.close()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_timeout(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, ldap_errors.LDAPResponseTimeoutError) or "timed out" in text or "timeout" in text


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return "timed out" if _is_timeout(error) else text


class LdapProvider:
    """Rancher's LDAP login flow, shared by `ActiveDirectoryProvider` and `OpenLdapProvider`."""

    _flavour: _Flavour

    def __init__(self, config: LdapConfigs, *, deadline: float | None = None) -> None:
        self._config = config
        self._deadline = deadline or _DEADLINE_FACTOR * config.connection_timeout / 1000

    @property
    def name(self) -> str:
        return self._flavour.name

    @property
    def config(self) -> LdapConfigs:
        return self._config

    @property
    def user_scope(self) -> str:
        return "user"

    # --- the asynchronous surface -------------------------------------------------------------------

    async def _run(
        self, what: str, work: Callable[[_Session], Any], config: LdapConfigs | None = None
    ) -> Any:
        config = config or self._config

        def conversation() -> Any:
            session = _Session(config, self._flavour)
            try:
                return work(session)
            finally:
                session.close()

        try:
            return await asyncio.wait_for(asyncio.to_thread(conversation), self._deadline)
        except TimeoutError as e:
            raise ProviderTimeoutError(
                f"{self.name}: {what}: no answer within {self._deadline:g} s "
                f"(connectionTimeout {config.connection_timeout} ms)"
            ) from e

    async def login(self, credentials: Mapping[str, Any]) -> LoginResult:
        username, password = read_basic_login(credentials)
        result: LoginResult = await self._run("login", lambda s: self._login(s, username, password))
        if not self.check_access(result.user.id, result.groups):
            raise AccessDeniedError("Permission denied")
        return result

    async def test_config(self, credentials: Mapping[str, Any]) -> LoginResult:
        username, password = read_basic_login(credentials)
        result: LoginResult = await self._run("testAndApply", lambda s: self._login(s, username, password))
        return result

    async def search_principals(
        self, query: str, kind: PrincipalKind | None = None, *, secret: str = ""
    ) -> tuple[Principal, ...]:
        if kind not in (None, "user", "group"):
            raise ProviderConfigError(f"expected user or group, got {kind!r}", field_name="principalType")
        found: tuple[Principal, ...] = await self._run("search", lambda s: self._search(s, query, kind))
        return found

    async def refresh(self, user_id: str, *, secret: str = "") -> tuple[Principal, ...]:
        provider, scope, dn = parse_principal_id(user_id)
        if provider != self.name or scope != "user":
            raise ProviderConfigError(f"{user_id!r} is not a {self.name}_user principal id")
        groups: tuple[Principal, ...] = await self._run("refresh", lambda s: self._refresh(s, dn))
        return groups

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

    async def aclose(self) -> None:
        return None

    # --- directory conversations (worker thread) ------------------------------------------------------

    def _user_attributes(self) -> list[str]:
        c = self._config
        return [
            c.user_object_class,
            c.user_login_attribute,
            c.user_name_attribute,
            c.user_enabled_attribute,
            self._flavour.member_of_attribute(c),
            c.group_member_user_attribute,
            *self._flavour.extra_user_attributes,
        ]

    def _group_attributes(self) -> list[str]:
        c = self._config
        return [
            "objectClass",
            c.group_object_class,
            c.user_login_attribute,
            c.group_name_attribute,
            c.group_search_attribute,
            c.group_dn_attribute,
        ]

    def _group_base(self) -> str:
        return self._config.group_search_base or self._config.user_search_base

    def _login(self, session: _Session, username: str, password: str) -> LoginResult:
        session.bind_service_account()
        query = self._flavour.login_filter(self._config, username)
        entries = session.search(self._config.user_search_base, query, self._user_attributes())
        if len(entries) != 1:
            logger.info("%s login refused: %d entries match the login name", self.name, len(entries))
            raise LoginRefusedError("Unauthorized")
        entry = entries[0]
        if not session.bind(entry.dn, password):
            logger.info("%s login refused for %s: the directory refused the password", self.name, entry.dn)
            raise LoginRefusedError("Unauthorized")
        session.bind_service_account()
        return self._principals(session, entry)

    def _refresh(self, session: _Session, dn: str) -> tuple[Principal, ...]:
        session.bind_service_account()
        query = f"(objectClass={self._config.user_object_class})"
        entries = session.search(dn, query, self._user_attributes(), subtree=False)
        if len(entries) != 1:
            raise PrincipalNotFoundError(f"{self.name}: {dn} not found")
        return self._principals(session, entries[0]).groups

    def _enabled(self, entry: _Entry) -> bool:
        """Rancher's HasPermission: disabled when all bits of userDisabledBitMask are set."""
        c = self._config
        if not c.user_enabled_attribute or not entry.is_a(c.user_object_class):
            return True
        raw = entry.first(c.user_enabled_attribute) or "0"
        try:
            flags = int(raw)
        except ValueError:
            logger.warning("%s: %s of %s is not an integer", self.name, c.user_enabled_attribute, entry.dn)
            return False
        mask = c.user_disabled_bit_mask
        return flags & mask != mask

    def _to_principal(self, entry: _Entry, kind: PrincipalKind) -> Principal:
        c = self._config
        name_attribute = c.user_name_attribute if kind == "user" else c.group_name_attribute
        display = entry.first(name_attribute) or entry.dn
        login = entry.first(c.user_login_attribute) or display
        return Principal(
            id=principal_id(self.name, kind, entry.dn),
            principal_type=kind,
            provider=self.name,
            display_name=display,
            login_name=login,
        )

    def _groups_by_query(self, session: _Session, query: str) -> list[Principal]:
        entries = session.search(self._group_base(), query, self._group_attributes())
        return [
            replace(self._to_principal(entry, "group"), member_of=True)
            for entry in entries
            if entry.is_a(self._config.group_object_class)
        ]

    def _principals(self, session: _Session, entry: _Entry) -> LoginResult:
        c = self._config
        if not entry.is_a(c.user_object_class):
            raise LoginRefusedError("Unauthorized")
        if not self._enabled(entry):
            logger.info("%s login refused for %s: the account is disabled", self.name, entry.dn)
            raise AccountDisabledError("Unauthorized: the account is disabled")
        user = replace(self._to_principal(entry, "user"), me=True)
        goc = f"(objectClass={c.group_object_class})"
        groups: dict[str, Principal] = {}

        member_of = entry.values(self._flavour.member_of_attribute(c))
        for start in range(0, len(member_of), _MEMBER_BATCH):
            batch = member_of[start : start + _MEMBER_BATCH]
            alternatives = "".join(f"({c.group_dn_attribute}={escape_filter_value(dn)})" for dn in batch)
            for group in self._groups_by_query(session, f"(&{goc}(|{alternatives}))"):
                groups.setdefault(group.id, group)

        nested = c.nested_group_membership_enabled
        if self._flavour.search_by_member_dn:
            member_values = entry.values(c.group_member_user_attribute)
            if member_values:
                query = (
                    f"(&({c.group_member_mapping_attribute}={escape_filter_value(member_values[0])}){goc})"
                )
                for group in self._groups_by_query(session, query):
                    groups.setdefault(group.id, group)
            if not groups:  # Rancher's FreeIPA path: no memberOf and no entryDN, so walk the tree itself
                query = f"(&({c.group_member_mapping_attribute}={escape_filter_value(entry.dn)}){goc})"
                for group in self._groups_by_query(session, query):
                    groups.setdefault(group.id, group)
                nested = True

        if nested:
            self._gather_parents(session, list(groups.values()), groups)
        return LoginResult(user=user, groups=tuple(groups.values()))

    def _gather_parents(self, session: _Session, start: list[Principal], seen: dict[str, Principal]) -> None:
        """Walk up: the groups that list a known group as a member, until no new group appears."""
        c = self._config
        pending = list(start)
        visited: set[str] = set()
        while pending:
            group = pending.pop()
            if group.id in visited:
                continue
            visited.add(group.id)
            dn = parse_principal_id(group.id)[2]
            query = (
                f"(&({c.group_member_mapping_attribute}={escape_filter_value(dn)})"
                f"(objectClass={c.group_object_class}))"
            )
            for parent in self._groups_by_query(session, query):
                if parent.id not in seen:
                    seen[parent.id] = parent
                pending.append(parent)

    def _search(self, session: _Session, name: str, kind: PrincipalKind | None) -> tuple[Principal, ...]:
        c = self._config
        session.bind_service_account()
        found: list[Principal] = []
        value = escape_filter_value(name)
        if kind in (None, "user"):
            alternatives = "".join(
                f"({attr}={value})" if attr == "uidNumber" else f"({attr}={value}*)"
                for attr in c.user_search_attribute.split("|")
            )
            query = f"(&(objectClass={c.user_object_class})(|{alternatives}){c.user_search_filter})"
            entries = session.search(c.user_search_base, query, self._user_attributes())
            found.extend(
                self._to_principal(entry, "user") for entry in entries if entry.is_a(c.user_object_class)
            )
        if kind in (None, "group"):
            match = value if c.group_search_attribute == "gidNumber" else f"*{value}*"
            query = (
                f"(&(objectClass={c.group_object_class})"
                f"({c.group_search_attribute}={match}){c.group_search_filter})"
            )
            entries = session.search(self._group_base(), query, self._group_attributes())
            found.extend(
                self._to_principal(entry, "group") for entry in entries if entry.is_a(c.group_object_class)
            )
        return tuple(found)


class ActiveDirectoryProvider(LdapProvider):
    """``activedirectory``: logs in by sAMAccountName (``DOMAIN\\name`` accepted), groups from memberOf.

    The user's password is checked by binding as the DN the search found (Rancher binds as
    ``DOMAIN\\name``; Active Directory accepts either, and a DN works on any LDAP server).
    """

    _flavour = _ACTIVE_DIRECTORY

    def __init__(self, config: ActiveDirectoryConfig, *, deadline: float | None = None) -> None:
        super().__init__(config, deadline=deadline)


class OpenLdapProvider(LdapProvider):
    """``openldap``: logs in by uid; groups from memberOf and from groups naming the user as a member."""

    _flavour = _OPENLDAP

    def __init__(self, config: OpenLdapConfig, *, deadline: float | None = None) -> None:
        super().__init__(config, deadline=deadline)

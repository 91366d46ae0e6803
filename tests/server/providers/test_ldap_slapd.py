"""The directory providers against a real slapd over LDAPS and StartTLS: login, groups, refusals, outages."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from corral.server.providers import (
    AccessDeniedError,
    AccountDisabledError,
    ActiveDirectoryConfig,
    LoginInputError,
    LoginRefusedError,
    OpenLdapConfig,
    PrincipalNotFoundError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    ServiceAccountError,
    parse_auth_config,
    provider_for,
    refresh_groups,
)
from corral.server.providers.ldap import ActiveDirectoryProvider, OpenLdapProvider
from tests.server.providers.slapd import AD_BASE, OPENLDAP_BASE, PASSWORDS, Slapd

ALICE = f"openldap_user://uid=alice,ou=people,{OPENLDAP_BASE}"
DEVS = f"openldap_group://cn=devs,ou=groups,{OPENLDAP_BASE}"
ENG = f"openldap_group://cn=eng,ou=groups,{OPENLDAP_BASE}"
ALL_STAFF = f"openldap_group://cn=all-staff,ou=groups,{OPENLDAP_BASE}"
OPS = f"openldap_group://cn=ops,ou=groups,{OPENLDAP_BASE}"
ERIN = f"activedirectory_user://cn=Erin Admin,cn=Users,{AD_BASE}"
DOMAIN_ADMINS = f"activedirectory_group://cn=Domain Admins,cn=Groups,{AD_BASE}"
STAFF = f"activedirectory_group://cn=Staff,cn=Groups,{AD_BASE}"


def openldap_config(slapd: Slapd, **overrides: Any) -> OpenLdapConfig:
    config = parse_auth_config(
        {"type": "openLdapConfig", **slapd.openldap_settings(**{"connectionTimeout": 2000, **overrides})}
    )
    assert isinstance(config, OpenLdapConfig)
    return config


def ad_config(slapd: Slapd, **overrides: Any) -> ActiveDirectoryConfig:
    """Active Directory settings over StartTLS (the directory's AD-style suffix)."""
    config = parse_auth_config(
        {"type": "activeDirectoryConfig", **slapd.ad_settings(**{"connectionTimeout": 2000, **overrides})}
    )
    assert isinstance(config, ActiveDirectoryConfig)
    return config


def login(username: str, password: str | None = None) -> dict[str, str]:
    return {"username": username, "password": PASSWORDS.get(username, "") if password is None else password}


async def test_openldap_login_over_ldaps_gives_dn_principals_and_direct_groups(slapd: Slapd) -> None:
    result = await OpenLdapProvider(openldap_config(slapd)).login(login("alice"))
    assert result.user.id == ALICE
    assert (result.user.display_name, result.user.login_name, result.user.me) == (
        "Alice Liddell",
        "alice",
        True,
    )
    assert result.group_ids == (DEVS,)
    assert all(group.principal_type == "group" and group.member_of for group in result.groups)


async def test_nested_groups_are_followed_up_to_the_top(slapd: Slapd) -> None:
    provider = OpenLdapProvider(openldap_config(slapd, nestedGroupMembershipEnabled=True))
    result = await provider.login(login("alice"))
    assert set(result.group_ids) == {DEVS, ENG, ALL_STAFF}
    assert OPS not in result.group_ids


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong"),
        ("nobody", "alice-pw"),
        ("*", PASSWORDS["alice"]),
        ("*)(uid=*))(|(uid=*", PASSWORDS["alice"]),
        ("alice)(|(uid=*", PASSWORDS["alice"]),
        ("al*", PASSWORDS["alice"]),
        ("\\2a", PASSWORDS["alice"]),
    ],
)
async def test_wrong_password_unknown_user_and_filter_injection_log_in_as_no_one(
    slapd: Slapd, username: str, password: str
) -> None:
    with pytest.raises(LoginRefusedError) as caught:
        await OpenLdapProvider(openldap_config(slapd)).login(login(username, password))
    assert password not in str(caught.value)


async def test_an_account_locked_by_ppolicy_is_refused_with_its_right_password(slapd: Slapd) -> None:
    with pytest.raises(LoginRefusedError):
        await OpenLdapProvider(openldap_config(slapd)).login(login("bob"))


async def test_empty_password_is_a_missing_field_not_an_anonymous_bind(slapd: Slapd) -> None:
    with pytest.raises(LoginInputError, match="password"):
        await OpenLdapProvider(openldap_config(slapd)).login({"username": "alice", "password": ""})


async def test_active_directory_login_over_starttls_with_domain_and_nested_groups(slapd: Slapd) -> None:
    provider = ActiveDirectoryProvider(ad_config(slapd, nestedGroupMembershipEnabled=True))
    for username in ("erin", "CORP\\erin"):
        result = await provider.login(login(username, PASSWORDS["erin"]))
        assert result.user.id == ERIN
        assert result.user.login_name == "erin"
        assert set(result.group_ids) == {DOMAIN_ADMINS, STAFF}
    flat = await ActiveDirectoryProvider(ad_config(slapd)).login(login("erin"))
    assert flat.group_ids == (DOMAIN_ADMINS,)


async def test_active_directory_disabled_account_is_refused(slapd: Slapd) -> None:
    """userAccountControl 514 has ACCOUNTDISABLE (2), Rancher's default userDisabledBitMask."""
    with pytest.raises(AccountDisabledError):
        await ActiveDirectoryProvider(ad_config(slapd)).login(login("frank"))
    with pytest.raises(LoginRefusedError):
        await ActiveDirectoryProvider(ad_config(slapd)).login(login("erin", "wrong"))


async def test_access_mode_required_admits_members_of_an_allowed_nested_group_only(slapd: Slapd) -> None:
    config = openldap_config(
        slapd, nestedGroupMembershipEnabled=True, accessMode="required", allowedPrincipalIds=[ALL_STAFF]
    )
    provider = OpenLdapProvider(config)
    assert (await provider.login(login("alice"))).user.id == ALICE
    with pytest.raises(AccessDeniedError):
        await provider.login(login("dave"))
    tested = await provider.test_config(login("dave"))  # testAndApply: the tester is not locked out
    assert tested.group_ids == (OPS,)


async def test_search_principals_escapes_the_query(slapd: Slapd) -> None:
    provider = OpenLdapProvider(openldap_config(slapd))
    users = await provider.search_principals("Ali", "user")
    assert [p.id for p in users] == [ALICE]
    groups = await provider.search_principals("ng", "group")
    assert [p.id for p in groups] == [ENG]
    both = await provider.search_principals("d")
    assert {p.id for p in both} >= {f"openldap_user://uid=dave,ou=people,{OPENLDAP_BASE}", DEVS}
    assert await provider.search_principals("*") == ()
    assert await provider.search_principals("*)(uid=*") == ()


async def test_refresh_sees_a_removed_and_restored_group_membership(slapd: Slapd) -> None:
    provider = provider_for(openldap_config(slapd, nestedGroupMembershipEnabled=True))
    before = await refresh_groups(provider, ALICE)
    assert set(before.group_ids) == {DEVS, ENG, ALL_STAFF}
    devs = f"cn=devs,ou=groups,{OPENLDAP_BASE}"
    alice = f"uid=alice,ou=people,{OPENLDAP_BASE}"
    slapd.modify(
        OPENLDAP_BASE,
        f"dn: {devs}\nchangetype: modify\nadd: member\nmember: cn=ops,ou=groups,{OPENLDAP_BASE}\n",
    )
    slapd.modify(OPENLDAP_BASE, f"dn: {devs}\nchangetype: modify\ndelete: member\nmember: {alice}\n")
    try:
        after = await refresh_groups(provider, ALICE)
        assert after.group_ids == ()
        dave = await refresh_groups(provider, f"openldap_user://uid=dave,ou=people,{OPENLDAP_BASE}")
        assert set(dave.group_ids) == {OPS, DEVS, ENG, ALL_STAFF}
    finally:
        slapd.modify(OPENLDAP_BASE, f"dn: {devs}\nchangetype: modify\nadd: member\nmember: {alice}\n")
        slapd.modify(
            OPENLDAP_BASE,
            f"dn: {devs}\nchangetype: modify\ndelete: member\nmember: cn=ops,ou=groups,{OPENLDAP_BASE}\n",
        )
    assert set((await refresh_groups(provider, ALICE)).group_ids) == {DEVS, ENG, ALL_STAFF}


async def test_refresh_of_a_deleted_user_is_not_found(slapd: Slapd) -> None:
    provider = OpenLdapProvider(openldap_config(slapd))
    with pytest.raises(PrincipalNotFoundError):
        await provider.refresh(f"openldap_user://uid=ghost,ou=people,{OPENLDAP_BASE}")


async def test_refresh_of_a_disabled_ad_user_fails(slapd: Slapd) -> None:
    provider = ActiveDirectoryProvider(ad_config(slapd))
    assert await provider.refresh(ERIN)
    with pytest.raises(AccountDisabledError):
        await provider.refresh(f"activedirectory_user://cn=Frank Former,cn=Users,{AD_BASE}")


async def test_a_wrong_service_account_password_is_a_configuration_error(slapd: Slapd) -> None:
    provider = OpenLdapProvider(openldap_config(slapd, serviceAccountPassword="not-it"))
    with pytest.raises(ServiceAccountError) as caught:
        await provider.login(login("alice"))
    assert "not-it" not in str(caught.value)


async def test_a_certificate_from_another_ca_is_refused(slapd: Slapd) -> None:
    from corral.controlplane.pki import CertificateAuthority

    other = CertificateAuthority.create("someone-else").cert_pem.decode()
    for config in (openldap_config(slapd, certificate=other), ad_config(slapd, certificate=other)):
        with pytest.raises(ProviderUnavailableError, match="certificate verify failed"):
            await provider_for(config).login(login("alice"))


async def test_directory_down_is_a_clear_error(slapd: Slapd) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenLdapProvider(openldap_config(slapd, port=port))
    with pytest.raises(ProviderUnavailableError, match="no directory server reachable") as caught:
        await provider.login(login("alice"))
    assert not isinstance(caught.value, ProviderTimeoutError)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that accepts connections and never says a word: a hung directory."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("tls", ["tls", "starttls"])
async def test_a_directory_that_never_answers_times_out(slapd: Slapd, silent_port: int, tls: str) -> None:
    provider = OpenLdapProvider(
        openldap_config(
            slapd, port=silent_port, tls=tls == "tls", starttls=tls == "starttls", connectionTimeout=1000
        )
    )
    with pytest.raises(ProviderTimeoutError, match=r"timed out|no answer"):
        await provider.login(login("alice"))


async def test_a_paused_slapd_times_out_and_recovers(slapd: Slapd) -> None:
    provider = OpenLdapProvider(openldap_config(slapd, connectionTimeout=1000))
    with slapd.paused(), pytest.raises(ProviderTimeoutError):
        await provider.login(login("alice"))
    assert (await provider.login(login("alice"))).user.id == ALICE

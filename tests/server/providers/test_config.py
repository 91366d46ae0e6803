"""Auth configs, principal ids, the access check and the refresh schedule: pure functions, no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.server.providers import (
    ActiveDirectoryConfig,
    CronSchedule,
    OpenLdapConfig,
    Principal,
    ProviderConfigError,
    RefreshSettings,
    auth_config_json,
    check_access,
    parse_auth_config,
    parse_principal_id,
    principal_id,
    read_basic_login,
    refresh_due,
)
from corral.server.providers.ldap import escape_filter_value

LDAP: dict[str, Any] = {
    "type": "openLdapConfig",
    "servers": ["ldap.example.org"],
    "serviceAccountDistinguishedName": "cn=svc,dc=example,dc=org",
    "serviceAccountPassword": "hunter2-very-secret",
    "userSearchBase": "dc=example,dc=org",
}


def test_defaults_are_ranchers() -> None:
    config = parse_auth_config(LDAP)
    assert isinstance(config, OpenLdapConfig)
    assert (config.port, config.user_login_attribute, config.group_object_class) == (
        389,
        "uid",
        "groupOfNames",
    )
    assert (config.connection_timeout, config.access_mode, config.group_dn_attribute) == (
        5000,
        "unrestricted",
        "entryDN",
    )
    ad = parse_auth_config(
        {
            "type": "activeDirectoryConfig",
            "servers": ["dc1"],
            "serviceAccountUsername": "svc",
            "serviceAccountPassword": "x",
            "userSearchBase": "dc=corp",
        }
    )
    assert isinstance(ad, ActiveDirectoryConfig)
    assert (ad.user_search_attribute, ad.user_disabled_bit_mask, ad.user_enabled_attribute) == (
        "sAMAccountName|sn|givenName",
        2,
        "userAccountControl",
    )
    assert parse_auth_config({**LDAP, "type": None, "id": "openldap"}) == config


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"servers": []}, "servers", "required"),
        ({"servers": "ldap.example.org"}, "servers", "list of strings"),
        ({"servers": ["ldaps://ldap.example.org"]}, "servers", "without scheme"),
        ({"port": "389"}, "port", "integer"),
        ({"port": 70000}, "port", "1 and 65535"),
        ({"tls": "yes"}, "tls", "true or false"),
        ({"userLoginAttribute": "uid)(x"}, "userLoginAttribute", "attribute name"),
        ({"userSearchAttribute": "uid|s n"}, "userSearchAttribute", "'s n'"),
        ({"userLoginFilter": "memberOf=x"}, "userLoginFilter", "parentheses"),
        ({"userLoginFilter": "(a=b))(|(c=d)"}, "userLoginFilter", "balance"),
        ({"accessMode": "everyone"}, "accessMode", "unrestricted, restricted, required"),
        ({"certificate": "not a pem"}, "certificate", "PEM"),
        ({"connectionTimeout": 0}, "connectionTimeout", "positive"),
        ({"serviceAccountPassword": ""}, "serviceAccountPassword", "required"),
        ({"serviceAccountPassword": 12345}, "serviceAccountPassword", "string"),
        ({"tls": True, "starttls": True}, "starttls", "exclusive"),
        ({"type": "samlConfig"}, "type", "openLdapConfig"),
    ],
)
def test_errors_name_the_field_and_the_expectation(change: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        parse_auth_config({**LDAP, **change})
    assert caught.value.field_name == field
    assert expected in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "12345" not in str(caught.value)


def test_incomplete_configs_parse_when_asked() -> None:
    config = parse_auth_config({"type": "githubConfig"}, require_complete=False)
    with pytest.raises(ProviderConfigError, match="clientId"):
        parse_auth_config({"type": "githubConfig"})
    assert "clientSecret" not in auth_config_json(config)


def test_json_round_trip_keeps_secrets_out_unless_asked() -> None:
    config = parse_auth_config(LDAP)
    public = auth_config_json(config)
    assert "serviceAccountPassword" not in public
    assert "hunter2" not in repr(config)
    assert parse_auth_config(auth_config_json(config, include_secrets=True)) == config


def test_principal_ids() -> None:
    dn = "CN=Jane Doe,OU=People,DC=corp,DC=example"
    assert principal_id("activedirectory", "user", dn) == f"activedirectory_user://{dn}"
    assert parse_principal_id("github_team://42") == ("github", "team", "42")
    assert parse_principal_id(f"openldap_group://{dn}") == ("openldap", "group", dn)
    for bad in ("github_group://1", "local://u-x", "openldap_user:/x", "github_user://"):
        with pytest.raises(ProviderConfigError):
            parse_principal_id(bad)


def _group(pid: str) -> Principal:
    return Principal(id=pid, principal_type="group", provider="openldap")


def test_access_modes() -> None:
    groups = [_group("openldap_group://cn=devs")]
    args: dict[str, Any] = {"user_id": "openldap_user://uid=a", "groups": groups}
    assert check_access(access_mode="unrestricted", allowed_principal_ids=[], **args)
    assert check_access(access_mode="", allowed_principal_ids=[], **args)
    assert check_access(access_mode="required", allowed_principal_ids=["openldap_group://cn=devs"], **args)
    assert check_access(access_mode="required", allowed_principal_ids=["openldap_user://uid=a"], **args)
    assert not check_access(access_mode="required", allowed_principal_ids=["openldap_group://cn=ops"], **args)
    assert check_access(
        access_mode="required",
        allowed_principal_ids=["local://u-abc"],
        other_user_principal_ids=["local://u-abc"],
        **args,
    )
    bound = check_access(
        access_mode="restricted",
        allowed_principal_ids=[],
        has_role_bindings=lambda ids: "openldap_group://cn=devs" in ids,
        **args,
    )
    assert bound
    assert not check_access(
        access_mode="required", allowed_principal_ids=[], has_role_bindings=lambda ids: True, **args
    )


def test_basic_login_input() -> None:
    assert read_basic_login({"username": "a", "password": "p", "ttl": 0}) == ("a", "p")
    with pytest.raises(Exception, match="username"):
        read_basic_login({"password": "p"})
    with pytest.raises(Exception, match="password: expected a string") as caught:
        read_basic_login({"username": "a", "password": 1234567})
    assert "1234567" not in str(caught.value)


@given(st.text())
def test_escaped_values_hold_no_filter_syntax(value: str) -> None:
    escaped = escape_filter_value(value)
    assert not set("()*\x00") & set(escaped)
    assert escaped.replace("\\5c", "").count("\\") == sum(value.count(c) for c in "()*\x00")


def test_escaping_is_rfc4515() -> None:
    assert escape_filter_value("*)(uid=*))(|(uid=*") == "\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a"
    assert escape_filter_value("a\\b\x00") == "a\\5cb\\00"


def test_refresh_settings_by_ranchers_names() -> None:
    default = RefreshSettings.from_settings({})
    assert default.max_age == timedelta(hours=1)
    assert default.resync is not None
    assert default.resync.text == "0 0 * * *"
    custom = RefreshSettings.from_settings(
        {"auth-user-info-resync-cron": "@every 30s", "auth-user-info-max-age-seconds": "10"}
    )
    assert custom.max_age == timedelta(seconds=10)
    assert custom.resync is not None
    assert custom.resync.every == timedelta(seconds=30)
    assert RefreshSettings.from_settings({"auth-user-info-resync-cron": ""}).resync is None
    with pytest.raises(ProviderConfigError, match="auth-user-info-max-age-seconds"):
        RefreshSettings.from_settings({"auth-user-info-max-age-seconds": "an hour"})


@pytest.mark.parametrize(
    ("line", "after", "expected"),
    [
        ("0 0 * * *", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
        (
            "*/15 * * * *",
            datetime(2026, 3, 1, 12, 7, 30, tzinfo=UTC),
            datetime(2026, 3, 1, 12, 15, tzinfo=UTC),
        ),
        (
            "30 9 * * MON-FRI",
            datetime(2026, 3, 7, 10, 0, tzinfo=UTC),
            datetime(2026, 3, 9, 9, 30, tzinfo=UTC),
        ),
        ("0 0 1 JAN *", datetime(2026, 3, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("0 12 13 * FRI", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 6, 12, 0, tzinfo=UTC)),
        ("@hourly", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), datetime(2026, 3, 1, 13, 0, tzinfo=UTC)),
        (
            "@every 1m30s",
            datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
            datetime(2026, 3, 1, 12, 1, 30, tzinfo=UTC),
        ),
    ],
)
def test_cron_next_activation(line: str, after: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(line).next_after(after) == expected


@pytest.mark.parametrize(
    "line", ["0 0 * *", "61 * * * *", "* 24 * * *", "* * * * 7-1", "*/0 * * * *", "@every x"]
)
def test_bad_cron_lines(line: str) -> None:
    with pytest.raises(ProviderConfigError, match="auth-user-info-resync-cron"):
        CronSchedule.parse(line)


def test_max_age_gate() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert refresh_due(last_refresh=None, now=now, max_age=hour)
    assert not refresh_due(last_refresh=now - timedelta(minutes=5), now=now, max_age=hour)
    assert refresh_due(last_refresh=now - timedelta(minutes=5), now=now, max_age=hour, force=True)
    assert refresh_due(last_refresh=now - hour, now=now, max_age=hour)

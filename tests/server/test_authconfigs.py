"""External providers' state in the server, over caches filled by hand: group principals, the tokens of a
disabled provider, principals as Rancher stores them, and the names of the auth configs' Secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.auth import hashers
from corral.auth.identity import AUTHENTICATED_GROUPS
from corral.server.authconfigs import _secret_name, principal_json
from corral.server.authn import HASHED_ANNOTATION, TokenAuthenticator
from corral.server.providers import Principal
from corral.server.proxy_interfaces import AuthenticationError
from corral.server.state import ServerState
from tests.server.test_server_auth import _state

DN = "openldap_group://cn=devs,ou=groups,dc=example,dc=org"
SECRET = "c" * 54


def _attribute(user_id: str, groups: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "metadata": {"name": user_id, "resourceVersion": "1"},
        "GroupPrincipals": {
            provider: {"items": [{"metadata": {"name": name}} for name in names]}
            for provider, names in groups.items()
        },
    }


async def _with_groups(state: ServerState) -> None:
    await state.userattributes.observe(
        _attribute("u-a", {"local": ["local://g-ops"], "openldap": [DN, "local://g-ops"], "github": []})
    )


async def test_user_groups_merge_every_provider_in_order_without_local_prefix() -> None:
    state = _state()
    await _with_groups(state)
    assert state.user_groups("u-a") == ("g-ops", DN)
    assert state.user_groups("u-unknown") == ()


async def test_the_proxy_identity_carries_the_directory_groups() -> None:
    state = _state()
    await _with_groups(state)
    await state.users.observe({"metadata": {"name": "u-a", "resourceVersion": "1"}, "principalIds": [DN]})
    info = TokenAuthenticator(state).user_info(state.users.get("u-a") or {})
    assert info.groups == ("g-ops", DN, *AUTHENTICATED_GROUPS)


def _token(provider: str) -> dict[str, Any]:
    created = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "metadata": {
            "name": "token-ext01",
            "resourceVersion": "1",
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "annotations": {HASHED_ANNOTATION: "true"},
        },
        "token": hashers.hash_secret(SECRET),
        "userId": "u-a",
        "authProvider": provider,
    }


@pytest.mark.parametrize(("enabled", "accepted"), [(True, True), (False, False), (None, False)])
async def test_a_token_of_a_disabled_provider_is_refused(enabled: bool | None, accepted: bool) -> None:
    state = _state()
    await state.users.observe({"metadata": {"name": "u-a", "resourceVersion": "1"}, "enabled": True})
    await state.tokens.observe(_token("openldap"))
    if enabled is not None:
        config = {"metadata": {"name": "openldap", "resourceVersion": "1"}, "enabled": enabled}
        await state.informers["authconfigs"].observe(config)
    authenticator = TokenAuthenticator(state, track_last_used=False)
    if accepted:
        found = await authenticator.authenticate_value(f"token-ext01:{SECRET}", cluster="")
        assert found.user_id == "u-a"
    else:
        with pytest.raises(AuthenticationError, match="auth provider openldap is disabled"):
            await authenticator.authenticate_value(f"token-ext01:{SECRET}", cluster="")


def test_principals_are_stored_with_their_id_as_metadata_name_and_no_empty_fields() -> None:
    principal = Principal(
        id=DN, principal_type="group", provider="openldap", display_name="devs", member_of=True
    )
    assert principal_json(principal) == {
        "metadata": {"name": DN},
        "displayName": "devs",
        "principalType": "group",
        "memberOf": True,
        "provider": "openldap",
    }


@pytest.mark.parametrize(
    ("provider", "field", "name"),
    [
        ("openldap", "serviceAccountPassword", "openldapconfig-serviceaccountpassword"),
        ("activedirectory", "serviceAccountPassword", "activedirectoryconfig-serviceaccountpassword"),
        ("github", "clientSecret", "githubconfig-clientsecret"),
    ],
)
def test_secret_names_are_rancher_s(provider: str, field: str, name: str) -> None:
    assert _secret_name(provider, field) == name

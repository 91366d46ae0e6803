"""Token authentication, visibility and the kubeconfig text, over a state whose caches are filled by hand.

The informers are never started: objects go in through `Informer.observe`, as a process's own writes
do, so the checks are Rancher's rules alone (hash, expiry, enabled, cluster scope, user, groups).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from corral.auth import hashers
from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.kubeconfig import KubeConfig
from corral.server.access import Access
from corral.server.authn import HASHED_ANNOTATION, TokenAuthenticator
from corral.server.kubeconfig import format_cert_string, kubeconfig_host, token_kubeconfig
from corral.server.norman_views import view
from corral.server.proxy_interfaces import AuthenticationError
from corral.server.state import ServerState

SECRET = "b" * 54
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class _NoUpstream(AsyncKubeClient):
    """Any request is a bug here: the caches must answer."""

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        from corral.errors import NotFoundError

        raise NotFoundError("not in the upstream", status=404, reason="NotFound")


def _state() -> ServerState:
    return ServerState(_NoUpstream(KubeConfig(server="https://127.0.0.1:1", token="unused")))


def _token(name: str = "token-abcde", **fields: Any) -> dict[str, Any]:
    created = fields.pop("created", NOW - timedelta(minutes=1))
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "annotations": {HASHED_ANNOTATION: "true"},
        },
        "token": hashers.hash_secret(SECRET),
        "userId": "u-alice",
        "ttl": 0,
        **fields,
    }


def _user(name: str = "u-alice", **fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": "1"}, "username": "alice", **fields}


async def _authenticator(*objects: tuple[str, dict[str, Any]]) -> TokenAuthenticator:
    state = _state()
    for plural, obj in objects:
        await state.informers[plural].observe(obj)
    return TokenAuthenticator(state, now=lambda: NOW, track_last_used=False)


async def test_a_good_token_gives_the_user_with_groups_and_extras() -> None:
    attribute = {
        "metadata": {"name": "u-alice", "resourceVersion": "1"},
        "GroupPrincipals": {"local": {"items": [{"metadata": {"name": "local://devs"}}]}},
        "ExtraByProvider": {"local": {"principalid": ["local://u-alice"], "username": ["alice"]}},
    }
    auth = await _authenticator(("tokens", _token()), ("users", _user()), ("userattributes", attribute))
    found = await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    assert found.user.name == "u-alice"
    assert found.user.groups == ("devs", *AUTHENTICATED_GROUPS)
    assert found.user.extras == {"principalid": ("local://u-alice",), "username": ("alice",)}
    assert found.user.token_name == "token-abcde"


async def test_without_a_user_attribute_extras_come_from_the_user() -> None:
    auth = await _authenticator(("tokens", _token()), ("users", _user(principalIds=["local://u-alice"])))
    found = await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    assert found.user.groups == AUTHENTICATED_GROUPS
    assert found.user.extras == {"principalid": ("local://u-alice",), "username": ("alice",)}


@pytest.mark.parametrize(
    ("token", "user", "value", "cluster", "reason"),
    [
        (_token(), _user(), "token-abcde:" + "c" * 54, "", "invalid token"),
        (_token(enabled=False), _user(), f"token-abcde:{SECRET}", "", "not enabled"),
        (_token(ttl=30_000), _user(), f"token-abcde:{SECRET}", "", "expired"),
        (_token(clusterName="c-one"), _user(), f"token-abcde:{SECRET}", "c-two", "clusterID does not match"),
        (_token(clusterName="c-one"), _user(), f"token-abcde:{SECRET}", "", "clusterID does not match"),
        (_token(), _user(enabled=False), f"token-abcde:{SECRET}", "", "user is not enabled"),
        (_token(userId="u-gone"), _user(), f"token-abcde:{SECRET}", "", "user does not exist"),
        (_token(), _user(), f"token-other:{SECRET}", "", "no such token"),
        (_token(), _user(), "token-abcde", "", "must authenticate"),
        (_token(), _user(), f"ext/token-abcde:{SECRET}", "", "no such token"),
        (_token(), _user(), f"Token-ABCDE:{SECRET}", "", "no such token"),
    ],
)
async def test_refusals(
    token: dict[str, Any], user: dict[str, Any], value: str, cluster: str, reason: str
) -> None:
    auth = await _authenticator(("tokens", token), ("users", user))
    with pytest.raises(AuthenticationError, match=reason) as caught:
        await auth.authenticate_value(value, cluster=cluster)
    assert SECRET not in str(caught.value)


async def test_a_cluster_scoped_token_works_on_its_own_cluster() -> None:
    auth = await _authenticator(("tokens", _token(clusterName="c-one")), ("users", _user()))
    assert (await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="c-one")).user.name == "u-alice"


async def test_an_unhashed_token_compares_plainly() -> None:
    token = _token(token=SECRET)
    token["metadata"]["annotations"] = {}
    auth = await _authenticator(("tokens", token), ("users", _user()))
    assert (await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")).user.name == "u-alice"


async def test_headers_are_read_as_rancher_reads_them() -> None:
    auth = await _authenticator(("tokens", _token()), ("users", _user()))
    value = f"token-abcde:{SECRET}"
    basic = "Basic " + base64.urlsafe_b64encode(value.encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {value}"},
        {"Authorization": basic},
        {"Cookie": f"R_SESS={value}"},
    ):
        assert (await auth.authenticate_headers(headers, cluster="")).user.name == "u-alice"
    with pytest.raises(AuthenticationError):
        await auth.authenticate_headers(
            {"Authorization": "Bearer x:y", "Cookie": f"R_SESS={value}"}, cluster=""
        )


async def test_visibility_follows_bindings_and_groups() -> None:
    state = _state()
    crtb = {
        "metadata": {"name": "crtb-1", "namespace": "c-one", "resourceVersion": "1"},
        "clusterName": "c-one",
        "groupPrincipalName": "local://devs",
        "roleTemplateName": "cluster-owner",
    }
    prtb = {
        "metadata": {"name": "prtb-1", "namespace": "c-two-p-x", "resourceVersion": "1"},
        "projectName": "c-two:p-x",
        "userName": "u-alice",
        "roleTemplateName": "project-member",
    }
    await state.crtbs.observe(crtb)
    await state.prtbs.observe(prtb)
    access = Access(state)
    auth = TokenAuthenticator(state)
    alice = auth.user_info(_user())
    assert access.visible_clusters(alice) == {"c-two"}
    member = type(alice)(name="u-bob", groups=("devs", *AUTHENTICATED_GROUPS))
    assert access.visible_clusters(member) == {"c-one"}
    assert access.owns_cluster(member, "c-one")
    assert not access.owns_cluster(alice, "c-two")
    assert access.can_see_project(alice, "c-two:p-x")
    assert not access.owns_project(alice, "c-two:p-x")
    assert access.can_see_project(member, "c-one:p-any")
    await state.globalrolebindings.observe(
        {"metadata": {"name": "grb", "resourceVersion": "1"}, "userName": "u-root", "globalRoleName": "admin"}
    )
    assert access.visible_clusters(type(alice)(name="u-root")) is None


async def test_remembered_visibility_follows_every_binding_change() -> None:
    state = _state()
    access = Access(state)
    bob = UserInfo(name="u-bob", groups=("devs", *AUTHENTICATED_GROUPS))
    crtb = {
        "metadata": {"name": "crtb-1", "namespace": "c-one", "resourceVersion": "1"},
        "clusterName": "c-one",
        "groupPrincipalName": "local://devs",
        "roleTemplateName": "cluster-member",
    }
    assert access.visible_clusters(bob) == set()
    await state.crtbs.observe(crtb)
    assert access.visible_clusters(bob) == {"c-one"}
    assert access.visible_clusters(UserInfo(name="u-bob", groups=AUTHENTICATED_GROUPS)) == set()
    await state.prtbs.observe(
        {
            "metadata": {"name": "prtb-1", "namespace": "c-two-p-x", "resourceVersion": "1"},
            "projectName": "c-two:p-x",
            "userName": "u-bob",
            "roleTemplateName": "project-member",
        }
    )
    assert access.visible_clusters(bob) == {"c-one", "c-two"}
    await state.crtbs.forget(
        "c-one/crtb-1", deleted={**crtb, "metadata": {**crtb["metadata"], "resourceVersion": "2"}}
    )
    assert access.visible_clusters(bob) == {"c-two"}
    await state.globalrolebindings.observe(
        {"metadata": {"name": "grb", "resourceVersion": "1"}, "userName": "u-bob", "globalRoleName": "admin"}
    )
    assert access.visible_clusters(bob) is None


def test_certificates_are_folded_as_rancher_folds_them() -> None:
    data = "A" * 200
    folded = format_cert_string(data)
    lines = folded.split("\\\n      ")
    assert [len(line) for line in lines] == [49, 76, 75]
    assert "".join(lines) == data
    assert format_cert_string("short") == "short"


def test_the_kubeconfig_text_is_rancher_template() -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    text = token_kubeconfig(
        cluster_name="prod",
        cluster_id="c-abcde",
        host="r.example:8443",
        token="kubeconfig-u-x12345:s",
        cacerts=ca,
    )
    config = yaml.safe_load(text)
    assert config["clusters"] == [
        {
            "name": "prod",
            "cluster": {
                "server": "https://r.example:8443/k8s/clusters/c-abcde",
                "certificate-authority-data": format_cert_string(
                    base64.b64encode(ca.encode()).decode()
                ).replace("\\\n      ", ""),
            },
        }
    ]
    assert config["users"] == [{"name": "prod", "user": {"token": "kubeconfig-u-x12345:s"}}]
    assert config["contexts"] == [{"name": "prod", "context": {"user": "prod", "cluster": "prod"}}]
    assert config["current-context"] == "prod"
    assert '    token: "kubeconfig-u-x12345:s"\n\n\ncontexts:' in text
    no_ca = token_kubeconfig(cluster_name="", cluster_id="c-abcde", host="h", token="t", cacerts="")
    assert "certificate-authority-data" not in no_ca
    assert yaml.safe_load(no_ca)["current-context"] == "c-abcde"


def test_kubeconfig_host_prefers_the_server_url_setting() -> None:
    assert kubeconfig_host("https://rancher.example:8443", "10.0.0.1:443") == "rancher.example:8443"
    assert kubeconfig_host("", "10.0.0.1:443") == "10.0.0.1:443"


def test_a_token_view_never_carries_the_hash_and_names_its_principal() -> None:
    token = _token(userPrincipal={"metadata": {"name": "local://u-alice"}}, clusterName="c-one", ttl=60_000)
    shown = view(
        "tokens", token, base_url="https://h", can_update=True, can_delete=True, current_token="token-abcde"
    )
    assert "token" not in shown
    assert shown["id"] == shown["name"] == "token-abcde"
    assert shown["userPrincipal"] == "local://u-alice"
    assert shown["clusterId"] == "c-one"
    assert shown["current"] is True
    assert shown["expiresAt"] == (NOW + timedelta(seconds=0)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert shown["links"] == {
        "self": "https://h/v3/tokens/token-abcde",
        "update": "https://h/v3/tokens/token-abcde",
        "remove": "https://h/v3/tokens/token-abcde",
    }


def test_a_namespaced_view_has_the_colon_id_and_reference_ids() -> None:
    crtb = {
        "metadata": {"name": "crtb-1", "namespace": "c-one"},
        "clusterName": "c-one",
        "userName": "u-alice",
        "roleTemplateName": "cluster-member",
    }
    shown = view("clusterroletemplatebindings", crtb, base_url="https://h")
    assert shown["id"] == "c-one:crtb-1"
    assert (shown["clusterId"], shown["userId"], shown["roleTemplateId"]) == (
        "c-one",
        "u-alice",
        "cluster-member",
    )
    assert shown["type"] == shown["baseType"] == "clusterRoleTemplateBinding"


async def test_a_remembered_token_is_checked_again_when_its_objects_or_the_clock_change() -> None:
    clock = [NOW]
    state = _state()
    await state.informers["tokens"].observe(_token(ttl=120_000))
    await state.informers["users"].observe(_user())
    auth = TokenAuthenticator(state, now=lambda: clock[0], track_last_used=False)
    first = await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    again = await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    assert again.user is first.user  # remembered: the same identity, built once
    with pytest.raises(AuthenticationError, match="invalid token"):
        await auth.authenticate_value(f"token-abcde:{'c' * 54}", cluster="")
    scoped = _token(ttl=120_000, clusterName="c-one")
    scoped["metadata"]["resourceVersion"] = "2"
    await state.informers["tokens"].observe(scoped)
    await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="c-one")
    with pytest.raises(AuthenticationError, match="clusterID"):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="c-two")  # remembered, other cluster
    disabled = _token(ttl=120_000, enabled=False)
    disabled["metadata"]["resourceVersion"] = "3"
    await state.informers["tokens"].observe(disabled)
    with pytest.raises(AuthenticationError, match="not enabled"):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    enabled = _token(ttl=120_000)
    enabled["metadata"]["resourceVersion"] = "4"
    await state.informers["tokens"].observe(enabled)
    await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    clock[0] = NOW + timedelta(minutes=2)
    with pytest.raises(AuthenticationError, match="expired"):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    disabled_user = _user(enabled=False)
    disabled_user["metadata"]["resourceVersion"] = "2"
    clock[0] = NOW
    await state.informers["users"].observe(disabled_user)
    with pytest.raises(AuthenticationError, match="user is not enabled"):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")


def _setting(name: str, value: str, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}, "value": value, "default": ""}


async def test_a_session_idles_out_after_its_last_recorded_activity_as_rancher_counts() -> None:
    clock = [NOW]
    state = _state()
    seen = NOW - timedelta(minutes=10)
    await state.informers["tokens"].observe(_token(activityLastSeenAt=seen.strftime("%Y-%m-%dT%H:%M:%SZ")))
    await state.informers["tokens"].observe(_token("token-fresh"))  # no activity recorded: never idles
    await state.informers["users"].observe(_user())
    await state.informers["settings"].observe(_setting("auth-user-session-idle-ttl-minutes", "10"))
    auth = TokenAuthenticator(state, now=lambda: clock[0], track_last_used=False)
    # Exactly at last activity + TTL the session still works (Go: now.After(deadline)), once past it not.
    await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    clock[0] = NOW + timedelta(seconds=1)
    with pytest.raises(AuthenticationError, match="idle"):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    await auth.authenticate_value(f"token-fresh:{SECRET}", cluster="")
    # The setting is read on every request; 0 turns the check off.
    await state.informers["settings"].observe(_setting("auth-user-session-idle-ttl-minutes", "0", "2"))
    await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    await state.informers["settings"].observe(_setting("auth-user-session-idle-ttl-minutes", "11", "3"))
    await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    clock[0] = NOW + timedelta(minutes=1, seconds=1)
    with pytest.raises(AuthenticationError, match="idle"):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")


class _RecordingUpstream(_NoUpstream):
    def __init__(self, config: KubeConfig) -> None:
        super().__init__(config)
        self.patches: list[tuple[str, Any]] = []

    async def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        self.patches.append((path, body))
        return {}


async def test_last_used_is_written_at_most_once_per_second_and_not_in_the_second_it_shows() -> None:
    clock = [NOW + timedelta(microseconds=100)]
    upstream = _RecordingUpstream(KubeConfig(server="https://127.0.0.1:1", token="unused"))
    state = ServerState(upstream)
    await state.informers["tokens"].observe(_token())
    await state.informers["tokens"].observe(_token("token-seen", lastUsedAt="2026-03-01T12:00:01Z"))
    await state.informers["users"].observe(_user())
    auth = TokenAuthenticator(state, now=lambda: clock[0])
    for step in range(5):  # five requests within one second
        clock[0] = NOW + timedelta(milliseconds=100 * step)
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
    clock[0] = NOW + timedelta(seconds=1, milliseconds=500)
    for _ in range(3):
        await auth.authenticate_value(f"token-abcde:{SECRET}", cluster="")
        await auth.authenticate_value(f"token-seen:{SECRET}", cluster="")  # its lastUsedAt is this second
    await auth.drain()
    assert [(path.rsplit("/", 1)[1], body["lastUsedAt"]) for path, body in upstream.patches] == [
        ("token-abcde", "2026-03-01T12:00:00Z"),
        ("token-abcde", "2026-03-01T12:00:01Z"),
    ]

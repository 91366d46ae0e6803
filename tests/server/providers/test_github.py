"""The GitHub provider against a local stand-in of GitHub's API: login, groups, search, limits, outages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral.server.providers import (
    AccessDeniedError,
    GithubConfig,
    LoginInputError,
    LoginRefusedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    UpstreamStatusError,
    parse_auth_config,
    refresh_groups,
)
from corral.server.providers.github import GithubProvider
from tests.server.providers.github_standin import CLIENT_ID, CLIENT_SECRET, StandIn, seeded, serving

ORGS = {"github_org://100", "github_org://200"}
TEAMS = {"github_team://1001", "github_team://1002", "github_team://2001"}


@pytest.fixture
async def standin() -> AsyncIterator[tuple[StandIn, str]]:
    state = seeded()
    async with serving(state) as host:
        yield state, host


def config(host: str, **overrides: Any) -> GithubConfig:
    parsed = parse_auth_config(
        {
            "type": "githubConfig",
            "hostname": host,
            "tls": False,
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            **overrides,
        }
    )
    assert isinstance(parsed, GithubConfig)
    return parsed


@pytest.fixture
async def provider(standin: tuple[StandIn, str]) -> AsyncIterator[GithubProvider]:
    github = GithubProvider(config(standin[1]), timeout=2.0)
    yield github
    await github.aclose()


async def test_login_maps_to_user_org_and_team_principals_across_pages(
    standin: tuple[StandIn, str], provider: GithubProvider
) -> None:
    state, _ = standin
    result = await provider.login({"code": state.issue_code(1)})
    assert result.user.id == "github_user://1"
    assert (result.user.login_name, result.user.display_name, result.user.me) == (
        "octocat",
        "The Octocat",
        True,
    )
    assert set(result.group_ids) == ORGS | TEAMS
    teams = {g.id: g for g in result.groups if g.id.startswith("github_team://")}
    assert teams["github_team://1001"].login_name == "platform"
    assert all(g.principal_type == "group" and g.member_of for g in result.groups)
    assert state.requests.count("/api/v3/user/teams") == 2  # three teams, two per page: the Link was followed
    assert result.provider_secret in state.tokens
    assert set(state.authorizations) == {"token"}


async def test_a_bad_or_reused_code_is_refused(
    standin: tuple[StandIn, str], provider: GithubProvider
) -> None:
    state, _ = standin
    code = state.issue_code(1)
    await provider.login({"code": code})
    with pytest.raises(LoginRefusedError, match="bad_verification_code"):
        await provider.login({"code": code})
    with pytest.raises(LoginInputError, match="code"):
        await provider.login({})


async def test_a_wrong_client_secret_is_refused_and_not_echoed(standin: tuple[StandIn, str]) -> None:
    state, host = standin
    github = GithubProvider(config(host, clientSecret="wrong-secret-value"))
    try:
        with pytest.raises(LoginRefusedError) as caught:
            await github.login({"code": state.issue_code(1)})
    finally:
        await github.aclose()
    assert "wrong-secret-value" not in str(caught.value)


async def test_restricted_access_admits_members_of_an_allowed_team(standin: tuple[StandIn, str]) -> None:
    state, host = standin
    github = GithubProvider(config(host, accessMode="required", allowedPrincipalIds=["github_team://2001"]))
    try:
        assert (await github.login({"code": state.issue_code(1)})).user.id == "github_user://1"
        with pytest.raises(AccessDeniedError):
            await github.login({"code": state.issue_code(2)})
        tested = await github.test_config({"code": state.issue_code(2)})
        assert tested.user.id == "github_user://2"
    finally:
        await github.aclose()


async def test_refresh_sees_a_team_removal(standin: tuple[StandIn, str], provider: GithubProvider) -> None:
    state, _ = standin
    result = await provider.login({"code": state.issue_code(1)})
    state.users[1].teams.discard(1002)
    state.users[1].orgs.discard(200)
    refreshed = await refresh_groups(provider, result.user.id, secret=result.provider_secret)
    assert set(refreshed.group_ids) == {"github_org://100", "github_team://1001", "github_team://2001"}


async def test_search_users_orgs_and_teams(standin: tuple[StandIn, str], provider: GithubProvider) -> None:
    state, _ = standin
    token = (await provider.login({"code": state.issue_code(1)})).provider_secret
    assert [p.id for p in await provider.search_principals("octo", "user", secret=token)] == [
        "github_user://1"
    ]
    groups = await provider.search_principals("r", "group", secret=token)
    assert {p.id for p in groups} >= {"github_org://100", "github_org://200"}
    teams = await provider.search_principals("plat", secret=token)
    assert "github_team://1001" in {p.id for p in teams}


@pytest.mark.parametrize("status", [403, 429])
async def test_rate_limits_are_typed_with_the_wait(
    standin: tuple[StandIn, str], provider: GithubProvider, status: int
) -> None:
    state, _ = standin
    code = state.issue_code(1)
    state.rate_limit = status
    with pytest.raises(RateLimitedError) as caught:
        await provider.login({"code": code})
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= state.retry_after


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_typed(
    standin: tuple[StandIn, str], provider: GithubProvider, status: int
) -> None:
    state, _ = standin
    state.fail_status = status
    with pytest.raises(UpstreamStatusError) as caught:
        await provider.login({"code": state.issue_code(1)})
    assert caught.value.upstream_status == status


async def test_a_slow_github_times_out(standin: tuple[StandIn, str]) -> None:
    state, host = standin
    state.latency = 5.0
    github = GithubProvider(config(host), timeout=0.5)
    try:
        with pytest.raises(ProviderTimeoutError):
            await github.login({"code": state.issue_code(1)})
    finally:
        await github.aclose()


async def test_github_down_is_a_clear_error() -> None:
    state = StandIn()
    async with serving(state) as host:
        pass  # the port is free again
    github = GithubProvider(config(host))
    try:
        with pytest.raises(ProviderUnavailableError) as caught:
            await github.login({"code": "x"})
    finally:
        await github.aclose()
    assert not isinstance(caught.value, ProviderTimeoutError | UpstreamStatusError)


async def test_secrets_are_not_logged(
    standin: tuple[StandIn, str], provider: GithubProvider, caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = standin
    caplog.set_level(logging.DEBUG)
    code = state.issue_code(1)
    result = await provider.login({"code": code})
    state.fail_status = 502
    with pytest.raises(UpstreamStatusError):
        await provider.refresh(result.user.id, secret=result.provider_secret)
    for secret in (code, result.provider_secret, CLIENT_SECRET):
        assert secret not in caplog.text
    assert result.provider_secret not in repr(result)
    assert CLIENT_SECRET not in repr(provider.config)


def test_default_urls_are_githubs() -> None:
    github = parse_auth_config({"type": "githubConfig", "clientId": "a", "clientSecret": "b"})
    assert isinstance(github, GithubConfig)
    assert github.api_url == "https://api.github.com"
    assert github.login_url == "https://github.com/login/oauth/access_token"
    enterprise = parse_auth_config(
        {"type": "githubConfig", "hostname": "ghe.example.com", "clientId": "a", "clientSecret": "b"}
    )
    assert isinstance(enterprise, GithubConfig)
    assert enterprise.api_url == "https://ghe.example.com/api/v3"

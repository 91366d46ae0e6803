"""A small local server that answers like GitHub's OAuth endpoint and REST API, for the GitHub provider.

It serves GitHub Enterprise's layout (``/login/oauth/access_token`` and ``/api/v3/...``), paginates with
``Link`` headers, and can be made slow (``latency``), rate limited (403 or 429 with
``X-RateLimit-Remaining: 0`` and ``Retry-After``/``X-RateLimit-Reset``) or broken (``fail_status``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CLIENT_ID = "corral-client"
CLIENT_SECRET = "client-secret-" + secrets.token_hex(6)


@dataclass
class Org:
    id: int
    login: str
    teams: dict[int, str] = field(default_factory=dict)  # team id -> team name


@dataclass
class User:
    id: int
    login: str
    name: str
    orgs: set[int] = field(default_factory=set)
    teams: set[int] = field(default_factory=set)


@dataclass
class StandIn:
    """State and knobs of the stand-in; tests change them between requests."""

    users: dict[int, User] = field(default_factory=dict)
    orgs: dict[int, Org] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)  # OAuth code -> user id (one use each)
    tokens: dict[str, int] = field(default_factory=dict)  # access token -> user id
    per_page: int = 2
    latency: float = 0.0
    rate_limit: int | None = None  # 403 or 429
    retry_after: int = 30
    fail_status: int | None = None
    requests: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    def issue_code(self, user_id: int) -> str:
        code = secrets.token_hex(10)
        self.codes[code] = user_id
        return code

    def team_json(self, org: Org, team_id: int) -> dict[str, Any]:
        name = org.teams[team_id]
        return {
            "id": team_id,
            "name": name,
            "slug": name.lower().replace(" ", "-"),
            "organization": {"login": org.login, "id": org.id, "avatar_url": f"https://avatars/{org.id}"},
        }


def _page(request: web.Request, items: list[Any], state: StandIn) -> web.Response:
    page = int(request.query.get("page", "1"))
    per_page = min(int(request.query.get("per_page", "30")), state.per_page)
    chunk = items[(page - 1) * per_page : page * per_page]
    response = web.json_response(chunk)
    if page * per_page < len(items):
        url = request.url.update_query(page=str(page + 1))
        response.headers["Link"] = f'<{url}>; rel="next", <{request.url.update_query(page="1")}>; rel="first"'
    return response


def build_app(state: StandIn) -> web.Application:
    @web.middleware
    async def knobs(request: web.Request, handler: Any) -> web.StreamResponse:
        state.requests.append(request.path)
        if state.latency:
            await asyncio.sleep(state.latency)
        if state.rate_limit is not None:
            headers = {
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + state.retry_after),
            }
            if state.rate_limit == 429:
                headers["Retry-After"] = str(state.retry_after)
            return web.json_response(
                {"message": "API rate limit exceeded"}, status=state.rate_limit, headers=headers
            )
        if state.fail_status is not None:
            return web.json_response({"message": "Server Error"}, status=state.fail_status)
        result: web.StreamResponse = await handler(request)
        return result

    def user_of(request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        state.authorizations.append(header.split(" ", 1)[0])
        token = header.removeprefix("token ").removeprefix("Bearer ")
        if token not in state.tokens:
            raise web.HTTPUnauthorized(text='{"message":"Bad credentials"}', content_type="application/json")
        return state.users[state.tokens[token]]

    async def access_token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "incorrect_client_credentials"})
        user_id = state.codes.pop(str(form.get("code", "")), None)
        if user_id is None:
            return web.json_response(
                {"error": "bad_verification_code", "error_description": "The code is wrong."}
            )
        token = "gho_" + secrets.token_hex(12)
        state.tokens[token] = user_id
        return web.json_response({"access_token": token, "token_type": "bearer", "scope": "read:org"})

    async def get_user(request: web.Request) -> web.Response:
        user = user_of(request)
        return web.json_response({"id": user.id, "login": user.login, "name": user.name, "type": "User"})

    async def user_orgs(request: web.Request) -> web.Response:
        user = user_of(request)
        orgs = [{"id": o.id, "login": o.login} for o in state.orgs.values() if o.id in user.orgs]
        return _page(request, orgs, state)

    async def user_teams(request: web.Request) -> web.Response:
        user = user_of(request)
        teams = [state.team_json(o, t) for o in state.orgs.values() for t in o.teams if t in user.teams]
        return _page(request, teams, state)

    async def org_teams(request: web.Request) -> web.Response:
        user_of(request)
        org = next((o for o in state.orgs.values() if o.login == request.match_info["org"]), None)
        if org is None:
            raise web.HTTPNotFound()
        return _page(request, [state.team_json(org, t) for t in org.teams], state)

    async def search_users(request: web.Request) -> web.Response:
        user_of(request)
        term, _, kind = request.query.get("q", "").partition(" type:")
        items: list[dict[str, Any]] = []
        if kind in ("", "user"):
            items += [
                {"id": u.id, "login": u.login, "type": "User"}
                for u in state.users.values()
                if term in u.login
            ]
        if kind in ("", "org"):
            items += [
                {"id": o.id, "login": o.login, "type": "Organization"}
                for o in state.orgs.values()
                if term in o.login
            ]
        return web.json_response({"total_count": len(items), "items": items})

    app = web.Application(middlewares=[knobs])
    app.router.add_post("/login/oauth/access_token", access_token)
    app.router.add_get("/api/v3/user", get_user)
    app.router.add_get("/api/v3/user/orgs", user_orgs)
    app.router.add_get("/api/v3/user/teams", user_teams)
    app.router.add_get("/api/v3/orgs/{org}/teams", org_teams)
    app.router.add_get("/api/v3/search/users", search_users)
    return app


@asynccontextmanager
async def serving(state: StandIn) -> AsyncIterator[str]:
    """Serve the stand-in on 127.0.0.1 with a free port; yields ``host:port`` (the config's hostname)."""
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def seeded() -> StandIn:
    """Two orgs with teams; ``octocat`` is in both orgs and three teams (more than one page of each)."""
    state = StandIn()
    state.orgs = {
        100: Org(100, "rancher", {1001: "Platform", 1002: "Security"}),
        200: Org(200, "corral", {2001: "Maintainers"}),
        300: Org(300, "outsiders", {3001: "Others"}),
    }
    state.users = {
        1: User(1, "octocat", "The Octocat", orgs={100, 200}, teams={1001, 1002, 2001}),
        2: User(2, "hubot", "", orgs={300}, teams={3001}),
    }
    return state

"""Properties: whatever headers a client sends, the cluster sees exactly the proxy's identity headers."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.server.proxy_headers import downstream_headers, impersonation_headers
from tests.server._harness import ALICE, ALICE_TOKEN, world

BASES = [
    "Impersonate-User",
    "Impersonate-Group",
    "Impersonate-Uid",
    "Impersonate-Extra-Principalid",
    "Impersonate-Extra-Username",
    "Impersonate-Extra-Requesthost",
    "Impersonate-Extra-%70rincipalid",
    "Impersonate-Extra-Scopes",
    "Impersonate-Extra-",
    "Authorization",
    "Proxy-Authorization",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Accept",
    "X-Custom",
    "Cookie",
]


@st.composite
def header_name(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(BASES) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True))
    chars = [c.upper() if draw(st.booleans()) else c.lower() for c in base]
    name = "".join(chars)
    return name.replace("-", "_") if draw(st.integers(0, 9)) == 0 else name


VALUES = st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True)


@st.composite
def header_sets(draw: st.DrawFn) -> list[tuple[str, str]]:
    headers = draw(st.lists(st.tuples(header_name(), VALUES), max_size=12))
    named = draw(st.lists(st.sampled_from(BASES) | header_name(), max_size=5))
    if named:
        headers.append(("Connection", ", ".join(named)))
    return draw(st.permutations(headers))


def identity(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (n, v)
        for n, v in headers
        if n.lower() in ("authorization", "proxy-authorization")
        or n.strip().lower().replace("_", "-").startswith("impersonate")
    ]


@given(header_sets())
@settings(max_examples=300)
def test_downstream_identity_headers_are_exactly_the_proxy_s(headers):
    out = downstream_headers(headers, token="sa-token", identity=ALICE, client_address="10.0.0.1")
    assert identity(out) == [("Authorization", "Bearer sa-token"), *impersonation_headers(ALICE)]


@given(header_sets())
@settings(max_examples=200)
def test_a_service_account_token_goes_alone(headers):
    out = downstream_headers(headers, token="sa-token", identity=None)
    assert identity(out) == [("Authorization", "Bearer sa-token")]


class _Background:
    """A proxy world on its own event loop thread, so synchronous hypothesis examples can use it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self.future = asyncio.run_coroutine_threadsafe(self._run(), self.loop)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async with world() as w, aiohttp.ClientSession() as http:
            self.world, self.http = w, http
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        if not self._ready.wait(30):
            raise AssertionError("the proxy world did not start")

    def call(self, headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]] | None]:
        async def go() -> tuple[int, list[tuple[str, str]] | None]:
            before = len(self.world.downstream.requests)
            url = f"{self.world.url}/k8s/clusters/c-1/api/v1/pods"
            async with self.http.get(url, headers=headers) as r:
                await r.read()
            seen = self.world.downstream.requests[before:]
            return r.status, (seen[0].headers if seen else None)

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.future.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def background():
    bg = _Background()
    bg.start()
    yield bg
    bg.stop()


SAFE_FOR_HTTP = st.lists(
    st.tuples(header_name(), VALUES).filter(
        lambda h: (
            h[0].lower()
            # aiohttp's client folds a second spelling of Authorization into the first (the pure test has it)
            not in (
                "authorization",
                "connection",
                "host",
                "content-length",
                "transfer-encoding",
                "expect",
                "upgrade",
            )
            and not h[0].lower().startswith("te")
        )
    ),
    max_size=10,
).filter(lambda hs: len({n.lower() for n, _ in hs}) == len({n for n, _ in hs}))  # one spelling per name


@given(headers=SAFE_FOR_HTTP, named=st.lists(st.sampled_from(BASES), max_size=4))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_through_http_the_cluster_sees_only_the_proxy_s_identity(background, headers, named):
    sent = [("Authorization", f"Bearer {ALICE_TOKEN}"), *headers]
    if named:
        sent.append(("Connection", ", ".join(n for n in named if n.lower() != "connection") or "close"))
    status, seen = background.call(sent)
    first_user = next((v for n, v in headers if n.lower() == "impersonate-user"), "u-alice")
    if first_user != "u-alice":  # a request to be someone else, and the reviewer grants nothing
        assert (status, seen) == (403, None)
        return
    assert status == 200
    assert seen is not None
    host = background.world.url.removeprefix("http://")
    user = replace(ALICE, extras={**ALICE.extras, "requesttokenid": ("token-alice",), "requesthost": (host,)})
    assert identity(seen) == [("Authorization", "Bearer sa-token-u-alice"), *impersonation_headers(user)]

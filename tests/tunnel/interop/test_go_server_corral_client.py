"""Go remotedialer server dialing through corral's tunnel client to an HTTP server on the agent's side.

rd-server's reverse proxy sends any method, streaming bodies, through the session of a client key;
corral's client answers Connect frames, dials 127.0.0.1 and pipes, as remotedialer's client does.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest

from corral.errors import TunnelError

from ._corral_peers import corral_client
from ._target import body_sha256, payload_sha256, payload_stream
from .conftest import GoBinaries, GoServer, start_go_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

KEY = "corral-agent"
BIG = 50 * 1024 * 1024
ECHO_BYTES = 1024 * 1024
"""An echo streams both ways on one connection at once. remotedialer v0.6.1 keeps ONE paused flag
per connection for both directions (back_pressure.go): a side that pauses its peer also blocks its
own writes, so a full-duplex stream larger than its 2 MiB MaxBuffer can deadlock Go against Go
too. Echoes stay below that; the 50 MB bodies go one way at a time."""


async def test_go_server_sends_every_method_through_corral_client(
    go_server: GoServer, http_target: str
) -> None:
    async with corral_client(go_server.connect_url, KEY), aiohttp.ClientSession() as http:
        await go_server.wait_for_clients({KEY})
        async with http.get(go_server.proxy_url(KEY, http_target, "hello?n=1")) as resp:
            assert (resp.status, await resp.text()) == (200, "hello 1")
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            url = go_server.proxy_url(KEY, http_target, "sha256")
            async with http.request(method, url, data=b"x" * 1000) as resp:
                assert resp.status == 200
                assert await resp.json() == {
                    "sha256": hashlib.sha256(b"x" * 1000).hexdigest(),
                    "size": 1000,
                    "method": method,
                }


async def test_fifty_megabyte_bodies_stream_both_ways_through_corral_client(
    go_server: GoServer, http_target: str
) -> None:
    async with corral_client(go_server.connect_url, KEY), aiohttp.ClientSession() as http:
        await go_server.wait_for_clients({KEY})
        async with http.get(go_server.proxy_url(KEY, http_target, f"bytes?size={BIG}&seed=1")) as resp:
            assert resp.status == 200
            assert await body_sha256(resp) == (payload_sha256(BIG, 1), BIG)
        async with http.post(
            go_server.proxy_url(KEY, http_target, "sha256"), data=payload_stream(BIG, 2)
        ) as resp:
            assert await resp.json() == {"sha256": payload_sha256(BIG, 2), "size": BIG, "method": "POST"}
        # Full duplex, kept under remotedialer's 2 MiB MaxBuffer: see ECHO_BYTES.
        async with http.post(
            go_server.proxy_url(KEY, http_target, "echo"), data=payload_stream(ECHO_BYTES, 3)
        ) as resp:
            assert await body_sha256(resp) == (payload_sha256(ECHO_BYTES, 3), ECHO_BYTES)


async def test_hundred_concurrent_requests_through_corral_client_each_get_their_own_body(
    go_server: GoServer, http_target: str
) -> None:
    size = 64 * 1024 + 3
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with corral_client(go_server.connect_url, KEY), aiohttp.ClientSession(connector=connector) as http:
        await go_server.wait_for_clients({KEY})

        async def fetch(seed: int) -> tuple[str, int]:
            async with http.get(
                go_server.proxy_url(KEY, http_target, f"bytes?size={size}&seed={seed}")
            ) as resp:
                assert resp.status == 200
                return await body_sha256(resp)

        async with asyncio.timeout(120):
            results = await asyncio.gather(*(fetch(seed) for seed in range(100)))
    assert results == [(payload_sha256(size, seed), size) for seed in range(100)]


async def test_a_failed_local_dial_gives_the_go_proxy_an_error_and_the_session_lives_on(
    go_server: GoServer, http_target: str, unused_tcp_port: int
) -> None:
    async with corral_client(go_server.connect_url, KEY), aiohttp.ClientSession() as http:
        await go_server.wait_for_clients({KEY})
        async with http.get(go_server.proxy_url(KEY, f"127.0.0.1:{unused_tcp_port}", "x")) as resp:
            assert resp.status == 502
        async with http.get(go_server.proxy_url(KEY, http_target, "hello")) as resp:
            assert (resp.status, await resp.text()) == (200, "hello")
        assert await go_server.clients() == [KEY]


async def test_a_connect_the_corral_authorizer_refuses_ends_the_whole_session_like_remotedialer(
    go_server: GoServer, http_target: str
) -> None:
    def only_the_target(proto: str, address: str) -> bool:
        return proto == "tcp" and address == http_target

    async with (
        corral_client(go_server.connect_url, KEY, connect_authorizer=only_the_target) as client,
        aiohttp.ClientSession() as http,
    ):
        await go_server.wait_for_clients({KEY})
        async with http.get(go_server.proxy_url(KEY, "127.0.0.1:1", "x")) as resp:
            assert resp.status in (502, 503)
        outcome = await client.outcome()
        assert isinstance(outcome, str), outcome
        assert outcome.startswith("connect not allowed: tcp/127.0.0.1:1")
        await go_server.wait_for_clients(set())


async def test_go_server_forgets_a_corral_client_that_closes_cleanly(go_server: GoServer) -> None:
    async with corral_client(go_server.connect_url, KEY) as client:
        await go_server.wait_for_clients({KEY})
        await client.close()
        await go_server.wait_for_clients(set())


async def test_corral_client_ends_when_the_go_server_is_killed(go_server: GoServer) -> None:
    async with corral_client(go_server.connect_url, KEY) as client:
        await go_server.wait_for_clients({KEY})
        go_server.process.kill()
        outcome = await client.outcome(timeout_seconds=15)
        assert isinstance(outcome, str), outcome  # the reason the session ended, not a crash
        assert client.task.done()


async def test_corral_client_is_refused_with_401_by_a_go_server_that_does_not_know_its_key(
    go_binaries: GoBinaries,
) -> None:
    server = await start_go_server(go_binaries, "-allow", "someone-else")
    try:
        async with corral_client(server.connect_url, KEY) as client:
            outcome = await client.outcome()
        assert isinstance(outcome, TunnelError), outcome
        assert "401" in str(outcome)
        assert await server.clients() == []
    finally:
        await server.process.stop()

"""Keepalive and SyncConnections across the language boundary.

remotedialer's client pings every 5 s and both sides extend a read deadline on every ping or pong;
the client also lists its live connections every 60 s and the server closes the others. These
tests shorten corral's side of each timing (Go's are constants) and check the other side honours it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from corral.tunnel.clock import FakeClock
from corral.tunnel.dialer import open_connection
from corral.tunnel.message import MessageType, decode, decode_connection_ids
from corral.tunnel.session import Session
from corral.tunnel.settings import SessionSettings
from corral.tunnel.testing import wait_until
from corral.tunnel.websocket import WebSocketTransport

from ._corral_peers import corral_client, corral_server
from ._target import HOLD_RELEASE, payload_sha256, target_app
from .conftest import ClientStarter, GoServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

KEY = "keepalive-agent"


@pytest.fixture
async def held_target() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """The HTTP target plus the event that lets its ``/hold`` responses finish."""
    app = target_app()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"127.0.0.1:{server.port}", app[HOLD_RELEASE]
    finally:
        app[HOLD_RELEASE].set()
        await server.close()


async def test_go_server_keeps_a_live_connection_that_corral_lists_in_sync_connections(
    go_server: GoServer, held_target: tuple[str, asyncio.Event]
) -> None:
    target, release = held_target
    clock = FakeClock()  # syncs happen exactly when the test moves this clock
    # Pings and the read deadline run on the same virtual clock: keep them out of the way.
    settings = SessionSettings(
        clock=clock, sync_interval_seconds=60.0, ping_interval_seconds=3600.0, read_deadline_seconds=7200.0
    )
    syncs: list[list[int]] = []
    sent = asyncio.Event()
    sessions: list[Session] = []

    async def instrument(session: Session) -> None:
        """Note every SyncConnections written (the transport is the session's seam)."""
        sessions.append(session)
        send = session.transport.send

        async def send_and_record(frame: bytes) -> None:
            await send(frame)
            message = decode(frame)
            if message.type is MessageType.SYNC_CONNECTIONS:
                syncs.append(decode_connection_ids(message.payload))
                sent.set()

        session.transport.send = send_and_record  # type: ignore[method-assign]

    size = 256 * 1024
    async with (
        corral_client(go_server.connect_url, KEY, settings=settings, on_connect=instrument),
        aiohttp.ClientSession() as http,
    ):
        await go_server.wait_for_clients({KEY})
        async with http.get(go_server.proxy_url(KEY, target, f"hold?size={size}&seed=9")) as resp:
            first_half = await resp.content.readexactly(size // 2)
            for count in (1, 2, 3):
                await clock.advance(60.0)
                async with asyncio.timeout(10):
                    while len(syncs) < count:
                        sent.clear()
                        await sent.wait()
            # Each sync named the held connection, and only it.
            assert len(syncs) == 3
            assert len(syncs[0]) == 1
            assert syncs[0] == syncs[1] == syncs[2]
            # Go handles a sync in its read loop, concurrently with dials made by its HTTP handlers:
            # a sync still in flight when the server opens a connection kills that new connection
            # (remotedialer's own client has the same race). A ping written after the syncs is
            # answered only once Go's read loop got past them: wait for its pong before dialing.
            transport = sessions[0].transport
            assert isinstance(transport, WebSocketTransport)
            pongs = transport.pongs_received
            await transport.ping()
            await wait_until(lambda: transport.pongs_received > pongs, "Go's pong to our ping is read")
            async with http.get(go_server.proxy_url(KEY, target, "hello")) as hello:
                assert await hello.text() == "hello"
            release.set()
            rest = await resp.content.read()
    assert hashlib.sha256(first_half + rest).hexdigest() == payload_sha256(size, 9)


async def test_corral_client_lives_on_the_pongs_of_a_go_server(go_server: GoServer, http_target: str) -> None:
    # The Go server never pings: only its pongs to our pings can extend our 2 s read deadline.
    settings = SessionSettings(ping_interval_seconds=0.2, read_deadline_seconds=2.0)
    async with (
        corral_client(go_server.connect_url, KEY, settings=settings) as client,
        aiohttp.ClientSession() as http,
    ):
        await go_server.wait_for_clients({KEY})
        await asyncio.sleep(5.0)
        assert not client.task.done(), await client.outcome()
        async with http.get(go_server.proxy_url(KEY, http_target, "hello")) as resp:
            assert await resp.text() == "hello"


@pytest.mark.slow
async def test_corral_server_lives_on_the_pings_of_a_go_client(
    start_go_client: ClientStarter, http_target: str
) -> None:
    # rd-client pings every 5 s; an 8 s read deadline survives 16 s only if every ping counts.
    async with corral_server(settings=SessionSettings(read_deadline_seconds=8.0)) as server:
        client = await start_go_client(server.connect_url, "-id", KEY)
        await client.expect_line("connected ")
        await server.wait_for_session(KEY)
        await asyncio.sleep(16.0)
        assert server.disconnects == []
        assert client.proc.returncode is None
        host, port = http_target.split(":")
        reader, writer = await open_connection(server.manager, KEY, host, int(port))
        writer.write(f"GET /hello HTTP/1.1\r\nHost: {http_target}\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10):
            assert (await reader.read()).endswith(b"hello")
        writer.close()

"""The tunnel over real aiohttp websockets on 127.0.0.1: handshake, semantics, keepalive frames."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp import web

from corral.tunnel.manager import SessionManager
from corral.tunnel.testing import allow_all, check_tunnel_semantics, wait_until, websocket_session_pair
from corral.tunnel.websocket import HandshakeError, connect, tunnel_handler


async def test_a_loopback_websocket_pair_has_remotedialer_semantics():
    await check_tunnel_semantics(websocket_session_pair)


@pytest.fixture
async def tunnel_server():
    manager = SessionManager()
    seen_headers: list[dict[str, str]] = []

    async def authorize(request: web.Request) -> tuple[str, bool]:
        seen_headers.append(dict(request.headers))
        token = request.headers.get("X-API-Tunnel-Token", "")
        if token == "unknown":
            raise ValueError("cluster not found")
        return "c-1", token == "good"

    app = web.Application()
    app.router.add_get("/v3/connect", tunnel_handler(manager, authorize))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v3/connect"
    yield url, manager, seen_headers
    await runner.cleanup()


async def test_a_missing_token_is_refused_with_401_failed_authentication(tunnel_server):
    url, _, _ = tunnel_server
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 401
        assert await response.text() == "failed authentication"
    with pytest.raises(HandshakeError) as info:
        await connect(url, headers={}, connect_authorizer=allow_all)
    assert info.value.status == 401


async def test_an_authorizer_error_is_a_400_with_its_text(tunnel_server):
    url, _, _ = tunnel_server
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"X-API-Tunnel-Token": "unknown"}) as response,
    ):
        assert response.status == 400
        assert await response.text() == "cluster not found"


async def test_the_authorizer_sees_the_handshake_headers_and_the_session_is_registered(tunnel_server):
    url, manager, seen = tunnel_server
    headers = {"X-API-Tunnel-Token": "good", "X-API-Tunnel-Params": "e30=", "Authorization": "Bearer x"}
    connected = asyncio.Event()

    async def on_connect(session):
        connected.set()

    task = asyncio.ensure_future(
        connect(url, headers=headers, connect_authorizer=allow_all, on_connect=on_connect)
    )
    await asyncio.wait_for(connected.wait(), 10)
    await wait_until(lambda: manager.has_session("c-1"), "the server registers the session")
    assert seen[-1]["X-API-Tunnel-Params"] == "e30="
    assert seen[-1]["Authorization"] == "Bearer x"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await wait_until(lambda: not manager.has_session("c-1"), "a client that goes away is removed")


async def test_an_unreachable_server_is_a_tunnel_error_naming_the_url():
    from corral.errors import TunnelError

    with pytest.raises(TunnelError, match=re.escape("ws://127.0.0.1:9/v3/connect")):
        await connect("ws://127.0.0.1:9/v3/connect", connect_authorizer=allow_all)


async def test_a_text_message_on_the_websocket_ends_the_session(tunnel_server):
    url, manager, _ = tunnel_server
    closed = []
    manager.on_disconnect = lambda key, session: closed.append(session.close_reason)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"X-API-Tunnel-Token": "good"}) as ws,
    ):
        await ws.send_str("hello")
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert closed == ["wrong websocket message type"]
    assert not manager.has_session("c-1")


async def test_frames_from_a_raw_websocket_peer_reach_the_session_byte_for_byte(tunnel_server):
    from corral.tunnel import message as msg

    url, manager, _ = tunnel_server
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"X-API-Tunnel-Token": "good"}, autoping=False) as ws,
    ):
        await wait_until(lambda: manager.has_session("c-1"), "the server registers the session")
        conn = await manager.dial("c-1", "tcp", "10.43.0.1:443")
        connect = await asyncio.wait_for(ws.receive(), 10)
        assert connect.type is aiohttp.WSMsgType.BINARY
        assert (
            connect.data[-len(b"\x04\x04\xb0\xea\x01tcp/10.43.0.1:443") :]
            == b"\x04\x04\xb0\xea\x01tcp/10.43.0.1:443"
        )
        await ws.send_bytes(msg.encode(msg.data(conn.conn_id, b"from a hand-made frame")))
        assert await asyncio.wait_for(conn.read(), 10) == b"from a hand-made frame"
        await ws.send_bytes(msg.encode(msg.error(conn.conn_id, "EOF")))
        assert await asyncio.wait_for(conn.read(), 10) == b""

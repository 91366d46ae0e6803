"""The tunnel over real aiohttp websockets on 127.0.0.1: handshake, semantics, keepalive frames."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re

import aiohttp
import pytest
from aiohttp import web

from corral.tunnel.manager import SessionManager
from corral.tunnel.session import Session
from corral.tunnel.testing import allow_all, check_tunnel_semantics, wait_until, websocket_session_pair
from corral.tunnel.websocket import HandshakeError, WebSocketTransport, _Reader, connect, tunnel_handler

from .test_wsreader import frame


async def test_a_loopback_websocket_pair_has_remotedialer_semantics():
    await check_tunnel_semantics(websocket_session_pair)


async def test_both_sockets_hand_their_reads_to_the_frame_parser_and_aiohttp_still_sees_the_end():
    async with websocket_session_pair() as (server, client):

        def reads_directly(session: Session) -> bool:
            transport = session.transport
            assert isinstance(transport, WebSocketTransport)
            socket_transport = transport._socket_transport
            return socket_transport is not None and isinstance(socket_transport.get_protocol(), _Reader)

        await wait_until(lambda: reads_directly(server) and reads_directly(client), "both read directly")
        conn = await server.dial("mem", "echo")
        reader, writer = await conn.as_streams()
        writer.write(b"ping through the tunnel")
        assert await asyncio.wait_for(reader.readexactly(23), 10) == b"ping through the tunnel"
        client_ws = client.transport.ws  # type: ignore[attr-defined]
        client.transport.abort()  # the connection under the client's websocket is lost
        await asyncio.wait_for(server.wait_closed(), 10)
        assert server.close_reason == "websocket connection lost"
        await wait_until(lambda: client_ws.closed or client.closed, "the client sees the end too")


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


# -- the tunnel's own frame reader, driven by hand-made frames on a raw socket ------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


async def _raw_client(url: str, *, early: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket handshake by hand; ``early`` goes out in the same write as the request."""
    port = int(url.split(":")[2].split("/", maxsplit=1)[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /v3/connect HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        + key
        + b"\r\nX-API-Tunnel-Token: good\r\n\r\n"
        + early
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert _accept(key) in head
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next frame from a server (unmasked, unfragmented)."""
    first, second = await asyncio.wait_for(reader.readexactly(2), 10)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(size)


async def _until_close(reader: asyncio.StreamReader) -> bytes:
    while True:
        opcode, payload = await _read_frame(reader)
        if opcode == 0x8:
            return payload


def _disconnects(manager: SessionManager) -> list[str | None]:
    reasons: list[str | None] = []
    manager.on_disconnect = lambda key, session: reasons.append(session.close_reason)
    return reasons


async def test_frames_sent_with_the_upgrade_request_are_read_once_the_session_starts(tunnel_server):
    url, _, _ = tunnel_server
    reader, writer = await _raw_client(url, early=frame(0x9, b"early", masked=True))
    try:
        assert await _read_frame(reader) == (0xA, b"early")
    finally:
        writer.close()


async def test_an_unmasked_frame_from_a_client_ends_the_session_with_close_code_1002(tunnel_server):
    url, manager, _ = tunnel_server
    reasons = _disconnects(manager)
    reader, writer = await _raw_client(url)
    await wait_until(lambda: manager.has_session("c-1"), "the server registers the session")
    writer.write(frame(0x2, b"plain"))
    close = await _until_close(reader)
    writer.close()
    assert int.from_bytes(close[:2], "big") == 1002
    await wait_until(lambda: bool(reasons), "the session ends")
    assert reasons == ["websocket error: unmasked frame from a client"]


async def test_a_message_over_the_size_limit_ends_the_session_with_close_code_1009():
    manager = SessionManager()
    reasons = _disconnects(manager)

    async def authorize(request: web.Request) -> tuple[str, bool]:
        return "c-1", True

    app = web.Application()
    app.router.add_get("/v3/connect", tunnel_handler(manager, authorize, max_message_bytes=1000))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        reader, writer = await _raw_client(f"ws://127.0.0.1:{runner.addresses[0][1]}/v3/connect")
        writer.write(frame(0x2, b"x" * 2000, masked=True))
        close = await _until_close(reader)
        writer.close()
        assert int.from_bytes(close[:2], "big") == 1009
        await wait_until(lambda: bool(reasons), "the session ends")
        assert reasons == [
            "websocket error: websocket message of 2000 bytes or more exceeds the limit of 1000 bytes"
        ]
    finally:
        await runner.cleanup()


async def test_a_fragmented_data_message_with_a_ping_between_its_fragments_arrives_whole(tunnel_server):
    from corral.tunnel import message as msg

    url, manager, _ = tunnel_server
    reader, writer = await _raw_client(url)
    try:
        await wait_until(lambda: manager.has_session("c-1"), "the server registers the session")
        conn = await manager.dial("c-1", "tcp", "10.43.0.1:443")
        opcode, _ = await _read_frame(reader)  # the Connect
        assert opcode == 0x2
        whole = msg.encode(msg.data(conn.conn_id, b"in three fragments"))
        writer.write(
            frame(0x2, whole[:5], fin=False, masked=True)
            + frame(0x9, b"between", masked=True)
            + frame(0x0, whole[5:12], fin=False, masked=True)
            + frame(0x0, whole[12:], masked=True)
        )
        assert await _read_frame(reader) == (0xA, b"between")
        assert await asyncio.wait_for(conn.read(), 10) == b"in three fragments"
    finally:
        writer.close()


async def test_a_frame_the_server_sends_with_its_101_reaches_the_client_session():
    from corral.tunnel import message as msg

    asked: list[tuple[str, str]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        connect = frame(0x2, msg.encode(msg.connect(7, "tcp", "10.0.0.1:1")))
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + _accept(key) + b"\r\n\r\n" + connect
        )
        await reader.read(65536)  # the client's Close: end there, unanswered
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def refuse(proto: str, address: str) -> bool:
        asked.append((proto, address))
        return False

    try:
        reason = await asyncio.wait_for(
            connect(f"ws://127.0.0.1:{port}/v3/connect", connect_authorizer=refuse), 10
        )
    finally:
        server.close()
        await server.wait_closed()
    assert asked == [("tcp", "10.0.0.1:1")]
    assert reason == "connect not allowed: tcp/10.0.0.1:1"


async def test_a_client_that_asks_for_permessage_deflate_gets_plain_frames(tunnel_server):
    url, _, _ = tunnel_server
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers={"X-API-Tunnel-Token": "good"}, autoping=False, compress=15) as ws,
    ):
        assert ws.compress == 0
        await ws.ping(b"plain")
        message = await asyncio.wait_for(ws.receive(), 10)
        assert (message.type, message.data) == (aiohttp.WSMsgType.PONG, b"plain")

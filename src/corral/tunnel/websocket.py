"""Tunnel sessions over aiohttp websockets: the server's endpoint and the agent's connection.

Server side, `tunnel_handler(manager, authorizer)` is an aiohttp handler for ``/v3/connect``:
the authorizer sees the handshake (``X-API-Tunnel-Token``, ``X-API-Tunnel-Params``,
``X-Tunnel-ID``, ``Authorization``) and returns ``(client_key, ok)``; not ok answers 401
"failed authentication", an exception answers 400 with its text, as remotedialer's
DefaultErrorWriter. Client side, `connect` dials the server, runs a client session until it ends
and returns why; `TunnelClient` is the same as a handle one can close.

aiohttp does the handshake and the closing handshake's writing; then the tunnel takes the
connection's bytes where aiohttp's websocket reader would have had them (its protocol's payload
parser) and parses frames itself (`corral.tunnel.wsreader`), handing each message to the session
in the turn of the event loop it arrived in, and binary messages go out through the tunnel's own
encoder (`corral.tunnel.wsframe`). Pings and pongs are handled here, not by aiohttp, so the
session sees them and extends its read deadline exactly as remotedialer's ping/pong handlers do.
Where aiohttp's internals are not as expected, aiohttp keeps reading (`WebSocketTransport.receive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketWriter

from corral.errors import TunnelClosedError, TunnelError
from corral.tunnel.manager import SessionManager
from corral.tunnel.message import printable, utf8_prefix
from corral.tunnel.session import ConnectAuthorizer, Session
from corral.tunnel.settings import MIB, SessionSettings
from corral.tunnel.transport import Frame, FrameKind, FrameSink, LocalDialer, dial_local
from corral.tunnel.wsframe import HIGH_WATER_BYTES, FrameWriter
from corral.tunnel.wsreader import (
    CLOSE_NORMAL,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    FrameError,
    FrameParser,
    describe,
    parse_close,
)

__all__ = ["HandshakeError", "TunnelClient", "WebSocketTransport", "connect", "tunnel_handler"]

logger = logging.getLogger(__name__)

MAX_CLOSE_REASON_BYTES = 123
"""A close frame's reason: 125 payload bytes less the status code (RFC 6455, 5.5)."""
MAX_MESSAGE_BYTES = 16 * MIB
"""Largest websocket message accepted (remotedialer peers send Data of at most a write's size)."""
HANDSHAKE_TIMEOUT_SECONDS = 10.0
RELEASE_POLL_SECONDS = 0.02
"""How often a closing transport looks whether the connection under it is gone."""
FAILED_AUTHENTICATION = "failed authentication"
KEEP_UNREAD_BYTES = 256 * 1024
"""Bytes kept unparsed (before the session reads, or while it pauses) above which the socket stops reading."""
PONG_BACKLOG_BYTES = 4 * HIGH_WATER_BYTES
"""Outgoing bytes above which a ping is not answered: the peer does not read what we send."""
_NOT_DONE = (False, b"")

Authorizer = Callable[[web.Request], Awaitable[tuple[str, bool]]]
AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class HandshakeError(TunnelError):
    """The server refused the websocket upgrade (``status`` is its HTTP status)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Takeover:
    """Takes the place of aiohttp's websocket reader in the connection's protocol, right after the
    handshake: the bytes it is fed go to a `WebSocketTransport` (kept until one is attached)."""

    __slots__ = ("eof", "kept", "socket", "target")

    def __init__(self, socket_transport: asyncio.Transport, early: bytes) -> None:
        self.socket = socket_transport
        self.kept = bytearray(early)
        """What arrived after the handshake, before a transport was attached."""
        self.eof = False
        self.target: WebSocketTransport | None = None
        self._hold()

    def _hold(self) -> None:
        if len(self.kept) > KEEP_UNREAD_BYTES:
            with contextlib.suppress(RuntimeError, AttributeError, NotImplementedError):
                self.socket.pause_reading()

    # what aiohttp's protocol calls (its payload parser's interface)
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        target = self.target
        if target is not None:
            target._received(data)
        else:
            self.kept += data
            self._hold()
        return _NOT_DONE

    def feed_eof(self) -> None:
        if self.target is not None:
            self.target._lost()
        else:
            self.eof = True


class _Reader(asyncio.Protocol):
    """The socket's protocol once the session reads (`WebSocketTransport.start_reading`): what
    arrives goes straight to the frame parser, past aiohttp's protocol and `_Takeover`; the other
    events go to aiohttp's protocol, which still drains writes and learns of the end (and tells
    `_Takeover` of it)."""

    __slots__ = ("_inner", "_target")

    def __init__(self, target: WebSocketTransport, inner: asyncio.Protocol) -> None:
        self._target = target
        self._inner = inner

    def data_received(self, data: bytes) -> None:
        self._target._received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class TunnelWebSocketResponse(web.WebSocketResponse):
    """aiohttp's server websocket, whose frames the tunnel reads itself once the 101 is written."""

    takeover: _Takeover | None = None

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        handler = request.protocol
        tail = getattr(handler, "_message_tail", None)
        transport = request.transport
        if (
            not isinstance(tail, bytes)
            or not hasattr(handler, "_payload_parser")
            or transport is None
            or self._compress  # deflated frames
        ):
            super()._post_start(request, protocol, writer)  # aiohttp reads
            return
        handler._message_tail = b""  # what came after the handshake is ours, not aiohttp's reader's
        super()._post_start(request, protocol, writer)
        self.takeover = _Takeover(transport, tail)
        handler._payload_parser = self.takeover


class TunnelClientWebSocket(aiohttp.ClientWebSocketResponse):
    """aiohttp's client websocket, whose frames the tunnel reads itself (`take_over`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.takeover: _Takeover | None = None
        # built by ws_connect before it gives the connection to its own reader: what the server
        # sent after its 101 is still in the protocol's tail, and is ours
        conn = getattr(self, "_conn", None)
        protocol = getattr(conn, "protocol", None)
        tail = getattr(protocol, "_tail", None)
        transport = getattr(conn, "transport", None)
        deflated = bool(kwargs.get("compress"))  # then aiohttp reads
        parses = hasattr(protocol, "_payload_parser")
        if isinstance(tail, bytes) and transport is not None and parses and not deflated:
            protocol._tail = b""  # type: ignore[union-attr]
            self.takeover = _Takeover(transport, tail)

    def take_over(self) -> None:
        """Read the connection's frames ourselves; call it as ws_connect returns, before any await."""
        protocol = getattr(getattr(self, "_conn", None), "protocol", None)
        if self.takeover is not None and protocol is not None:
            protocol._payload_parser = self.takeover


class WebSocketTransport:
    """`FrameTransport` over an aiohttp websocket (server or client side), `PushReading` when the
    tunnel reads its frames itself (`TunnelWebSocketResponse`, `TunnelClientWebSocket`)."""

    def __init__(self, ws: AnyWebSocket, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.ws = ws
        self._pong: asyncio.Task[None] | None = None
        # What lies under the websocket (aiohttp 3.x keeps both on its frame writer), taken now,
        # before any close: aiohttp's protocol says when the connection is gone, and the socket
        # can still be shut down after a TLS transport was closed twice and forgot its own.
        writer = getattr(ws, "_writer", None)
        self._protocol = getattr(writer, "protocol", None)
        transport = getattr(writer, "transport", None)
        self._socket = transport.get_extra_info("socket") if transport is not None else None
        self._ws_writer = writer
        self._frames: FrameWriter | None = None
        if transport is not None and not getattr(writer, "compress", 0):
            self._frames = FrameWriter(transport, masked=bool(getattr(writer, "use_mask", False)))
        self._socket_transport: asyncio.Transport | None = transport
        self._sink: FrameSink | None = None
        self._end_reason: str | None = None
        self._close_code = CLOSE_NORMAL
        self._closing = False
        self.pongs_received = 0
        self._parser: FrameParser | None = None
        takeover: _Takeover | None = getattr(ws, "takeover", None)
        if takeover is not None:
            is_server = isinstance(ws, web.WebSocketResponse)
            self._parser = FrameParser(self._message, masked=is_server, max_message_bytes=max_message_bytes)
            self._parser.paused = True  # until the session reads
            takeover.target = self
            kept, takeover.kept = bytes(takeover.kept), bytearray()
            if kept:
                self._received(kept)
            if takeover.eof:
                self._lost()

    # -- reading: the tunnel's own parser, fed by the connection's protocol ----------------------

    def start_reading(self, sink: FrameSink) -> bool:
        """Hand every frame to ``sink`` as it arrives; False when aiohttp reads (`receive` then)."""
        if self._parser is None:
            return False
        self._sink = sink
        if not self._closing:
            self._parser.on_binary = sink.frame_received  # straight from the parser to the session
        if self._end_reason is not None:
            sink.transport_ended(self._end_reason)
            return True
        self._read_directly()
        self.resume_reading()
        return True

    def _read_directly(self) -> None:
        """Make the socket hand its reads to the parser itself (`_Reader`), where aiohttp's protocol
        would only pass them on: it reads nothing more of ours, has no read timeout or callback to
        run on data, and is the socket's protocol."""
        transport = self._socket_transport
        inner = self._protocol
        takeover: _Takeover | None = getattr(self.ws, "takeover", None)
        if (
            transport is None
            or takeover is None
            or not isinstance(inner, asyncio.Protocol)
            or getattr(inner, "_payload_parser", None) is not takeover
            or getattr(inner, "_data_received_cb", None) is not None
            or getattr(inner, "_read_timeout", None)
        ):
            return
        with contextlib.suppress(NotImplementedError):  # a transport that cannot tell or change it
            if transport.get_protocol() is inner:
                transport.set_protocol(_Reader(self, inner))

    def pause_reading(self) -> None:
        if self._parser is not None:
            self._parser.paused = True
        self._pause_socket()

    def resume_reading(self) -> None:
        parser = self._parser
        if parser is None:
            return
        if self._socket_transport is not None:
            with contextlib.suppress(RuntimeError, AttributeError, NotImplementedError):
                self._socket_transport.resume_reading()
        try:
            parser.resume()
        except Exception as exc:  # bad input or a bug, as in _received
            self._failed(exc)

    def _pause_socket(self) -> None:
        if self._socket_transport is not None:
            with contextlib.suppress(RuntimeError, AttributeError, NotImplementedError):
                self._socket_transport.pause_reading()

    def _received(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None
        try:
            parser.feed(data)
        except Exception as exc:  # bad input or a bug: either ends the session (_failed)
            self._failed(exc)
        if parser.paused and parser.buffered > KEEP_UNREAD_BYTES:
            self._pause_socket()

    def _failed(self, exc: Exception) -> None:
        """Bad frames end the session with their close code; a bug too, rather than escape into
        aiohttp's protocol."""
        if isinstance(exc, FrameError):
            self._close_code = exc.code
            reason = f"websocket error: {printable(str(exc))}"
        else:
            logger.error("reading websocket frames failed", exc_info=exc)
            self._close_code = 1011
            reason = f"internal error: {type(exc).__name__}: {printable(str(exc))}"
        self._no_more_frames()
        self._end(reason)

    def _message(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        sink = self._sink
        if sink is None or self._closing:
            if opcode == OPCODE_CLOSE:
                self._peer_closed(payload)
            return
        if opcode == OPCODE_BINARY:
            sink.frame_received(payload)
        elif opcode == OPCODE_PING:
            self._answer(bytes(payload))
            sink.keepalive_received()
        elif opcode == OPCODE_PONG:
            self.pongs_received += 1
            sink.keepalive_received()
        elif opcode == OPCODE_CLOSE:
            self._peer_closed(payload)
        else:
            sink.text_received()

    def _answer(self, data: bytes) -> None:
        """Pong at once, in order with what we send; not when the peer does not read what we send."""
        frames = self._frames
        if frames is None:  # no transport under aiohttp's writer: it says why
            self._answer_ping(data)
            return
        if not self._writable() or frames.transport.is_closing():
            return
        if frames.kept_bytes + frames.transport.get_write_buffer_size() > PONG_BACKLOG_BYTES:
            return
        frames.write(data, opcode=OPCODE_PONG)

    def _peer_closed(self, payload: bytes | bytearray | memoryview) -> None:
        code, reason = parse_close(payload)
        queue = getattr(self.ws, "_reader", None)  # where aiohttp's close waits for the peer's Close
        if queue is not None:
            with contextlib.suppress(Exception):
                queue.feed_data(aiohttp.WSMessage(WSMsgType.CLOSE, code or CLOSE_NORMAL, reason), 0)
        self._end(f"websocket closed by peer ({describe(payload)})")

    def _lost(self) -> None:
        self._no_more_frames()
        self._end("websocket connection lost")

    def _no_more_frames(self) -> None:
        """Nothing more to read: aiohttp's close must not wait for a Close frame."""
        if self._parser is not None:
            self._parser.stop()
        queue = getattr(self.ws, "_reader", None)
        if queue is not None:
            with contextlib.suppress(Exception):
                queue.feed_eof()

    def _end(self, reason: str) -> None:
        if self._end_reason is not None:
            return
        self._end_reason = reason
        if self._sink is not None:
            self._sink.transport_ended(reason)

    # -- writing ---------------------------------------------------------------------------------

    def _answer_ping(self, data: bytes) -> None:
        """Pong from a task: the read loop must never wait on a full send buffer, or two peers
        that both read and write on one loop (remotedialer does) can block each other for good."""
        if self._pong is None or self._pong.done():
            self._pong = asyncio.ensure_future(self._send_pong(data))

    async def _send_pong(self, data: bytes) -> None:
        self._flush()
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self.ws.pong(data)

    def _flush(self) -> None:
        """What the encoder kept leaves before aiohttp writes a control frame, so frames keep their order."""
        if self._frames is not None:
            self._frames.flush()

    def _writable(self) -> bool:
        frames = self._frames
        return (
            frames is not None
            and not self.ws.closed
            and not getattr(self._ws_writer, "_closing", True)
            and not frames.transport.is_closing()
        )

    async def send(self, frame: bytes, payload: bytes | memoryview = b"") -> None:
        if self.ws.closed:
            raise TunnelClosedError("websocket is closed")
        frames = self._frames
        try:
            if frames is None:  # a compressed websocket: aiohttp's own writer
                await self.ws.send_bytes(frame + payload)
                return
            if not self._writable():
                raise TunnelClosedError("websocket is closing")
            frames.write(frame, payload)
            while not frames.has_room():
                frames.flush()
                if self._protocol is None or not self._protocol._paused:
                    break
                await self._protocol._drain_helper()
                if frames.transport.is_closing():
                    raise TunnelClosedError("websocket send failed: connection lost")
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise TunnelClosedError(f"websocket send failed: {exc}") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiohttp cancels a write waiting on a connection that was lost: not our caller's cancel
            raise TunnelClosedError("websocket send failed: connection lost") from None

    def try_send(self, frame: bytes, payload: bytes | memoryview = b"") -> bool:
        """Write the frame at once while the connection's outgoing buffer is below its high-water mark."""
        frames = self._frames
        # self._writable(), inline: this runs for every message
        if frames is None or self.ws.closed or getattr(self._ws_writer, "_closing", True):
            return False
        try:
            return frames.try_write(frame, payload)
        except (ConnectionError, RuntimeError):
            return False

    async def ping(self) -> None:
        self._flush()
        try:
            await self.ws.ping()
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise TunnelClosedError(f"websocket ping failed: {exc}") from exc

    async def receive(self) -> Frame:
        message = await self.ws.receive()
        kind = message.type
        if kind is WSMsgType.BINARY:
            return Frame(FrameKind.BINARY, message.data)
        if kind is WSMsgType.TEXT:
            return Frame(FrameKind.TEXT, message.data.encode())
        if kind is WSMsgType.PING:
            self._answer_ping(message.data)
            return Frame(FrameKind.PING)
        if kind is WSMsgType.PONG:
            self.pongs_received += 1
            return Frame(FrameKind.PONG)
        if kind is WSMsgType.ERROR:
            raise TunnelClosedError(f"websocket error: {printable(str(message.data))}")
        code = self.ws.close_code
        raise TunnelClosedError(f"websocket closed by peer (code {code})" if code else "websocket closed")

    async def close(self, reason: str = "") -> None:
        """The websocket's closing handshake, then until the connection under it is gone.

        A frozen peer answers neither the Close frame nor TLS's close_notify, and asyncio's TLS
        shutdown would hold the socket for its own 30 s; the caller bounds this wait and aborts.
        """
        if self._pong is not None:
            self._pong.cancel()
        self._closing = True
        if self._parser is not None:
            self._parser.on_binary = _ignore  # as _message does while closing
        self._flush()
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError, asyncio.TimeoutError):
            await self.ws.close(code=self._close_code, message=utf8_prefix(reason, MAX_CLOSE_REASON_BYTES))
        while self._connected():  # noqa: ASYNC110 - aiohttp announces a lost connection to nobody else
            await asyncio.sleep(RELEASE_POLL_SECONDS)

    def _connected(self) -> bool:
        """aiohttp's protocol still holds a transport (connection_lost clears it; a client's close too)."""
        return getattr(self._protocol, "transport", None) is not None

    def abort(self) -> None:
        """Drop the TCP connection under the websocket, also when its TLS transport was closed already."""
        if self._pong is not None:
            self._pong.cancel()
        writer = getattr(self.ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.abort()
        if self._socket is not None and self._connected():
            # asyncio's TLS transport forgets its TCP transport when closed twice; the shut socket
            # makes the TCP transport see the end and close itself
            with contextlib.suppress(OSError, AttributeError, TypeError, ValueError):
                self._socket.shutdown(socket.SHUT_RDWR)


def _ignore(payload: bytes | bytearray | memoryview) -> None:
    """Where binary messages go once the transport is closing."""


def tunnel_handler(
    manager: SessionManager,
    authorizer: Authorizer,
    *,
    settings: SessionSettings | None = None,
    connect_authorizer: ConnectAuthorizer | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler that authorizes a tunnel handshake and serves its session."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            client_key, ok = await authorizer(request)
        except Exception as exc:  # the authorizer's failure is the client's 400, as in remotedialer
            return web.Response(status=400, text=str(exc))
        if not ok:
            return web.Response(status=401, text=FAILED_AUTHENTICATION)
        if manager.full:
            return web.Response(status=503, text="too many tunnel sessions")
        # no permessage-deflate: the tunnel's reader and writer speak plain frames, as remotedialer
        ws = TunnelWebSocketResponse(autoping=False, max_msg_size=max_message_bytes, compress=False)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text=f"Error during upgrade for host [{client_key}]")
        await ws.prepare(request)
        session = Session(
            WebSocketTransport(ws, max_message_bytes=max_message_bytes),
            role="server",
            client_key=client_key,
            connect_authorizer=connect_authorizer,
            settings=settings,
            budget=manager.budget,
        )
        reason = await manager.serve(client_key, session)
        logger.info("tunnel session of %r ended: %s", client_key, printable(reason))
        return ws

    return handle


class TunnelClient:
    """The agent's end: a websocket to the server and a client session over it."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_authorizer: ConnectAuthorizer,
        settings: SessionSettings | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        local_dialer: LocalDialer = dial_local,
        handshake_timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        trust_env: bool = False,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.connect_authorizer = connect_authorizer
        self.settings = settings
        self.ssl = ssl
        self.local_dialer = local_dialer
        self.handshake_timeout_seconds = handshake_timeout_seconds
        self.max_message_bytes = max_message_bytes
        self.trust_env = trust_env
        self._http: aiohttp.ClientSession | None = None
        self._session: Session | None = None
        self._task: asyncio.Task[str] | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise TunnelError(f"tunnel client for {self.url} is not connected")
        return self._session

    async def start(self) -> Session:
        """Handshake and start serving; `HandshakeError` or `TunnelError` if the server is not reached."""
        self._http = aiohttp.ClientSession(trust_env=self.trust_env, ws_response_class=TunnelClientWebSocket)
        try:
            async with asyncio.timeout(self.handshake_timeout_seconds):
                ws = await self._http.ws_connect(
                    self.url,
                    headers=self.headers,
                    ssl=True if self.ssl is None else self.ssl,
                    autoping=False,
                    autoclose=True,
                    max_msg_size=self.max_message_bytes,
                )
        except aiohttp.WSServerHandshakeError as exc:
            await self._http.close()
            raise HandshakeError(
                f"tunnel handshake with {self.url} refused: HTTP {exc.status} {exc.message}",
                status=exc.status,
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._http.close()
            raise TunnelError(f"cannot connect tunnel to {self.url}: {exc or 'handshake timed out'}") from exc
        if isinstance(ws, TunnelClientWebSocket):
            ws.take_over()  # before any await: nothing may reach aiohttp's reader meanwhile
        self._session = Session(
            WebSocketTransport(ws, max_message_bytes=self.max_message_bytes),
            role="client",
            connect_authorizer=self.connect_authorizer,
            local_dialer=self.local_dialer,
            settings=self.settings,
        )
        self._task = asyncio.ensure_future(self._session.serve())
        return self._session

    async def wait(self) -> str:
        """Until the session ends; returns why."""
        if self._task is None:
            raise TunnelError(f"tunnel client for {self.url} was never started")
        try:
            return await asyncio.shield(self._task)
        finally:
            if self._task.done():
                await self._release()

    async def close(self, reason: str = "client closed") -> None:
        if self._session is not None:
            await self._session.close(reason)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._release()

    async def _release(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()

    async def __aenter__(self) -> TunnelClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close("client closed" if exc is None else f"client closed: {type(exc).__name__}")


async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    connect_authorizer: ConnectAuthorizer,
    settings: SessionSettings | None = None,
    ssl: ssl_module.SSLContext | bool | None = None,
    local_dialer: LocalDialer = dial_local,
    on_connect: Callable[[Session], Awaitable[None]] | None = None,
    trust_env: bool = False,
) -> str:
    """Connect to a tunnel server and serve the client session until it ends; returns why.

    Raises `HandshakeError` when the server refuses (401/400), `TunnelError` when it cannot be
    reached. Cancelling the call closes the session.
    """
    client = TunnelClient(
        url,
        headers=headers,
        connect_authorizer=connect_authorizer,
        settings=settings,
        ssl=ssl,
        local_dialer=local_dialer,
        trust_env=trust_env,
    )
    async with client:
        if on_connect is not None:
            await on_connect(client.session)
        return await client.wait()

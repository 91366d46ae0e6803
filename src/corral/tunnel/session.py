"""A tunnel session: many connections multiplexed over one frame transport, remotedialer's rules.

The *server* side dials (`Session.dial`): it allocates connection ids from 2, sends Connect and
hands back the connection at once. The *client* side (the agent) answers Connect by asking its
connect-authorizer (a refusal ends the whole session, as in remotedialer) and dialing locally (a
failure goes back as Error with the reason). The client pings every 5 s and sends SyncConnections
every 60 s; both sides drop the session after 60 s without a ping or pong; the server closes
connections missing from a SyncConnections list without sending Error. A text frame, a malformed
frame or a transport error ends the session; frames of unknown type are ignored, like remotedialer.

The read loop never blocks on the peer: replies it must send (Pause, Error for unknown
connections) go to a bounded control queue with its own writer task. Memory is bounded by
``max_connections`` x ``hard_buffer_limit_bytes`` plus that queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from corral.errors import ProtocolError, TunnelClosedError, TunnelError
from corral.tunnel import message as msg
from corral.tunnel.connection import Connection, pipe_until_either_ends
from corral.tunnel.message import Message, MessageType, UnknownMessageTypeError
from corral.tunnel.settings import SessionSettings
from corral.tunnel.transport import FrameKind, FrameTransport, LocalDialer, Signal, Stream, dial_local

__all__ = ["ConnectAuthorizer", "Connection", "Session", "SessionSettings"]

logger = logging.getLogger(__name__)

Role = Literal["server", "client"]
ConnectAuthorizer = Callable[[str, str], bool]
"""``(proto, address) -> allowed``: checked by a client session for every Connect."""

TUNNEL_DISCONNECT = "tunnel disconnect"
SYNC_CLOSE_REASON = "sync from client"
_background: set[asyncio.Task[None]] = set()


class Session:
    """One tunnel over one `FrameTransport`; run it with `serve`, end it with `close`."""

    def __init__(
        self,
        transport: FrameTransport,
        *,
        role: Role,
        client_key: str = "client",
        session_key: int | None = None,
        connect_authorizer: ConnectAuthorizer | None = None,
        local_dialer: LocalDialer = dial_local,
        settings: SessionSettings | None = None,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"session role must be 'server' or 'client', got {role!r}")
        self.transport = transport
        self.role: Role = role
        self.client_key = client_key
        self.session_key = session_key if session_key is not None else random.getrandbits(62)
        self.connect_authorizer = connect_authorizer
        self.local_dialer = local_dialer
        self.settings = settings or SessionSettings()
        self.conns: dict[int, Connection] = {}
        self._next_conn_id = 1
        self._send_lock = asyncio.Lock()
        self._control: deque[Message] = deque()
        self._control_signal = Signal()
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_reason: str | None = None
        self._closed_signal = Signal()
        self._serving = False
        self._last_keepalive = self.settings.clock.now()
        self.frames_received = 0

    def __repr__(self) -> str:
        return f"<Session {self.role} {self.client_key}/{self.session_key} conns={len(self.conns)}>"

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def buffered_bytes(self) -> int:
        """Bytes received on all connections and not yet read."""
        return sum(c.buffered_bytes for c in self.conns.values())

    # -- life cycle -------------------------------------------------------------------------

    async def serve(self) -> str:
        """Read frames until the session ends; returns why it ended (never raises for bad input)."""
        if self._serving:
            raise TunnelError(f"session {self.client_key}/{self.session_key} is already being served")
        self._serving = True
        self._last_keepalive = self.settings.clock.now()
        self._spawn(self._control_writer(), "control writer")
        self._spawn(self._watch_read_deadline(), "read deadline")
        if self.role == "client":
            self._spawn(self._send_pings(), "pings")
            self._spawn(self._send_syncs(), "sync connections")
        reason = TUNNEL_DISCONNECT
        try:
            while self._close_reason is None:
                frame = await self.transport.receive()
                self.frames_received += 1
                if frame.kind is FrameKind.PING or frame.kind is FrameKind.PONG:
                    self._last_keepalive = self.settings.clock.now()
                elif frame.kind is FrameKind.TEXT:
                    reason = "wrong websocket message type"
                    break
                else:
                    failure = await self._serve_frame(frame.data)
                    if failure is not None:
                        reason = failure
                        break
        except TunnelClosedError as exc:
            reason = str(exc)
        except asyncio.CancelledError:
            await self.close("session cancelled")
            raise
        await self.close(reason)
        return self._close_reason or reason

    async def close(self, reason: str = TUNNEL_DISCONNECT) -> None:
        """End the session: every connection ends with "tunnel disconnect", the transport closes."""
        if self._close_reason is not None:
            return
        self._close_reason = reason
        logger.debug("session %s/%s (%s) closed: %s", self.client_key, self.session_key, self.role, reason)
        for conn in list(self.conns.values()):
            conn._mark_closed(TUNNEL_DISCONNECT)
        self.conns.clear()
        self._control.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        try:
            await self.transport.close(reason)
        except Exception:  # a dying transport may fail in any way; the session is closed anyway
            logger.debug("closing transport of session %s failed", self.session_key, exc_info=True)
        self._closed_signal.notify()

    def close_soon(self, reason: str = TUNNEL_DISCONNECT) -> None:
        """Start `close` from synchronous code running in the event loop."""
        if self._close_reason is None:
            task = asyncio.get_running_loop().create_task(self.close(reason))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def wait_closed(self) -> str:
        while self._close_reason is None:
            await self._closed_signal.wait()
        return self._close_reason

    # -- server side: dial ------------------------------------------------------------------

    async def dial(self, proto: str, address: str, *, timeout_seconds: float | None = None) -> Connection:
        """Open a connection to ``proto``/``address`` on the client's side (returns at once)."""
        if self.role != "server":
            raise TunnelError("only the server side of a tunnel dials; this session is a client")
        self._raise_if_closed()
        if len(self.conns) >= self.settings.max_connections:
            raise TunnelError(
                f"session {self.client_key}/{self.session_key} has {len(self.conns)} connections,"
                f" the limit (max_connections)"
            )
        self._next_conn_id += 1
        conn = Connection(self, self._next_conn_id, proto, address)
        self.conns[conn.conn_id] = conn
        timeout = self.settings.connect_timeout_seconds if timeout_seconds is None else timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await self._send_message(msg.connect(conn.conn_id, proto, address))
        except (TimeoutError, TunnelClosedError) as exc:
            self._forget(conn)
            conn._mark_closed(str(exc) or "connect timed out")
            text = f"dial {proto}/{address} through {self.client_key}: {exc or 'timed out'}"
            raise TunnelClosedError(text) from exc
        return conn

    # -- frames in --------------------------------------------------------------------------

    async def _serve_frame(self, data: bytes) -> str | None:
        """Handle one binary frame; returns a reason when the session must end."""
        try:
            message = msg.decode(data)
        except UnknownMessageTypeError as exc:
            logger.debug("session %s: ignoring %s", self.session_key, exc)
            return None
        except ProtocolError as exc:
            return f"protocol error: {exc}"
        mtype = message.type
        if mtype is MessageType.DATA:
            self._on_data(message)
        elif mtype is MessageType.CONNECT:
            return self._on_connect(message)
        elif mtype is MessageType.ERROR:
            conn = self.conns.pop(message.conn_id, None)
            if conn is not None:
                conn._mark_closed(message.error_text())
        elif mtype is MessageType.PAUSE:
            if (conn := self.conns.get(message.conn_id)) is not None:
                conn._on_pause()
        elif mtype is MessageType.RESUME:
            if (conn := self.conns.get(message.conn_id)) is not None:
                conn._on_resume()
        elif mtype is MessageType.SYNC_CONNECTIONS:
            return self._on_sync(message)
        else:  # AddClient / RemoveClient advertise sessions between server peers; no peers here
            logger.debug("session %s: ignoring %s frame", self.session_key, mtype.name)
        return None

    def _on_data(self, message: Message) -> None:
        conn = self.conns.get(message.conn_id)
        if conn is None:
            text = f"connection not found {self.client_key}/{self.session_key}/{message.conn_id}"
            self._send_nowait(msg.error(message.conn_id, text))
        elif (overrun := conn._on_data(message.payload)) is not None:
            self._forget(conn)
            conn._mark_closed(overrun)
            self._send_nowait(msg.error(conn.conn_id, overrun))

    def _on_sync(self, message: Message) -> str | None:
        """Close, without an Error frame, every connection the client no longer lists."""
        try:
            live = set(msg.decode_connection_ids(message.payload))
        except ProtocolError as exc:
            return f"protocol error: {exc}"
        for conn_id in [cid for cid in self.conns if cid not in live]:
            self.conns.pop(conn_id)._mark_closed(SYNC_CLOSE_REASON)
        return None

    def _on_connect(self, message: Message) -> str | None:
        proto, address = message.connect_target()
        authorizer = self.connect_authorizer
        if authorizer is None or not authorizer(proto, address):
            return f"connect not allowed: {proto}/{address}"
        old = self.conns.get(message.conn_id)
        if old is not None:  # the peer reused a live id: the old connection cannot be addressed any more
            self._forget(old)
            old._mark_closed(f"connection id {message.conn_id} reused by a new Connect")
        elif len(self.conns) >= self.settings.max_connections:
            self._send_nowait(
                msg.error(message.conn_id, f"too many connections ({len(self.conns)}) in this session")
            )
            return None
        conn = Connection(self, message.conn_id, proto, address)
        self.conns[conn.conn_id] = conn
        self._spawn(self._dial_locally(conn), f"dial {proto}/{address}")
        return None

    async def _dial_locally(self, conn: Connection) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                stream = await self.local_dialer(conn.proto, conn.address)
        except (OSError, TimeoutError, TunnelError) as exc:
            text = str(exc) or f"dial {conn.proto} {conn.address}: timed out"
            await conn.close_with_error(text)
            return
        try:
            await pipe_until_either_ends(
                _copy(stream, conn), _copy(conn, stream), f"connection {conn.conn_id} to {conn.address}"
            )
        finally:
            await _close_quietly(stream)
            await conn.close()

    # -- frames out -------------------------------------------------------------------------

    async def _send_message(self, message: Message) -> None:
        """Write one frame in order with every other writer; `TunnelClosedError` once the session ended."""
        self._raise_if_closed()
        frame = msg.encode(message)
        async with self._send_lock:
            await self.transport.send(frame)

    async def _send_error(self, conn_id: int, text: str) -> None:
        """Best effort, bounded in time (remotedialer's SendErrorTimeout)."""
        try:
            async with asyncio.timeout(self.settings.send_error_timeout_seconds):
                await self._send_message(msg.error(conn_id, text))
        except (TunnelClosedError, TimeoutError) as exc:
            logger.debug("could not send Error for connection %s: %s", conn_id, exc)

    def _send_nowait(self, message: Message) -> None:
        """Queue a reply from the read loop; a peer that lets the queue overflow loses the session."""
        if self._close_reason is not None:
            return
        if len(self._control) >= self.settings.max_pending_control_frames:
            self.close_soon("peer does not read: control queue full")
            return
        self._control.append(message)
        self._control_signal.notify()

    async def _control_writer(self) -> None:
        while True:
            while not self._control:
                await self._control_signal.wait()
            try:
                await self._send_message(self._control.popleft())
            except TunnelClosedError:
                return

    def _raise_if_closed(self) -> None:
        if self._close_reason is not None:
            raise TunnelClosedError(f"session {self.client_key}/{self.session_key}: {self._close_reason}")

    def _forget(self, conn: Connection) -> None:
        if self.conns.get(conn.conn_id) is conn:
            del self.conns[conn.conn_id]

    # -- keepalive and sync -----------------------------------------------------------------

    async def _watch_read_deadline(self) -> None:
        clock = self.settings.clock
        deadline = self.settings.read_deadline_seconds
        while True:
            remaining = self._last_keepalive + deadline - clock.now()
            if remaining <= 0:
                await self.close(f"read deadline: no ping or pong for {deadline:g} s")
                return
            await clock.sleep(remaining)

    async def _send_pings(self) -> None:
        while True:
            await self.settings.clock.sleep(self.settings.ping_interval_seconds)
            try:
                await self.transport.ping()
            except TunnelClosedError as exc:
                logger.debug("ping failed on session %s: %s", self.session_key, exc)
                return

    async def _send_syncs(self) -> None:
        while True:
            await self.settings.clock.sleep(self.settings.sync_interval_seconds)
            try:
                await self._send_message(msg.sync_connections(list(self.conns)))
            except TunnelClosedError:
                return

    # -- tasks ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run a task owned by the session (cancelled when it closes); None if already closed."""
        if self._close_reason is not None:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"tunnel {self.session_key}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("task %s of session %s failed", task.get_name(), self.session_key, exc_info=exc)


async def _copy(source: Stream | Connection, sink: Stream | Connection) -> None:
    while True:
        chunk = await source.read(64 * 1024)
        if not chunk:
            return
        await sink.write(chunk)


async def _close_quietly(stream: Stream) -> None:
    try:
        await stream.close()
    except (OSError, TunnelError):
        logger.debug("closing a local stream failed", exc_info=True)

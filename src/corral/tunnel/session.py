"""A tunnel session: many connections multiplexed over one frame transport, remotedialer's rules.

The *server* side dials (`Session.dial`): it allocates connection ids from 2, sends Connect and
hands back the connection at once. The *client* side (the agent) answers Connect by asking its
connect-authorizer (a refusal ends the whole session, as in remotedialer) and dialing locally (a
failure goes back as Error with the reason). The client pings every 5 s and sends SyncConnections
every 60 s; both sides drop the session after 60 s without a ping or pong; the server closes
connections missing from a SyncConnections list without sending Error. A text frame, a malformed
frame or a transport error ends the session; frames of unknown type are ignored, like remotedialer.

Frames are handled as the transport hands them over (`PushReading`: the websocket and the
in-memory pair call the session in the turn of the event loop they arrived in), or by a read loop
asking for each one. Either never waits on a connection: replies the session must send (Pause,
Resume, Error) go to a control queue with its own writer task, and reading stops only while that
queue is full, for at most ``send_error_timeout_seconds`` (then the peer does not read). Memory:
see `corral.tunnel`.
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
from corral.tunnel.clock import Timeout, TimerHandle
from corral.tunnel.connection import EOF_TEXT, Connection
from corral.tunnel.message import Message, MessageType, UnknownMessageTypeError, printable
from corral.tunnel.settings import BufferBudget, SessionSettings
from corral.tunnel.transport import (
    FrameKind,
    FrameTransport,
    LocalDialer,
    Pipe,
    PushReading,
    Signal,
    Stream,
    dial_local,
)

__all__ = ["ConnectAuthorizer", "Connection", "Session", "SessionSettings"]

logger = logging.getLogger(__name__)

Role = Literal["server", "client"]
ConnectAuthorizer = Callable[[str, str], bool]
"""``(proto, address) -> allowed``: checked by a client session for every Connect."""

TUNNEL_DISCONNECT = "tunnel disconnect"
SYNC_CLOSE_REASON = "sync from client"
_FLOW_TYPES = (MessageType.PAUSE, MessageType.RESUME)
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
        budget: BufferBudget | None = None,
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
        self._holding: set[Connection] = set()
        self._next_conn_id = 1
        self._send_lock = asyncio.Lock()
        self._send_locked = False
        """Whether `_send_lock` is held (its ``locked()``, without the call on every frame)."""
        self._control: deque[Message] = deque()
        self._queued_flow: set[tuple[int, MessageType]] = set()
        self._control_signal = Signal()
        self._control_drained = Signal()
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_reason: str | None = None
        self._closed_signal = Signal()
        self._released = False
        self._released_signal = Signal()
        self._close_callbacks: list[Callable[[Session], None]] = []
        self._serving = False
        self._last_keepalive = self.settings.clock.now()
        self.budget = budget
        """Shared with the other sessions of the process (`SessionManager.budget`), if any."""
        self._buffered = 0
        self.peak_buffered_bytes = 0
        self.frames_received = 0
        self._ending: asyncio.Future[str] | None = None
        """Set when the transport pushes frames (`PushReading`): resolved with why reading ended."""
        self._reading_paused = False
        self._push: PushReading | None = None

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
        """Bytes received on this session's connections and not yet read (or discarded)."""
        return self._buffered

    @property
    def pending_control_frames(self) -> int:
        """Replies queued for the peer (Pause, Resume, Error) and not yet written."""
        return len(self._control)

    @property
    def task_count(self) -> int:
        """Tasks the session runs (its loops, local dials and pipes, stream bridges)."""
        return len(self._tasks)

    def add_close_callback(self, callback: Callable[[Session], None]) -> None:
        """Call ``callback(session)`` as soon as the session starts closing (at once if closed)."""
        if self._close_reason is not None:
            callback(self)
        else:
            self._close_callbacks.append(callback)

    # -- life cycle -------------------------------------------------------------------------

    async def serve(self) -> str:
        """Take frames until the session ends; returns why it ended (never raises for bad input)."""
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
            transport = self.transport
            if isinstance(transport, PushReading):
                self._ending = asyncio.get_running_loop().create_future()
                self._push = transport
                if transport.start_reading(self):
                    reason = await self._ending
                else:
                    self._ending = self._push = None
            if self._ending is None:
                reason = await self._read_loop()
        except TunnelClosedError as exc:
            reason = str(exc)
        except asyncio.CancelledError:
            await self.close("session cancelled")
            raise
        except Exception as exc:  # a bug must not leave the session's tasks running
            logger.exception("session %s/%s failed", self.client_key, self.session_key)
            reason = f"internal error: {type(exc).__name__}: {printable(str(exc))}"
        await self.close(reason)
        return self._close_reason or reason

    async def _read_loop(self) -> str:
        """Ask the transport for each frame (one that cannot push them); returns why reading ended."""
        while self._close_reason is None:
            frame = await self.transport.receive()
            self.frames_received += 1
            if frame.kind is FrameKind.PING or frame.kind is FrameKind.PONG:
                self._last_keepalive = self.settings.clock.now()
            elif frame.kind is FrameKind.TEXT:
                return "wrong websocket message type"
            else:
                failure = self._serve_frame(frame.data)
                if failure is None and len(self._control) >= self.settings.max_pending_control_frames:
                    failure = await self._wait_for_replies_to_leave()
                if failure is not None:
                    return failure
        return TUNNEL_DISCONNECT

    async def close(self, reason: str = TUNNEL_DISCONNECT) -> None:
        """End the session: every connection ends with "tunnel disconnect", the transport closes.

        Bounded in time: a transport that cannot finish its close handshake within
        ``close_timeout_seconds`` (a peer that stopped reading) is aborted. A second caller waits
        until the first one has released the transport, so whoever serves the session (the
        server's handler) returns only once its socket is closed or aborted, never while a close
        handshake with a frozen peer is still pending.
        """
        if self._close_reason is not None:
            while not self._released:
                await self._released_signal.wait()
            return
        self._close_reason = reason
        logger.debug("session %s/%s (%s) closed: %s", self.client_key, self.session_key, self.role, reason)
        if self._ending is not None and not self._ending.done():
            self._ending.set_result(reason)
        for conn in [*self.conns.values(), *self._holding]:
            conn.end(TUNNEL_DISCONNECT, discard=True)  # what nobody read is dropped with the tunnel
        self.conns.clear()
        self._holding.clear()
        self._control.clear()
        self._queued_flow.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # one listener's bug must not keep the transport open
                logger.exception("close callback of session %s failed", self.session_key)
        self._closed_signal.notify()
        self._control_drained.notify()
        try:
            async with Timeout(self.settings.clock, self.settings.close_timeout_seconds):
                await self.transport.close(reason)
        except TimeoutError:
            logger.debug("session %s: transport close timed out; aborting it", self.session_key)
            self.transport.abort()
        except asyncio.CancelledError:
            self.transport.abort()
            raise
        except Exception:  # a dying transport may fail in any way; the session is closed anyway
            logger.debug("closing transport of session %s failed", self.session_key, exc_info=True)
            self.transport.abort()
        finally:
            self._released = True
            self._released_signal.notify()

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
            async with Timeout(self.settings.clock, timeout):
                await self.send(msg.connect(conn.conn_id, proto, address))
        except BaseException as exc:  # timed out, session gone, or the caller cancelled us
            self.forget(conn)
            why = "connect timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            conn.end(why)
            self.send_soon(msg.error(conn.conn_id, why))  # the Connect may have left: let the peer drop it
            if isinstance(exc, TimeoutError | TunnelClosedError):
                text = f"dial {proto}/{address} through {self.client_key}: {why}"
                raise TunnelClosedError(text) from exc
            raise
        return conn

    # -- frames in, pushed by the transport (`FrameSink`) ---------------------------------------

    def frame_received(self, data: bytes | bytearray | memoryview) -> None:
        """A binary message, handled at once; a full reply queue pauses the transport's reading."""
        ending = self._ending
        if ending is None or ending.done():
            return
        self.frames_received += 1
        try:
            failure = None
            if (split := msg.split_data(data)) is not None:  # _serve_frame, one call less per frame
                self._on_data(*split)
            else:
                failure = self._serve_decoded(data)
        except Exception as exc:  # a bug must end the session, not escape into the socket's protocol
            logger.exception("session %s/%s failed", self.client_key, self.session_key)
            failure = f"internal error: {type(exc).__name__}: {printable(str(exc))}"
        if failure is not None:
            ending.set_result(failure)
        elif len(self._control) >= self.settings.max_pending_control_frames and not self._reading_paused:
            self._reading_paused = True
            assert self._push is not None
            self._push.pause_reading()
            self._spawn(self._read_when_replies_left(), "wait for replies to leave")

    def text_received(self) -> None:
        if self._ending is not None and not self._ending.done():
            self._ending.set_result("wrong websocket message type")

    def keepalive_received(self) -> None:
        if self._ending is not None and not self._ending.done():
            self.frames_received += 1
            self._last_keepalive = self.settings.clock.now()

    def transport_ended(self, reason: str) -> None:
        if self._ending is not None and not self._ending.done():
            self._ending.set_result(reason)

    async def _read_when_replies_left(self) -> None:
        failure = await self._wait_for_replies_to_leave()
        ending = self._ending
        if ending is None or ending.done():
            return
        if failure is not None:
            ending.set_result(failure)
            return
        self._reading_paused = False
        assert self._push is not None
        self._push.resume_reading()

    # -- frames in --------------------------------------------------------------------------

    def _serve_frame(self, data: bytes | bytearray | memoryview) -> str | None:
        """Handle one binary frame; returns a reason when the session must end."""
        if (split := msg.split_data(data)) is not None:  # most frames: Data, without a copy
            self._on_data(*split)
            return None
        return self._serve_decoded(data)

    def _serve_decoded(self, data: bytes | bytearray | memoryview) -> str | None:
        try:
            message = msg.decode(data)
        except UnknownMessageTypeError as exc:
            logger.debug("session %s: ignoring %s", self.session_key, exc)
            return None
        except ProtocolError as exc:
            return f"protocol error: {printable(str(exc))}"
        mtype = message.type
        if mtype is MessageType.DATA:
            self._on_data(message.conn_id, message.payload)
        elif mtype is MessageType.CONNECT:
            return self._on_connect(message)
        elif mtype is MessageType.ERROR:
            conn = self.conns.get(message.conn_id)
            if conn is not None:
                self.forget(conn)
                conn.end(message.error_text())
        elif mtype is MessageType.PAUSE:
            if (conn := self.conns.get(message.conn_id)) is not None:
                conn.receive_pause()
        elif mtype is MessageType.RESUME:
            if (conn := self.conns.get(message.conn_id)) is not None:
                conn.receive_resume()
        elif mtype is MessageType.SYNC_CONNECTIONS:
            return self._on_sync(message)
        else:  # AddClient / RemoveClient advertise sessions between server peers; no peers here
            logger.debug("session %s: ignoring %s frame", self.session_key, mtype.name)
        return None

    def _on_data(self, conn_id: int, payload: bytes | memoryview) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            text = f"connection not found {self.client_key}/{self.session_key}/{conn_id}"
            self.send_soon(msg.error(conn_id, text))
            return
        size = len(payload)
        limit = self.settings.max_session_buffer_bytes
        shared = self.budget
        crowded = self._buffered > limit // 2
        overrun: str | None = None
        if self._buffered + size > limit:
            overrun = (
                f"connection {conn.conn_id}: session buffer full, {self._buffered + size} bytes would be"
                f" buffered (limit {limit})"
            )
        elif shared is not None:
            if shared.used_bytes + size > shared.limit_bytes:
                overrun = (
                    f"connection {conn.conn_id}: tunnel buffers of this process full"
                    f" ({shared.used_bytes} of {shared.limit_bytes} bytes)"
                )
            crowded = crowded or shared.used_bytes > shared.limit_bytes // 2
        if overrun is None:
            overrun = conn.receive_data(payload, crowded=crowded)
        if overrun is not None:
            self.forget(conn)
            conn.end(overrun, discard=True)
            self.send_soon(msg.error(conn.conn_id, overrun))

    def _on_sync(self, message: Message) -> str | None:
        """Close, without an Error frame, every connection the client no longer lists."""
        count = len(message.payload) // 8
        if count > 2 * self.settings.max_connections:
            # a client only holds connections this session dialed; more ids than that is no list
            return (
                f"protocol error: sync connections lists {count} ids, more than twice this"
                f" session's max_connections ({self.settings.max_connections})"
            )
        try:
            live = set(msg.decode_connection_ids(message.payload))
        except ProtocolError as exc:
            return f"protocol error: {exc}"
        for conn in [c for cid, c in self.conns.items() if cid not in live]:
            self.forget(conn)
            conn.end(SYNC_CLOSE_REASON)
        return None

    def _on_connect(self, message: Message) -> str | None:
        proto, address = message.connect_target()
        target = printable(f"{proto}/{address}", 300)
        authorizer = self.connect_authorizer
        try:
            allowed = authorizer is not None and bool(authorizer(proto, address))
        except Exception as exc:  # an authorizer that fails refuses, and a refusal ends the session
            logger.warning(
                "connect authorizer of session %s failed on %s", self.session_key, target, exc_info=True
            )
            return f"connect not allowed: {target}: authorizer failed: {type(exc).__name__}"
        if not allowed:
            return f"connect not allowed: {target}"
        old = self.conns.get(message.conn_id)
        if old is not None:  # the peer reused a live id: the old connection cannot be addressed any more
            self.forget(old)
            old.end(f"connection id {message.conn_id} reused by a new Connect")
        elif len(self.conns) >= self.settings.max_connections:
            self.send_soon(
                msg.error(message.conn_id, f"too many connections ({len(self.conns)}) in this session")
            )
            return None
        conn = Connection(self, message.conn_id, proto, address)
        self.conns[conn.conn_id] = conn
        self._spawn(self._dial_locally(conn), f"dial {target}")
        return None

    async def _dial_locally(self, conn: Connection) -> None:
        try:
            async with Timeout(self.settings.clock, self.settings.connect_timeout_seconds):
                stream = await self.local_dialer(conn.proto, conn.address)
        except asyncio.CancelledError:
            self.forget(conn)
            conn.end(TUNNEL_DISCONNECT)
            raise
        except TimeoutError:
            await conn.close_with_error(f"dial {conn.proto} {conn.address}: i/o timeout")
            return
        except Exception as exc:  # any failure of a local dialer is this dial's failure, sent as Error
            text = str(exc) or f"dial {conn.proto} {conn.address}: {type(exc).__name__}"
            await conn.close_with_error(printable(text))
            return
        if isinstance(stream, Pipe):
            try:
                await stream.pipe(conn)
            except BaseException:
                stream.abort()
                raise
        else:
            await self._serve_local(conn, stream)

    async def _serve_local(self, conn: Connection, stream: Stream) -> None:
        """Copy both ways until either side ends; then release the stream, whatever happened.

        When the connection ends with an error, the copy towards the stream stops at once; after a
        clean end it has ``close_timeout_seconds`` to deliver what is buffered. A stream that
        failed, or whose reader stopped, is aborted rather than closed.
        """
        loop = asyncio.get_running_loop()
        up = loop.create_task(_copy(stream, conn))
        down = loop.create_task(_copy(conn, stream))
        state = {"stuck": False, "over": False}
        timers: list[TimerHandle] = []

        def cut() -> None:
            if not down.done():
                state["stuck"] = True
                down.cancel()

        def on_end(reason: str) -> None:
            if state["over"]:
                return
            if reason == EOF_TEXT:
                timers.append(self.settings.clock.call_later(self.settings.close_timeout_seconds, cut))
            else:
                cut()

        conn.add_end_callback(on_end)
        failed = False
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            state["over"] = True
            for timer in timers:
                timer.cancel()
            for task in (up, down):
                task.cancel()
            for task in (up, down):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except (TunnelError, OSError) as exc:
                    failed = True
                    logger.debug("connection %s to %s: %s", conn.conn_id, printable(conn.address), exc)
            await self._release_stream(stream, clean=not (failed or state["stuck"]))
            await conn.close()

    async def _release_stream(self, stream: Stream, *, clean: bool) -> None:
        if clean:
            try:
                async with Timeout(self.settings.clock, self.settings.close_timeout_seconds):
                    await stream.close()
                return
            except (TimeoutError, OSError, TunnelError):
                logger.debug("closing a local stream failed; aborting it", exc_info=True)
            except asyncio.CancelledError:
                stream.abort()
                raise
        stream.abort()

    # -- frames out (the connections' host) ---------------------------------------------------

    async def send(self, message: Message) -> None:
        """Write one frame in order with every other writer; `TunnelClosedError` once the session ended."""
        self._raise_if_closed()
        frame = msg.encode(message)
        async with self._send_lock:
            self._send_locked = True
            try:
                self._raise_if_closed()
                await self.transport.send(frame)
            finally:
                self._send_locked = False

    async def send_frame(self, frame: bytes, payload: bytes | memoryview = b"") -> None:
        """`send` for a Data frame already encoded (``frame`` then ``payload``, never joined here):
        written at once when nothing stands in the way."""
        if self._close_reason is not None:
            self._raise_if_closed()
        if not self._send_locked and self.transport.try_send(frame, payload):
            return
        async with self._send_lock:
            self._send_locked = True
            try:
                if self._close_reason is not None:
                    self._raise_if_closed()
                await self.transport.send(frame, payload)
            finally:
                self._send_locked = False

    def send_frame_nowait(self, frame: bytes, payload: bytes | memoryview = b"") -> bool:
        """Write a frame at once if nobody is writing and the transport has room; False otherwise."""
        if self._close_reason is not None or self._send_locked:
            return False
        return self.transport.try_send(frame, payload)

    async def send_error(self, conn_id: int, text: str) -> None:
        """Best effort, bounded in time (remotedialer's SendErrorTimeout)."""
        try:
            async with Timeout(self.settings.clock, self.settings.send_error_timeout_seconds):
                await self.send(msg.error(conn_id, text))
        except (TunnelClosedError, TimeoutError) as exc:
            logger.debug("could not send Error for connection %s: %s", conn_id, exc)

    def send_soon(self, message: Message) -> None:
        """Queue a reply (never waits); Pause/Resume of a connection already queued are not repeated.

        The read loop waits while the queue is full; other sources (flow timers, reads) add at
        most two frames per connection, so the queue never holds more than
        ``max_pending_control_frames + 2 * max_connections`` frames.
        """
        if self._close_reason is not None:
            return
        if message.type in _FLOW_TYPES:
            key = (message.conn_id, message.type)
            if key in self._queued_flow:
                return
            self._queued_flow.add(key)
        if len(self._control) >= self.settings.max_pending_control_frames + 2 * self.settings.max_connections:
            self.close_soon("peer does not read: control queue full")
            return
        self._control.append(message)
        self._control_signal.notify()

    def forget(self, conn: Connection) -> None:
        if self.conns.get(conn.conn_id) is conn:
            del self.conns[conn.conn_id]
        if conn.buffered_bytes:  # ended, not yet read: still ours to account and to drop on close
            if len(self._holding) >= self.settings.max_connections:
                self._holding = {c for c in self._holding if c.buffered_bytes}
            self._holding.add(conn)

    def account(self, delta: int) -> None:
        self._buffered += delta
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self._buffered)
        if (shared := self.budget) is not None:
            shared.used_bytes += delta
            shared.peak_bytes = max(shared.peak_bytes, shared.used_bytes)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        return self._spawn(coro, name)

    async def _wait_for_replies_to_leave(self) -> str | None:
        """The control queue is full: read no more until half of it is written, for a bounded time."""
        low = self.settings.max_pending_control_frames // 2
        try:
            async with Timeout(self.settings.clock, self.settings.send_error_timeout_seconds):
                while len(self._control) > low and self._close_reason is None:
                    await self._control_drained.wait()
        except TimeoutError:
            return (
                f"peer does not read: {len(self._control)} replies still queued after"
                f" {self.settings.send_error_timeout_seconds:g} s"
            )
        return None

    async def _control_writer(self) -> None:
        while True:
            while not self._control:
                await self._control_signal.wait()
            message = self._control.popleft()
            if message.type in _FLOW_TYPES:
                self._queued_flow.discard((message.conn_id, message.type))
            try:
                await self.send(message)
            except TunnelClosedError:
                return
            if len(self._control) <= self.settings.max_pending_control_frames // 2:
                self._control_drained.notify()

    def _raise_if_closed(self) -> None:
        if self._close_reason is not None:
            raise TunnelClosedError(f"session {self.client_key}/{self.session_key}: {self._close_reason}")

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
                await self.send(msg.sync_connections(list(self.conns)))
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

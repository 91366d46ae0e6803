"""One tunnelled connection: a receive buffer with back-pressure and a paced writer.

As in remotedialer's connection.go and readbuffer.go: incoming Data is buffered without blocking
the session's read loop, and Pause and Resume keep the buffer near ``max_buffer_bytes``; the
rules, including the answers to remotedialer's single pause flag, are the pure state machine of
`corral.tunnel.flow`, whose timers run as calls on the session's clock (no task per event).
Closing sends Error ``EOF``; an Error from the peer ends the connection with its text. There is
no half-close in remotedialer, so neither is there here.

A connection talks to its session only through `ConnectionHost`; the session drives it through
the ``receive_*`` methods and `Connection.end`. `Connection.as_streams` and
`Connection.bridge_socket` make it usable by anything that speaks asyncio (HTTP clients, TLS).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from corral.errors import TunnelClosedError
from corral.tunnel import message as msg
from corral.tunnel.clock import TimerHandle
from corral.tunnel.flow import FlowControl, FlowLimits, Signal
from corral.tunnel.message import Message
from corral.tunnel.settings import SessionSettings

logger = logging.getLogger(__name__)

EOF_TEXT = "EOF"
BRIDGE_CHUNK_BYTES = 64 * 1024


class ConnectionHost(Protocol):
    """What a connection needs from its session."""

    @property
    def settings(self) -> SessionSettings: ...

    async def send(self, message: Message) -> None:
        """Write one frame in order with every other writer; `TunnelClosedError` once closed."""

    async def send_frame(self, frame: bytes, payload: bytes | memoryview = b"") -> None:
        """`send` for a frame already encoded (``frame`` then ``payload``, one message)."""

    def send_frame_nowait(self, frame: bytes, payload: bytes | memoryview = b"") -> bool:
        """Write a frame at once if that needs no waiting; False (nothing sent) otherwise."""

    def send_soon(self, message: Message) -> None:
        """Queue a flow-control frame without waiting (never raises)."""

    async def send_error(self, conn_id: int, text: str) -> None:
        """Best effort, bounded in time."""

    def forget(self, conn: Connection) -> None:
        """The connection is closed: stop routing frames to it."""

    def account(self, delta: int) -> None:
        """Bytes buffered by the session's connections changed by ``delta``."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run a task the session cancels when it closes; None (coroutine closed) if it is closed."""


class _Waiter:
    """One waiting task at a time, woken by `wake` (cheaper than an Event per notification)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        future = self._future
        if future is None or future.done():
            future = self._future = asyncio.get_running_loop().create_future()
        await future

    def wake(self) -> None:
        future = self._future
        if future is not None:
            self._future = None
            if not future.done():
                future.set_result(None)


class Connection:
    """A byte stream through a tunnel session, identified by ``conn_id`` on both sides."""

    def __init__(self, host: ConnectionHost, conn_id: int, proto: str, address: str) -> None:
        self.host = host
        self.conn_id = conn_id
        self.proto = proto
        self.address = address
        settings = host.settings
        self._clock = settings.clock
        self.flow = FlowControl(
            FlowLimits(
                max_buffer=settings.max_buffer_bytes,
                resume_below=settings.resume_below_bytes,
                hard_limit=settings.hard_buffer_limit_bytes,
                stall=settings.peer_stall_resume_seconds,
            )
        )
        self._chunks: deque[bytes | memoryview] = deque()
        self._readable = _Waiter()
        self._writable = _Waiter()
        self._end_callbacks: list[Callable[[str], None]] = []
        self._sink: Callable[[bytes | memoryview], None] | None = None
        self._sink_end: Callable[[str], None] | None = None
        self._sink_ready = True
        self._data_header = msg.data_header(conn_id)
        self._max_frame_payload = settings.max_frame_payload_bytes
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._close_reason: str | None = None

    def __repr__(self) -> str:
        state = "open" if self._close_reason is None else f"closed: {self._close_reason}"
        return f"<Connection {self.conn_id} {self.proto}/{self.address} {state}>"

    @property
    def session(self) -> ConnectionHost:
        """The session this connection belongs to."""
        return self.host

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        """``EOF`` after a clean close, the error text otherwise, None while open."""
        return self._close_reason

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet read."""
        return self.flow.buffered

    @property
    def paused_by_peer(self) -> bool:
        return self.flow.peer_paused

    # -- driven by the session's read loop (never blocks) -----------------------------------

    def receive_data(self, payload: bytes | memoryview, *, crowded: bool = False) -> str | None:
        """Buffer incoming bytes; returns an error text when the peer overran the hard limit.

        ``crowded``: the session is short of buffer space, so Pause the peer early.
        """
        if self._close_reason is not None:
            return None
        flow = self.flow
        sink = self._sink
        if (
            sink is not None
            and self._sink_ready
            and not self._chunks
            and payload
            and flow.pass_through(len(payload))
        ):  # the usual case: straight through to a ready sink, nothing held, nothing to account
            sink(payload)
            return None
        was_paused = flow.peer_paused
        accepted, signal = flow.on_data(len(payload), crowded=crowded)
        if not accepted:
            return (
                f"connection {self.conn_id}: peer ignored Pause, {flow.buffered + len(payload)} bytes"
                f" would be buffered (limit {flow.limits.hard_limit})"
            )
        if payload:
            signal = self._take(payload, signal)
        if was_paused and not flow.peer_paused:
            self._writable.wake()
        if signal is not None:
            self._emit(signal)
        if flow.deadline is not None:
            self._arm()
        return None

    def _take(self, payload: bytes | memoryview, signal: Signal | None) -> Signal | None:
        """Deliver or buffer ``payload``; returns ``signal`` if it is still to be sent."""
        sink = self._sink
        if sink is None:
            self._chunks.append(payload)
            self.host.account(len(payload))
            self._readable.wake()
            return signal
        if signal is not None:  # before the bytes reach the sink, which may pause us
            self._emit(signal)
        if self._sink_ready and not self._chunks:  # straight through: never held, never accounted
            sink(payload)
            if (read := self.flow.on_read(len(payload))) is not None:
                self._emit(read)
        else:
            self._chunks.append(payload)
            self.host.account(len(payload))
            self._feed_sink()
        return None

    # -- push delivery (corral.tunnel.bridge) -------------------------------------------------

    def attach(self, deliver: Callable[[bytes | memoryview], None], ended: Callable[[str], None]) -> None:
        """Hand received bytes to ``deliver`` as they arrive, then ``ended(reason)`` once.

        From then on `read` must not be used. While the sink is not ready (`set_sink_ready`),
        bytes stay in the buffer, and flow control pauses the peer as for a slow reader.
        """
        self._sink = deliver
        self._sink_end = ended
        self._feed_sink()

    def redirect(self, deliver: Callable[[bytes | memoryview], None]) -> None:
        """Hand received bytes to ``deliver`` from now on, in place of `attach`'s (the end still
        goes to `attach`'s ``ended``, once)."""
        self._sink = deliver

    def set_sink_ready(self, ready: bool) -> None:
        self._sink_ready = ready
        if ready and self._sink is not None:
            self._feed_sink()

    def _feed_sink(self) -> None:
        sink = self._sink
        assert sink is not None
        chunks = self._chunks
        taken = 0
        while chunks and self._sink_ready:
            chunk = chunks.popleft()
            taken += len(chunk)
            sink(chunk)  # may pause us (the sink's buffer is full) before it returns
        if taken:
            self.host.account(-taken)
            self._emit(self.flow.on_read(taken))
        if not chunks and self._close_reason is not None and self._sink_end is not None:
            ended, self._sink_end = self._sink_end, None
            ended(self._close_reason)

    def receive_pause(self) -> None:
        self.flow.on_pause(self._clock.now())
        self._arm()

    def receive_resume(self) -> None:
        self._emit(self.flow.on_resume(self._clock.now()))
        self._writable.wake()
        self._arm()

    def end(self, reason: str, *, discard: bool = False) -> None:
        """End the connection locally (no frame sent): readers drain the buffer, then see the end.

        ``discard`` drops what is buffered (the stream is broken; nobody should read it).
        """
        if self._close_reason is not None:
            if discard:
                self._discard()
                if self._sink is not None:
                    self._feed_sink()
            return
        self._close_reason = reason
        self.flow.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if discard:
            self._discard()
        self._readable.wake()
        self._writable.wake()
        callbacks, self._end_callbacks = self._end_callbacks, []
        for callback in callbacks:
            callback(reason)
        if self._sink is not None:
            self._feed_sink()

    def add_end_callback(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the connection ends (at once if it has)."""
        if self._close_reason is not None:
            callback(self._close_reason)
        else:
            self._end_callbacks.append(callback)

    def _discard(self) -> None:
        if self.flow.buffered:
            self.host.account(-self.flow.buffered)
        self._chunks.clear()
        self.flow.drop_buffer()

    def _emit(self, signal: Signal | None) -> None:
        if signal is Signal.PAUSE:
            self.host.send_soon(msg.pause(self.conn_id))
        elif signal is Signal.RESUME:
            self.host.send_soon(msg.resume(self.conn_id))

    def _arm(self) -> None:
        """Keep one clock call pending at the flow's deadline (re-armed only when it comes sooner)."""
        deadline = self.flow.deadline
        if deadline is None or self._close_reason is not None:
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._clock.call_later(deadline - self._clock.now(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self._close_reason is not None:
            return
        was_paused = self.flow.peer_paused
        self._emit(self.flow.on_timer(self._clock.now()))
        if was_paused and not self.flow.peer_paused:
            self._writable.wake()
        self._arm()

    # -- the stream API ---------------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered if n < 0); b"" after a clean close.

        Raises `TunnelClosedError` once the buffer is drained if the connection ended with an error.
        """
        chunks = self._chunks
        while not chunks:
            if self._close_reason is not None:
                if self._close_reason == EOF_TEXT:
                    return b""
                raise TunnelClosedError(f"connection {self.conn_id} to {self.address}: {self._close_reason}")
            await self._readable.wait()
        first = chunks[0]
        if n < 0 or n >= self.flow.buffered:
            chunk = first if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        elif len(first) <= n:
            parts = [chunks.popleft()]
            size = len(first)
            while chunks and size + len(chunks[0]) <= n:
                size += len(chunks[0])
                parts.append(chunks.popleft())
            chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        else:
            chunk = first[:n]
            chunks[0] = first[n:]
        self.host.account(-len(chunk))
        self._emit(self.flow.on_read(len(chunk)))
        return chunk if isinstance(chunk, bytes) else bytes(chunk)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as Data frames, waiting while the peer has paused us."""
        step = self.host.settings.max_frame_payload_bytes
        data = _immutable(data)
        if len(data) <= step:
            pieces: Any = (data,)
        else:
            view = memoryview(data).cast("B")
            pieces = (view[start : start + step] for start in range(0, len(view), step))
        for piece in pieces:
            while not self.flow.writable:
                await self._writable.wait()
            if self._close_reason is not None:
                raise TunnelClosedError(f"connection {self.conn_id} to {self.address}: {self._close_reason}")
            await self.host.send_frame(self._data_header, piece)

    def try_write(self, data: bytes | bytearray | memoryview) -> bool:
        """Send ``data`` (at most one frame's worth) at once if nothing stands in the way."""
        # open, so the flow is not closed either, and writable unless the peer paused us
        if self._close_reason is None and not self.flow.peer_paused and len(data) <= self._max_frame_payload:
            return self.host.send_frame_nowait(
                self._data_header, data if type(data) is bytes else _immutable(data)
            )
        return False

    async def close(self) -> None:
        """Close cleanly: the peer gets Error ``EOF``. Idempotent."""
        await self.close_with_error(EOF_TEXT)

    async def close_with_error(self, text: str) -> None:
        """Close and tell the peer why (remotedialer reads at most 100 bytes of it)."""
        if self._close_reason is not None:
            return
        self.end(text)
        self.host.forget(self)
        await self.host.send_error(self.conn_id, text)

    async def wait_closed(self) -> None:
        if self._close_reason is not None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(_: str) -> None:
            if not future.done():
                future.set_result(None)

        self.add_end_callback(wake)
        await future

    async def as_streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio streams over this connection (closing the writer closes the connection)."""
        from corral.tunnel.bridge import open_streams  # the bridge builds on this module

        return await open_streams(self)

    def bridge_socket(self) -> socket.socket:
        """One end of a socket pair whose other end is pumped to and from this connection."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        task = self.host.spawn(self._pump(ours), f"bridge {self.conn_id}")
        if task is None:
            ours.close()
        else:  # a task cancelled before its first step never runs its finally clause
            task.add_done_callback(lambda _: ours.close())
        return theirs

    async def _pump(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()

        async def to_tunnel() -> None:
            while True:
                chunk = await loop.sock_recv(sock, BRIDGE_CHUNK_BYTES)
                if not chunk:
                    return
                await self.write(chunk)

        async def from_tunnel() -> None:
            while True:
                chunk = await self.read(BRIDGE_CHUNK_BYTES)
                if not chunk:
                    return
                await loop.sock_sendall(sock, chunk)

        try:
            await pipe_until_either_ends(to_tunnel(), from_tunnel(), f"bridge of connection {self.conn_id}")
        finally:
            sock.close()
            await self.close()


def _immutable(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """``data`` itself when nobody can change it (a frame may leave at the end of the turn), else a copy."""
    if type(data) is bytes or (isinstance(data, memoryview) and type(data.obj) is bytes):
        return data
    return bytes(data)


async def pipe_until_either_ends(
    a: Coroutine[Any, Any, None], b: Coroutine[Any, Any, None], what: str
) -> None:
    """Run two copy loops; when one ends (or fails) cancel the other, like remotedialer's pipe."""
    tasks = [asyncio.ensure_future(a), asyncio.ensure_future(b)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            except (TunnelClosedError, OSError) as exc:
                logger.debug("%s ended: %s", what, exc)

"""Connections plumbed straight into asyncio's protocols and transports, with no socket pair between.

`TunnelTransport` is an `asyncio.Transport` over a `Connection`, so asyncio streams (and any
protocol) run on a tunnelled connection directly: received Data goes to the protocol's
``data_received`` as it arrives, and writes are coalesced into Data frames by one writer task.
`SocketBridge` is the protocol of an agent's local socket, joined to its connection the same way.
Both keep flow control end to end: a protocol that pauses reading leaves Data in the
connection's buffer, so the tunnel's Pause reaches the sender; a full outgoing queue pauses the
protocol's writer, or the local socket's reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from corral.errors import TunnelClosedError, TunnelError
from corral.tunnel.clock import Timeout
from corral.tunnel.connection import EOF_TEXT, Connection
from corral.tunnel.turn import turn_of

logger = logging.getLogger(__name__)

HIGH_WATER_BYTES = 256 * 1024
"""Queued outgoing bytes above which the writer (or the local socket's reading) is paused."""
LOW_WATER_BYTES = 64 * 1024


class Outbox:
    """Bytes waiting to go out as Data frames, coalesced up to the frame size by one task."""

    def __init__(self, conn: Connection, on_pressure: Callable[[bool], None]) -> None:
        self.conn = conn
        self._on_pressure = on_pressure
        self._chunks: deque[memoryview] = deque()
        self.size = 0
        self._pressured = False
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._sending = False
        self._flush_soon = False
        self.taking = True
        """Whether writes are taken: not once closing, nor once finished."""
        self._loop = asyncio.get_running_loop()  # asked once: each call costs a getpid on 3.11
        self._turn = turn_of(self._loop)
        self._sent_in = -1
        """The number of the turn in which a write last left at once."""
        self.finished: asyncio.Future[bool] = self._loop.create_future()
        """True once everything queued has gone out and the connection was closed cleanly."""
        self._task = conn.host.spawn(self._run(), f"writer {conn.conn_id}")
        if self._task is None:
            self.taking = False
            self.finished.set_result(False)

    def put(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``: at once if it is the first write of this turn of the loop and nothing waits
        before it; else joined with the rest of the turn's."""
        if not self.taking:
            return
        turn = self._turn
        if not self._chunks and not self._sending and self._sent_in != turn.number:
            self._sent_in = turn.number if turn.ending else turn.mark()
            if self.conn.try_write(data):
                return
        self._queue(data)

    def put_read(self, data: bytes) -> None:
        """`put` for what one read of a socket brought: a turn of the loop brings at most one read
        per socket, nothing to join it, so it leaves at once when nothing waits before it."""
        if self.taking and (self._chunks or self._sending or not self.conn.try_write(data)):
            self._queue(data)

    def _queue(self, data: bytes | bytearray | memoryview) -> None:
        self._chunks.append(memoryview(bytes(data) if isinstance(data, bytearray) else data))
        self.size += len(data)
        if not self._flush_soon and not self._sending:
            # what is written in this turn of the loop leaves together, at its end
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        if not self._pressured and self.size > HIGH_WATER_BYTES:
            self._pressured = True
            self._on_pressure(True)

    def _flush(self) -> None:
        """Write what is queued straight onto the wire while that needs no waiting; else wake the task."""
        self._flush_soon = False
        step = self.conn.host.settings.max_frame_payload_bytes
        chunks = self._chunks
        while chunks and not self._sending:
            piece = self._take(step)
            if not self.conn.try_write(piece):
                chunks.appendleft(memoryview(piece))
                break
            self.size -= len(piece)
        if self._pressured and self.size <= LOW_WATER_BYTES:
            self._pressured = False
            self._on_pressure(False)
        if chunks or self._closing:
            self._wake()

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is queued, then close the connection cleanly (Error EOF)."""
        self._closing = True
        self.taking = False
        self._wake()

    def abort(self) -> None:
        self._chunks.clear()
        self.size = 0
        if self._task is not None:
            self._task.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _run(self) -> None:
        conn = self.conn
        step = conn.host.settings.max_frame_payload_bytes
        clean = False
        try:
            while True:
                if not self._chunks:
                    if self._closing:
                        break
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
                    continue
                piece = self._take(step)
                self._sending = True
                try:
                    await conn.write(piece)
                finally:
                    self._sending = False
                self.size -= len(piece)
                if self._pressured and self.size <= LOW_WATER_BYTES:
                    self._pressured = False
                    self._on_pressure(False)
            await conn.close()
            clean = True
        except TunnelClosedError as exc:
            logger.debug("connection %s: %s", conn.conn_id, exc)
        finally:
            self.taking = False
            if not self.finished.done():
                self.finished.set_result(clean)

    def _take(self, step: int) -> bytes | memoryview:
        """Up to ``step`` bytes: small writes joined, large ones cut (views, not copies)."""
        chunks = self._chunks
        first = chunks.popleft()
        if len(first) >= step:
            if len(first) > step:
                chunks.appendleft(first[step:])
                return first[:step]
            return first
        if not chunks or len(first) + len(chunks[0]) > step:
            return first
        parts = [first]
        size = len(first)
        while chunks and size + len(chunks[0]) <= step:
            size += len(chunks[0])
            parts.append(chunks.popleft())
        return b"".join(parts)


class TunnelTransport(asyncio.Transport):
    """An asyncio transport whose bytes travel through one tunnel connection."""

    def __init__(self, conn: Connection, protocol: asyncio.BaseProtocol) -> None:
        super().__init__(extra={"peername": (conn.proto, conn.address)})
        self._conn = conn
        self._protocol = protocol
        self._outbox = Outbox(conn, self._pressure)
        self._closing = False
        self._lost = False
        self._reading_paused = False
        self._protocol.connection_made(self)
        conn.attach(_receiver(protocol), self._ended)  # straight to the protocol, nothing between

    # from the connection
    def _ended(self, reason: str) -> None:
        if reason == EOF_TEXT:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
            if not keep_open:
                self.close()
            return
        self._lose(TunnelClosedError(f"connection {self._conn.conn_id} to {self._conn.address}: {reason}"))

    def _pressure(self, on: bool) -> None:
        if on:
            self._protocol.pause_writing()
        else:
            self._protocol.resume_writing()

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, exc)

    # asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data and not self._closing:  # like asyncio's transports, a closing one drops writes
            self._outbox.put(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False  # remotedialer has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("a tunnelled connection has no half-close")

    def get_write_buffer_size(self) -> int:
        return self._outbox.size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW_WATER_BYTES, HIGH_WATER_BYTES

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Fixed limits (the outbox's); accepted for compatibility."""

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._outbox.close()
        self._outbox.finished.add_done_callback(lambda _: self._lose(None))

    def abort(self) -> None:
        self._closing = True
        self._outbox.abort()
        task = self._conn.host.spawn(self._conn.close_with_error("aborted"), f"abort {self._conn.conn_id}")
        if task is None:
            self._conn.end("aborted", discard=True)
        self._lose(None)

    def pause_reading(self) -> None:
        self._reading_paused = True
        self._conn.set_sink_ready(False)

    def resume_reading(self) -> None:
        self._reading_paused = False
        self._conn.set_sink_ready(True)

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._conn.redirect(_receiver(protocol))

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


def _receiver(protocol: asyncio.BaseProtocol) -> Callable[[bytes | memoryview], None]:
    """What takes received bytes: a protocol's ``data_received``, or for a `asyncio.BufferedProtocol`
    a copy into the buffers it offers."""
    if not isinstance(protocol, asyncio.BufferedProtocol):
        receive: Callable[[bytes | memoryview], None] = protocol.data_received  # type: ignore[attr-defined]
        return receive

    def fill(data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
            size = min(len(buffer), len(view))
            if not size:
                raise TunnelError(f"{type(protocol).__name__}.get_buffer offered an empty buffer")
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]

    return fill


async def open_streams(conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over ``conn`` (closing the writer closes the connection with EOF)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**16, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = TunnelTransport(conn, protocol)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class SocketBridge(asyncio.Protocol):
    """The protocol of an agent's local socket, joined to one tunnel connection.

    `run` returns once either side has ended and the socket is released: closed cleanly after a
    clean end (bounded by the close timeout), aborted after an error or a reader that stopped.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._conn: Connection | None = None
        self._outbox: Outbox | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sink_ready = True

    # asyncio.Protocol (the local socket)
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        outbox = self._outbox
        if outbox is None:
            self._early.append(data)
        else:
            outbox.put_read(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self._outbox is not None:
            self._outbox.close()
        return True  # keep our side open until what we send has left

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        if self._outbox is not None and not self._eof:
            self._outbox.close()

    def pause_writing(self) -> None:
        self._sink_ready = False
        if self._conn is not None:
            self._conn.set_sink_ready(False)

    def resume_writing(self) -> None:
        self._sink_ready = True
        if self._conn is not None:
            self._conn.set_sink_ready(True)

    # the connection's side
    def _pressure(self, on: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if on:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _deliver(self, data: bytes | memoryview) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def pipe(self, conn: Connection) -> None:
        """Pipe until either side ends; always releases the socket and the connection."""
        assert self.transport is not None
        transport = self.transport
        self._conn = conn
        outbox = self._outbox = Outbox(conn, self._pressure)
        for data in self._early:
            outbox.put(data)
        self._early.clear()
        if self._eof or self._lost.done():
            outbox.close()
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_end(reason: str) -> None:
            if not ended.done():
                ended.set_result(reason)

        conn.set_sink_ready(self._sink_ready)
        conn.attach(self._deliver, on_end)
        settings = conn.host.settings
        clean = False
        try:
            await asyncio.wait((ended, outbox.finished, self._lost), return_when=asyncio.FIRST_COMPLETED)
            if ended.done():  # the tunnel side ended: the local side follows
                clean = ended.result() == EOF_TEXT
            elif outbox.finished.done():  # the local side ended and all it sent has left
                clean = outbox.finished.result()
            if clean and not self._lost.done():
                transport.close()  # flushes what the socket still owes
                try:
                    async with Timeout(settings.clock, settings.close_timeout_seconds):
                        await asyncio.shield(self._lost)
                except TimeoutError:
                    clean = False
        finally:
            if clean and outbox.closing and not outbox.finished.done():
                try:  # it is writing our Error EOF (bounded by the send-error timeout)
                    await asyncio.shield(outbox.finished)
                except asyncio.CancelledError:
                    outbox.abort()
                    transport.abort()
                    raise
            outbox.abort()
            if not clean or not self._lost.done():
                transport.abort()
            if not conn.closed:
                await conn.close_with_error(EOF_TEXT if clean else "local connection closed")

"""In-memory twins of the tunnel's seams: a frame transport pair and a byte stream pair.

They behave like their real counterparts where a session can tell the difference: sends wait
when the peer's queue is full (bounded memory, like a socket buffer), pings are answered with
pongs by the receiving side, a text frame can be injected, and closing one end makes the other
end's receive fail after it has drained what was already queued. Like the websocket, a transport
pushes frames to a session that starts reading (`PushReading`), from a callback of the event
loop; ``push=False`` keeps the frames until `receive` asks. Unit tests run sessions over them
with a `FakeClock`, with no sockets and no real time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from corral.errors import TunnelClosedError
from corral.tunnel.transport import Frame, FrameKind, FrameSink, Signal


class MemoryTransport:
    """One end of `memory_pair`; satisfies `FrameTransport`."""

    def __init__(self, name: str, max_queued_frames: int, *, push: bool = True) -> None:
        self.name = name
        self.push = push
        self._sink: FrameSink | None = None
        self._paused = False
        self._pump_soon = False
        self._ended = False
        self.peer: MemoryTransport | None = None
        self._inbox: deque[Frame] = deque()
        self._queued_binary = 0
        self._max_queued = max_queued_frames
        self._changed = Signal()
        self._closed_reason: str | None = None
        self.frames_sent = 0
        self.pings_sent = 0
        self.answer_pings = True
        """Set to False to model a peer whose websocket stack stopped answering pings."""
        self.stuck_close = False
        """Set to True to model a close that cannot finish (a peer that stopped reading)."""

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    def _peer(self) -> MemoryTransport:
        if self._closed_reason is not None:
            raise TunnelClosedError(f"memory transport {self.name} is closed: {self._closed_reason}")
        assert self.peer is not None
        if self.peer._closed_reason is not None:
            raise TunnelClosedError(f"memory transport {self.name}: peer closed: {self.peer._closed_reason}")
        return self.peer

    def _deliver(self, frame: Frame) -> None:
        self._inbox.append(frame)
        if frame.kind is FrameKind.BINARY:
            self._queued_binary += 1
        self._changed.notify()
        self._schedule()

    # -- pushing frames to a sink (`PushReading`) ---------------------------------------------

    def start_reading(self, sink: FrameSink) -> bool:
        if not self.push:
            return False
        self._sink = sink
        self._schedule()
        return True

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._pump()

    def _schedule(self) -> None:
        if self._sink is not None and not self._pump_soon:
            self._pump_soon = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Hand what is queued to the sink, as a socket's protocol does with what one read brought."""
        self._pump_soon = False
        sink = self._sink
        if sink is None or self._ended:
            return
        inbox = self._inbox
        while inbox and not self._paused:
            frame = inbox.popleft()
            kind = frame.kind
            if kind is FrameKind.BINARY:
                self._queued_binary -= 1
                self._changed.notify()
                sink.frame_received(frame.data)
            elif kind is FrameKind.TEXT:
                sink.text_received()
            else:
                if kind is FrameKind.PING and self.answer_pings:
                    self._answer_ping()
                sink.keepalive_received()
        if not inbox and not self._ended:
            reason = None
            if self._closed_reason is not None:
                reason = f"memory transport {self.name} is closed: {self._closed_reason}"
            elif self.peer is not None and self.peer._closed_reason is not None:
                reason = f"memory transport {self.name}: peer closed: {self.peer._closed_reason}"
            if reason is not None:
                self._ended = True
                sink.transport_ended(reason)

    async def send(self, frame: bytes, payload: bytes | memoryview = b"") -> None:
        peer = self._peer()
        while peer._queued_binary >= peer._max_queued:
            await peer._changed.wait()
            peer = self._peer()
        peer._deliver(Frame(FrameKind.BINARY, bytes(frame) + payload))
        self.frames_sent += 1

    def try_send(self, frame: bytes, payload: bytes | memoryview = b"") -> bool:
        if self._closed_reason is not None or self.peer is None or self.peer._closed_reason is not None:
            return False
        if self.peer._queued_binary >= self.peer._max_queued:
            return False
        self.peer._deliver(Frame(FrameKind.BINARY, bytes(frame) + payload))
        self.frames_sent += 1
        return True

    async def send_text(self, text: str) -> None:
        """Inject a text message (remotedialer peers never send one; receivers must end the session)."""
        self._peer()._deliver(Frame(FrameKind.TEXT, text.encode()))

    async def ping(self) -> None:
        self._peer()._deliver(Frame(FrameKind.PING))
        self.pings_sent += 1

    async def receive(self) -> Frame:
        while not self._inbox:
            if self._closed_reason is not None:
                raise TunnelClosedError(f"memory transport {self.name} is closed: {self._closed_reason}")
            if self.peer is not None and self.peer._closed_reason is not None:
                raise TunnelClosedError(
                    f"memory transport {self.name}: peer closed: {self.peer._closed_reason}"
                )
            await self._changed.wait()
        frame = self._inbox.popleft()
        if frame.kind is FrameKind.BINARY:
            self._queued_binary -= 1
            self._changed.notify()
        elif frame.kind is FrameKind.PING and self.answer_pings:
            self._answer_ping()
        return frame

    def _answer_ping(self) -> None:
        peer = self.peer
        if peer is not None and not self.closed and not peer.closed:
            peer._deliver(Frame(FrameKind.PONG))

    async def close(self, reason: str = "") -> None:
        if self.stuck_close:
            await Signal().wait()  # a close handshake that the peer never answers
        self.abort(reason)

    def abort(self, reason: str = "") -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason or "closed"
        self._inbox.clear()
        self._queued_binary = 0
        self._changed.notify()
        self._schedule()
        if self.peer is not None:
            self.peer._changed.notify()
            self.peer._schedule()


def memory_pair(*, max_queued_frames: int = 16, push: bool = True) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory frame transports (by convention: server end, client end).

    ``push=False``: sessions read them with `MemoryTransport.receive` (a transport that cannot push).
    """
    a = MemoryTransport("server", max_queued_frames, push=push)
    b = MemoryTransport("client", max_queued_frames, push=push)
    a.peer, b.peer = b, a
    return a, b


class MemoryStream:
    """One end of `stream_pair`; satisfies `Stream` (a full-duplex pipe with bounded buffers)."""

    def __init__(self, limit_bytes: int) -> None:
        self.peer: MemoryStream | None = None
        self._buffer = bytearray()
        self._limit = limit_bytes
        self._changed = Signal()
        self._eof = False
        self.closed = False

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer:
            if self._eof or self.closed:
                return b""
            await self._changed.wait()
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._changed.notify()
        return chunk

    async def write(self, data: bytes) -> None:
        assert self.peer is not None
        view = memoryview(data)
        while view:
            if self.closed or self.peer.closed:
                raise BrokenPipeError("memory stream is closed")
            space = self.peer._limit - len(self.peer._buffer)
            if space <= 0:
                await self.peer._changed.wait()
                continue
            self.peer._buffer += view[:space]
            view = view[space:]
            self.peer._changed.notify()

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._buffer.clear()
        self._changed.notify()
        if self.peer is not None:
            self.peer._eof = True
            self.peer._changed.notify()


def stream_pair(*, limit_bytes: int = 256 * 1024) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory byte streams, each direction buffering at most ``limit_bytes``."""
    a, b = MemoryStream(limit_bytes), MemoryStream(limit_bytes)
    a.peer, b.peer = b, a
    return a, b

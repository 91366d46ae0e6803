"""Seams of the tunnel: a frame transport under a session, a byte stream at each end.

A `FrameTransport` moves whole frames (one websocket message each) and reports the keepalive
control frames, so a session can extend its read deadline on ping and pong as remotedialer does.
Transports answer pings with pongs themselves. The in-memory pair (`corral.tunnel.memory`) and
the websocket (`corral.tunnel.websocket`) both satisfy it, and the same generic check
(`corral.tunnel.testing`) runs on both. A transport that can also hand each frame to a
`FrameSink` as it arrives (`PushReading`, the websocket) spares the session a wake-up per frame.

A `Stream` is the byte stream a client session pipes a tunnelled connection into (a local TCP
or unix socket in production, an in-memory pipe in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from corral.tunnel.connection import Connection


class Signal:
    """Wake every waiter once; waiters re-check their condition (a condition variable for one loop)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class FrameKind(enum.Enum):
    BINARY = "binary"
    TEXT = "text"
    PING = "ping"
    PONG = "pong"


@dataclass(frozen=True, slots=True)
class Frame:
    """One received websocket message (binary or text) or keepalive control frame."""

    kind: FrameKind
    data: bytes = b""


class FrameTransport(Protocol):
    """Frames in, frames out. `receive` raises `TunnelClosedError` once the transport has ended."""

    async def send(self, frame: bytes, payload: bytes | memoryview = b"") -> None:
        """Send one binary message, ``frame`` then ``payload``; waits while the outgoing buffer is full."""

    def try_send(self, frame: bytes, payload: bytes | memoryview = b"") -> bool:
        """`send` now if that needs no waiting; False (nothing sent) otherwise."""

    async def receive(self) -> Frame:
        """The next binary/text message, or a ping/pong that arrived (pings are already answered)."""

    async def ping(self) -> None:
        """Send a ping control frame."""

    async def close(self, reason: str = "") -> None:
        """End the transport; the peer's `receive` then raises `TunnelClosedError`."""

    def abort(self) -> None:
        """End the transport at once, dropping whatever is unsent (a close that cannot finish)."""


class FrameSink(Protocol):
    """What a `PushReading` transport calls, in the turn of the event loop a frame arrived in."""

    def frame_received(self, data: bytes | bytearray | memoryview) -> None:
        """One binary message (the buffer is the receiver's: nobody writes to it afterwards)."""

    def text_received(self) -> None:
        """A text message arrived (remotedialer peers never send one)."""

    def keepalive_received(self) -> None:
        """A ping (already answered) or a pong arrived."""

    def transport_ended(self, reason: str) -> None:
        """No more frames will come: the peer closed, the connection was lost or the input was bad."""


@runtime_checkable
class PushReading(Protocol):
    """A `FrameTransport` that can call a `FrameSink` for every frame instead of being asked."""

    def start_reading(self, sink: FrameSink) -> bool:
        """Call ``sink`` from now on (`receive` must not be used then); False if this one cannot."""

    def pause_reading(self) -> None:
        """Call the sink no more (and stop reading the socket) until `resume_reading`."""

    def resume_reading(self) -> None:
        """Hand on what arrived meanwhile, then read again."""


class Stream(Protocol):
    """A byte stream: read returns b"" at end of stream."""

    async def read(self, n: int = -1) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    def abort(self) -> None:
        """Close at once, dropping unsent bytes (the reader stopped, or the connection failed)."""


@runtime_checkable
class Pipe(Protocol):
    """A local end that joins a connection itself (no copy loops): `corral.tunnel.bridge`."""

    async def pipe(self, conn: Connection) -> None:
        """Carry bytes both ways until either side ends; release everything before returning."""

    def abort(self) -> None:
        """Drop the local end at once."""


LocalDialer = Callable[[str, str], Awaitable[Stream | Pipe]]
"""``(proto, address) -> Stream | Pipe``: how a client session reaches what the server asked for."""


class AsyncioStream:
    """A `Stream` over asyncio's (StreamReader, StreamWriter)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n if n > 0 else 65536)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    def abort(self) -> None:
        self.writer.transport.abort()


MAX_HOST_CHARS = 253


def parse_tcp_address(proto: str, address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as Go's net.SplitHostPort reads it; `OSError` naming the fault.

    The port is ASCII digits in 0..65535; the host is an IP literal or a name that IDNA can
    encode, with no control characters or spaces. Peers choose these bytes, so nothing else may
    reach the resolver.
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        raise OSError(f"dial {proto} {address}: missing port in address")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise OSError(f"dial {proto} {address}: invalid port {port!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise OSError(f"dial {proto} {address}: missing ']' in address")
        host = host[1:-1]
    elif ":" in host:
        raise OSError(f"dial {proto} {address}: too many colons in address")
    if not host or len(host) > MAX_HOST_CHARS or not host.isprintable() or any(c.isspace() for c in host):
        raise OSError(f"dial {proto} {address}: invalid host {host!r}")
    if not host.isascii():
        try:
            host.encode("idna")
        except UnicodeError as exc:
            raise OSError(f"dial {proto} {address}: invalid host {host!r}: {exc}") from None
    elif ":" not in host and any(len(label) > 63 for label in host.split(".")):
        raise OSError(f"dial {proto} {address}: invalid host {host!r}: a label is longer than 63")
    return host, int(port)


async def dial_local(proto: str, address: str) -> Stream | Pipe:
    """Dial ``tcp`` (host:port) or ``unix`` (path) like Go's net.Dialer; errors are OSError.

    The socket's protocol is joined to the tunnel connection directly (`SocketBridge`).
    """
    from corral.tunnel.bridge import SocketBridge  # the bridge builds on the connection module

    loop = asyncio.get_running_loop()
    bridge = SocketBridge()
    if proto in ("tcp", "tcp4", "tcp6"):
        host, port = parse_tcp_address(proto, address)
        await loop.create_connection(lambda: bridge, host, port)
        return bridge
    if proto == "unix":
        if "\x00" in address or not address:
            raise OSError(f"dial {proto} {address!r}: invalid socket path")
        await loop.create_unix_connection(lambda: bridge, address)
        return bridge
    raise OSError(f"dial {proto} {address}: unknown network {proto}")

"""Seams of the tunnel: a frame transport under a session, a byte stream at each end.

A `FrameTransport` moves whole frames (one websocket message each) and reports the keepalive
control frames, so a session can extend its read deadline on ping and pong as remotedialer does.
Transports answer pings with pongs themselves. The in-memory pair (`corral.tunnel.memory`) and
the aiohttp websocket (`corral.tunnel.websocket`) both satisfy it, and the same generic check
(`corral.tunnel.testing`) runs on both.

A `Stream` is the byte stream a client session pipes a tunnelled connection into (a local TCP
or unix socket in production, an in-memory pipe in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


class Signal:
    """Wake every waiter once; waiters re-check their condition (a condition variable for one loop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
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

    async def send(self, frame: bytes) -> None:
        """Send one binary message; waits while the transport's outgoing buffer is full."""

    async def receive(self) -> Frame:
        """The next binary/text message, or a ping/pong that arrived (pings are already answered)."""

    async def ping(self) -> None:
        """Send a ping control frame."""

    async def close(self, reason: str = "") -> None:
        """End the transport; the peer's `receive` then raises `TunnelClosedError`."""


class Stream(Protocol):
    """A byte stream: read returns b"" at end of stream."""

    async def read(self, n: int = -1) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


LocalDialer = Callable[[str, str], Awaitable[Stream]]
"""``(proto, address) -> Stream``: how a client session reaches what the server asked for."""


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


async def dial_local(proto: str, address: str) -> Stream:
    """Dial ``tcp`` (host:port) or ``unix`` (path) like Go's net.Dialer; errors are OSError."""
    if proto in ("tcp", "tcp4", "tcp6"):
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise OSError(f"dial {proto} {address}: missing port in address")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        return AsyncioStream(reader, writer)
    if proto == "unix":
        reader, writer = await asyncio.open_unix_connection(address)
        return AsyncioStream(reader, writer)
    raise OSError(f"dial {proto} {address}: unknown network {proto}")

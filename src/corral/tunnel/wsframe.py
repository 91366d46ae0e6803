"""Websocket binary frames written straight onto an asyncio transport by the tunnel's own encoder.

A tunnel sends nothing but whole, unfragmented binary messages, one per remotedialer message, so
it needs none of a general frame writer's work: the header is packed here, the payload masked
from the client side (RFC 6455 5.3, keys from the OS's random source) and left as it is from
the server side. The first frame of a turn of the event loop leaves at once; the frames written
after it in the same turn are kept and leave together, at the end of the turn, in one transport
write (the turn's end is the loop's shared `corral.tunnel.turn.Turn`: no call scheduled per
frame). The transport's write buffer, plus what is kept, is the back-pressure a sender sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from typing import Protocol

from corral.tunnel.turn import turn_of

logger = logging.getLogger(__name__)

OPCODE_BINARY = 0x2
FIN = 0x80
MASK_BIT = 0x80
HIGH_WATER_BYTES = 256 * 1024
"""Bytes waiting to go out (kept here and in the transport) above which a sender must wait."""
MASK_KEYS_BYTES = 4096
"""Random bytes drawn from the OS at a time for masking keys (4 per frame)."""

_PACK_SHORT = struct.Struct("!BB").pack
_PACK_MEDIUM = struct.Struct("!BBH").pack
_PACK_LONG = struct.Struct("!BBQ").pack


class _Mask(Protocol):
    def __call__(self, mask: bytes, data: bytearray) -> None: ...


def _mask_python(mask: bytes, data: bytearray) -> None:
    """XOR ``data`` in place with the repeated 4-byte ``mask`` (RFC 6455 5.3)."""
    if not data:
        return
    size = len(data)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
    data[:] = (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


def _find_mask() -> _Mask:
    """aiohttp's compiled masking when it is there (the same bytes, several times faster)."""
    try:
        from aiohttp._websocket.helpers import websocket_mask
    except ImportError:  # pragma: no cover - aiohttp moved it; the pure version is correct too
        return _mask_python
    return websocket_mask


mask_payload: _Mask = _find_mask()


def frame_header(size: int, *, masked: bool, opcode: int = OPCODE_BINARY) -> bytes:
    """The header of one final (unfragmented) frame of ``size`` payload bytes, without the key."""
    bit = MASK_BIT if masked else 0
    if size < 126:
        return _PACK_SHORT(FIN | opcode, size | bit)
    if size < 65536:
        return _PACK_MEDIUM(FIN | opcode, 126 | bit, size)
    return _PACK_LONG(FIN | opcode, 127 | bit, size)


class FrameWriter:
    """Binary frames onto ``transport``; masked when ``masked`` (the client side of a websocket)."""

    __slots__ = (
        "_flush_soon",
        "_kept",
        "_keys",
        "_keys_at",
        "_loop",
        "_turn",
        "_written_in",
        "high_water_bytes",
        "kept_bytes",
        "masked",
        "transport",
    )

    def __init__(
        self, transport: asyncio.WriteTransport, *, masked: bool, high_water_bytes: int = HIGH_WATER_BYTES
    ) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()  # asked once: each call costs a getpid on 3.11
        self.masked = masked
        self.high_water_bytes = high_water_bytes
        self._kept: list[bytes | bytearray | memoryview] = []
        self.kept_bytes = 0
        """Encoded bytes waiting for the end of this turn of the loop."""
        self._turn = turn_of(self._loop)
        self._written_in = -1
        """The number of the turn a frame last left in at once."""
        self._flush_soon = False
        self._keys = b""
        self._keys_at = 0

    def has_room(self) -> bool:
        """Whether a sender may write now (what waits to go out is below the high-water mark); a
        closing transport, which drops writes and may no longer tell its buffer's size, has room."""
        transport = self.transport
        return (
            transport.is_closing()
            or self.kept_bytes + transport.get_write_buffer_size() < self.high_water_bytes
        )

    def write(
        self,
        head: bytes | bytearray | memoryview,
        tail: bytes | bytearray | memoryview = b"",
        *,
        opcode: int = OPCODE_BINARY,
    ) -> None:
        """Encode one binary message of ``head`` then ``tail`` (a Data frame's header and its bytes,
        never joined but to mask them); it leaves now, or with the rest of this turn's at its end.
        ``opcode``: a control frame instead (a pong), kept in order with the messages."""
        size = len(head) + len(tail)
        first = FIN | opcode
        parts: tuple[bytes | bytearray | memoryview, ...]
        if self.masked:  # frame_header and the next key, inline: this runs for every message
            at = self._keys_at
            if at + 4 > len(self._keys):
                self._keys = os.urandom(MASK_KEYS_BYTES)
                at = 0
            self._keys_at = at + 4
            key = self._keys[at : at + 4]
            body = bytearray(head)
            body += tail
            mask_payload(key, body)
            if size < 126:
                parts = (_PACK_SHORT(first, size | MASK_BIT) + key, body)
            elif size < 65536:
                parts = (_PACK_MEDIUM(first, 126 | MASK_BIT, size) + key, body)
            else:
                parts = (_PACK_LONG(first, 127 | MASK_BIT, size) + key, body)
        elif size < 1024:
            header = _PACK_SHORT(first, size) if size < 126 else _PACK_MEDIUM(first, 126, size)
            parts = (b"".join((header, head, tail)),)
        elif size < 65536:
            parts = (_PACK_MEDIUM(first, 126, size) + head, tail)
        else:
            parts = (_PACK_LONG(first, 127, size) + head, tail)
        if self._kept or self._written_in == self._turn.number:  # a frame left in this turn already
            self._kept.extend(parts)
            self.kept_bytes += size + len(parts[0])
            if not self._flush_soon:
                self._flush_soon = True
                self._loop.call_soon(self.flush)
            return
        turn = self._turn
        self._written_in = turn.number if turn.ending else turn.mark()
        self.transport.writelines(parts)

    def try_write(self, head: bytes | bytearray | memoryview, tail: bytes | bytearray | memoryview) -> bool:
        """`write` if there is room (`has_room`) and the transport is not closing; False otherwise."""
        transport = self.transport
        if transport.is_closing():  # first: a closed TLS transport of asyncio's cannot tell its buffer
            return False
        if self.kept_bytes + transport.get_write_buffer_size() >= self.high_water_bytes:
            return False
        self.write(head, tail)
        return True

    def flush(self) -> None:
        """Hand what is kept to the transport now, in one write (at the end of a turn that kept some)."""
        self._flush_soon = False
        if not self._kept:
            return
        kept, self._kept = self._kept, []
        self.kept_bytes = 0
        if self.transport.is_closing():
            return  # the connection is gone; so is whatever it still had to send
        self.transport.writelines(kept)

    def _next_key(self) -> bytes:
        at = self._keys_at
        if at + 4 > len(self._keys):
            self._keys = os.urandom(MASK_KEYS_BYTES)
            at = 0
        self._keys_at = at + 4
        return self._keys[at : at + 4]

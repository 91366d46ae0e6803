"""Tunnel frames: the pure encoder and decoder of rancher/remotedialer's wire format.

One binary websocket message carries one frame::

    varint(message_id) varint(conn_id) varint(type) [varint(deadline) if Data/Connect] payload

Every varint is Go's ``binary.PutVarint`` (zig-zag signed LEB128, at most 10 bytes). The deadline
is legacy: we always send 15000 and read it back only to report it. The decoder keeps at most as
many payload bytes as remotedialer reads (Connect 266, Error/AddClient/RemoveClient 100), so the
same bytes mean the same thing on both sides. No I/O here: this module is what the fuzzer and the
property tests hammer.
"""

from __future__ import annotations

import enum
import itertools
import random
import re
from dataclasses import dataclass

from corral.errors import ProtocolError

LEGACY_DEADLINE_MS = 15000
"""The deadline value remotedialer writes on Data and Connect frames (and nobody reads)."""

MAX_VARINT_BYTES = 10
CONNECT_READ_LIMIT = 266
ERROR_READ_LIMIT = 100
CLIENT_READ_LIMIT = 100

Buffer = bytes | bytearray | memoryview
"""What the decoder reads: a websocket message's bytes, copied or not."""

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MASK = (1 << 64) - 1


class MessageType(enum.IntEnum):
    """Frame types, numbered as in remotedialer's message.go."""

    DATA = 1
    CONNECT = 2
    ERROR = 3
    ADD_CLIENT = 4
    REMOVE_CLIENT = 5
    PAUSE = 6
    RESUME = 7
    SYNC_CONNECTIONS = 8


_WITH_DEADLINE = frozenset({MessageType.DATA, MessageType.CONNECT})
_READ_LIMITS = {
    MessageType.CONNECT: CONNECT_READ_LIMIT,
    MessageType.ERROR: ERROR_READ_LIMIT,
    MessageType.ADD_CLIENT: CLIENT_READ_LIMIT,
    MessageType.REMOVE_CLIENT: CLIENT_READ_LIMIT,
}


class UnknownMessageTypeError(ProtocolError):
    """A well-formed header names a type remotedialer does not define (peers ignore such frames)."""

    def __init__(self, message: str, *, type_value: int, conn_id: int) -> None:
        super().__init__(message)
        self.type_value = type_value
        self.conn_id = conn_id


@dataclass(frozen=True, slots=True)
class Message:
    """One tunnel frame. ``deadline_ms`` is only on the wire for Data and Connect."""

    message_id: int
    conn_id: int
    type: MessageType
    payload: bytes = b""
    deadline_ms: int = LEGACY_DEADLINE_MS

    def connect_target(self) -> tuple[str, str]:
        """Split a Connect payload ``<proto>/<address>`` (the address may itself contain ``/``)."""
        proto, sep, address = self.payload.partition(b"/")
        if not sep:
            raise ProtocolError(f"connect payload {self.payload[:64]!r} has no '/' between proto and address")
        return proto.decode("utf-8", "replace"), address.decode("utf-8", "replace")

    def error_text(self) -> str:
        """The text of an Error frame, made printable; ``EOF`` means a graceful close.

        A character cut by remotedialer's 100-byte read is dropped, not turned into U+FFFD.
        """
        return printable(_decode_cut(self.payload))


def _decode_cut(data: bytes) -> str:
    """UTF-8 text of ``data`` whose last character may have been cut off (dropped then)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8", "replace")
        return data.decode("utf-8", "replace")


def utf8_prefix(text: str, limit: int) -> bytes:
    """The UTF-8 bytes of ``text`` cut to at most ``limit`` bytes on a character boundary."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:  # never start the cut inside a character
        cut -= 1
    return data[:cut]


def printable(text: str, limit: int = 512) -> str:
    """``text`` safe to log: control and other unprintable characters escaped, at most ``limit``.

    Everything a peer sends (addresses, Error texts, close messages) goes through this before it
    reaches a reason, an exception or a log line, so a peer cannot forge log lines.
    """
    if text.isprintable() and len(text) <= limit:
        return text
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return out if len(text) <= limit else out + f"...({len(text) - limit} more characters)"


# -- varints ----------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Go's binary.PutVarint: zig-zag, then unsigned LEB128."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ProtocolError(f"varint value {value} is outside the int64 range")
    ux = ((value << 1) ^ (value >> 63)) & _UINT64_MASK
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out)


def decode_varint(data: Buffer, offset: int, field: str) -> tuple[int, int]:
    """Go's binary.ReadVarint from ``data[offset:]``; returns (value, next offset)."""
    ux = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        pos = offset + i
        if pos >= len(data):
            raise ProtocolError(f"truncated varint in {field} at byte {offset} (frame of {len(data)} bytes)")
        b = data[pos]
        if b < 0x80:
            if i == MAX_VARINT_BYTES - 1 and b > 1:
                raise ProtocolError(f"varint in {field} at byte {offset} overflows 64 bits")
            ux |= b << shift
            value = ux >> 1
            if ux & 1:
                value = ~value
            return value, pos + 1
        ux |= (b & 0x7F) << shift
        shift += 7
    raise ProtocolError(f"varint in {field} at byte {offset} is longer than {MAX_VARINT_BYTES} bytes")


# -- frames -----------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """The bytes of one binary websocket message for ``message``."""
    parts = [
        encode_varint(message.message_id),
        encode_varint(message.conn_id),
        encode_varint(int(message.type)),
    ]
    if message.type in _WITH_DEADLINE:
        parts.append(encode_varint(message.deadline_ms))
    parts.append(message.payload)
    return b"".join(parts)


def decode(data: Buffer) -> Message:
    """Parse one frame; anything malformed raises `ProtocolError` naming the field."""
    message_id, pos = decode_varint(data, 0, "message id")
    conn_id, pos = decode_varint(data, pos, "connection id")
    type_value, pos = decode_varint(data, pos, "message type")
    try:
        mtype = MessageType(type_value)
    except ValueError:
        text = f"unknown message type {type_value} on connection {conn_id}"
        raise UnknownMessageTypeError(text, type_value=type_value, conn_id=conn_id) from None
    deadline = LEGACY_DEADLINE_MS
    if mtype in _WITH_DEADLINE:
        deadline, pos = decode_varint(data, pos, "deadline")
    limit = _READ_LIMITS.get(mtype)
    payload = bytes(data[pos:]) if limit is None else bytes(data[pos : pos + limit])
    message = Message(message_id, conn_id, mtype, payload, deadline)
    if mtype is MessageType.CONNECT:
        message.connect_target()
    return message


def _skip_varint(data: Buffer, pos: int) -> int:
    """The offset after a varint of at most 9 bytes at ``pos``; -1 if it is longer or cut off."""
    end = min(len(data), pos + MAX_VARINT_BYTES - 1)
    while pos < end:
        if data[pos] < 0x80:
            return pos + 1
        pos += 1
    return -1


_DATA_HEAD = re.compile(
    rb"[\x80-\xff]{0,8}[\x00-\x7f]"  # the message id, skipped: a varint of at most 9 bytes
    rb"(?:([\x00-\x7f])|([\x80-\xff])([\x00-\x7f]))"  # the connection id in one byte, or in two
    rb"\x02"  # the type: varint(1), Data
    rb"[\x80-\xff]{0,8}[\x00-\x7f]"  # the deadline, skipped
).match
"""The head of a Data frame whose connection id is below 8192, matched in one call."""
_ONE_BYTE_IDS = tuple((ux >> 1) ^ -(ux & 1) for ux in range(128))
"""Connection ids by their one-byte varint (zig-zag)."""


def split_data(data: Buffer) -> tuple[int, memoryview] | None:
    """``(conn_id, payload)`` of a well-formed Data frame, without copying its payload; else None.

    The session's fast path: the usual frame's head (connection ids below 8192) is matched by one
    regular expression; other Data frames take `_split_data`, and anything that is not plainly
    Data (or has a 10-byte varint, whose last byte `decode` must check) goes through `decode`.
    """
    head = _DATA_HEAD(data)
    if head is None:
        return _split_data(data)
    one = head[1]
    if one is not None:
        return _ONE_BYTE_IDS[one[0]], memoryview(data)[head.end() :]
    ux = (head[2][0] & 0x7F) | (head[3][0] << 7)
    return (ux >> 1) ^ -(ux & 1), memoryview(data)[head.end() :]


def _split_data(data: Buffer) -> tuple[int, memoryview] | None:
    """`split_data` byte by byte, for connection ids of any size."""
    size = len(data)
    end = size if size < MAX_VARINT_BYTES - 1 else MAX_VARINT_BYTES - 1
    pos = 0  # the message id: skipped (at most 9 bytes here)
    while pos < end and data[pos] >= 0x80:
        pos += 1
    if pos >= end:
        return None
    pos += 1
    if pos + 1 >= size:
        return None
    if _skip_varint(data, pos) < 0:
        return None
    conn_id, pos = decode_varint(data, pos, "connection id")
    if pos >= size or data[pos] != 2:  # varint(1), the Data type, is the single byte 2
        return None
    pos += 1
    end = size if size < pos + MAX_VARINT_BYTES - 1 else pos + MAX_VARINT_BYTES - 1
    while pos < end and data[pos] >= 0x80:  # the deadline: skipped
        pos += 1
    if pos >= end:
        return None
    return conn_id, memoryview(data)[pos + 1 :]


# -- constructors, each taking the next message id --------------------------------------------

_ids = itertools.count(random.randrange(1 << 40))  # noqa: S311 - ids only label frames in logs


def next_id() -> int:
    """A process-wide message id (remotedialer seeds its counter randomly; receivers ignore it)."""
    return next(_ids)


_DATA_TRAILER = encode_varint(int(MessageType.DATA)) + encode_varint(LEGACY_DEADLINE_MS)


def data_header(conn_id: int) -> bytes:
    """What precedes a Data payload for ``conn_id``: encode(data(...)) is this plus the payload.

    The message id is fixed per connection (receivers never read it; remotedialer numbers them
    only to label its logs), so a writer builds a Data frame with one concatenation.
    """
    return encode_varint(next_id()) + encode_varint(conn_id) + _DATA_TRAILER


def data(conn_id: int, payload: bytes) -> Message:
    return Message(next_id(), conn_id, MessageType.DATA, payload)


def connect(conn_id: int, proto: str, address: str) -> Message:
    return Message(next_id(), conn_id, MessageType.CONNECT, f"{proto}/{address}".encode())


def error(conn_id: int, text: str) -> Message:
    """Error with ``text`` cut, on a character boundary, to what remotedialer reads of it."""
    return Message(next_id(), conn_id, MessageType.ERROR, utf8_prefix(text, ERROR_READ_LIMIT))


def pause(conn_id: int) -> Message:
    return Message(next_id(), conn_id, MessageType.PAUSE)


def resume(conn_id: int) -> Message:
    return Message(next_id(), conn_id, MessageType.RESUME)


def sync_connections(conn_ids: list[int]) -> Message:
    """SyncConnections: the sender's live connection ids as little-endian uint64s."""
    payload = b"".join((cid & _UINT64_MASK).to_bytes(8, "little") for cid in sorted(conn_ids))
    return Message(next_id(), 0, MessageType.SYNC_CONNECTIONS, payload)


def decode_connection_ids(payload: bytes) -> list[int]:
    """The ids of a SyncConnections payload (int64, as remotedialer casts them)."""
    if len(payload) % 8:
        raise ProtocolError(f"sync connections payload of {len(payload)} bytes is not a multiple of 8")
    ids = []
    for i in range(0, len(payload), 8):
        u = int.from_bytes(payload[i : i + 8], "little")
        ids.append(u - (1 << 64) if u > _INT64_MAX else u)
    return ids

"""Websocket frames parsed by the tunnel's own reader, straight from the bytes a socket delivers.

The reading half of `corral.tunnel.wsframe`: RFC 6455 frames are parsed as bytes arrive and each
whole message (a binary or text message with its fragments joined, or a control frame) goes to a
callback at once, in the same turn of the event loop: no queue and no task between the socket
and the session. Bad input raises `FrameError` with the close code to answer with and a precise
text. No I/O here, so the fuzzer and the property tests drive it directly.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from functools import partial

from corral.errors import ProtocolError
from corral.tunnel.message import printable
from corral.tunnel.wsframe import mask_payload

logger = logging.getLogger(__name__)

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_DATA_OPCODES = (OPCODE_TEXT, OPCODE_BINARY)
_CONTROL_OPCODES = (OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG)

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009
MAX_CONTROL_PAYLOAD_BYTES = 125
_RECEIVABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
"""Close codes a peer may send (RFC 6455 7.4.1, and the registry's 1012-1014); 3000-4999 too."""

_UNPACK_SHORT = struct.Struct("!H").unpack_from
_UNPACK_LONG = struct.Struct("!Q").unpack_from

OnMessage = Callable[[int, bytes | bytearray | memoryview], None]
"""``(opcode, payload)`` of one whole message or control frame."""
OnBinary = Callable[[bytes | bytearray | memoryview], None]
"""``payload`` of one whole binary message."""


class FrameError(ProtocolError):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    def __init__(self, message: str, *, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def parse_close(payload: bytes | bytearray | memoryview) -> tuple[int | None, str]:
    """The status code (None if there is none) and reason of a Close frame; `FrameError` if invalid."""
    if not payload:
        return None, ""
    if len(payload) < 2:
        raise FrameError("close frame of 1 byte: a status code takes 2")
    code = (payload[0] << 8) | payload[1]
    if code not in _RECEIVABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(f"close frame with invalid status code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("close frame reason is not UTF-8", code=CLOSE_INVALID_DATA) from None
    return code, reason


class FrameParser:
    """RFC 6455 frames in, whole messages out to ``on_message``.

    ``masked``: frames must carry a masking key (a server reads a client's frames) or must not (a
    client reads a server's), as gorilla/websocket checks. Messages past ``max_message_bytes``
    (their fragments together) are refused as soon as a frame header announces it.

    While `paused`, bytes are kept, not parsed; the callback may pause the parser, and parsing then
    stops right after the message it was given (`resume` goes on from there). After a Close frame
    the parser reads nothing more; after an error, neither.

    Binary messages go to `on_binary` (by default ``on_message`` with the binary opcode), which
    its owner may replace at any time: a session takes them with no call in between. A read that
    is exactly one final binary frame, the usual case, is parsed in `feed` itself.
    """

    __slots__ = (
        "_done",
        "_frame",
        "_max",
        "_message",
        "_message_opcode",
        "_need",
        "_on_message",
        "_partial",
        "_rest",
        "masked",
        "on_binary",
        "paused",
    )

    def __init__(self, on_message: OnMessage, *, masked: bool, max_message_bytes: int) -> None:
        self._on_message = on_message
        self.on_binary: OnBinary = partial(on_message, OPCODE_BINARY)
        self.masked = masked
        self._max = max_message_bytes
        self.paused = False
        self._done = False
        self._rest = b""
        """Unparsed bytes: a frame header cut short, or what arrived while paused."""
        self._need = 0
        """Bytes of the current frame's payload still to come (its first bytes are in ``_partial``)."""
        self._partial = bytearray()
        self._frame: tuple[bool, int, bytes] = (True, 0, b"")
        """(fin, opcode, masking key) of the frame whose payload is being collected."""
        self._message_opcode = 0
        """Opcode of a fragmented message being joined, 0 when there is none."""
        self._message = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed, of a frame being collected, of a fragmented message being joined."""
        return len(self._rest) + len(self._partial) + len(self._message)

    @property
    def done(self) -> bool:
        """A Close frame was read, or the input was bad: nothing more will be parsed."""
        return self._done

    def stop(self) -> None:
        """Parse nothing more (the connection is closing); drops what is held."""
        self._done = True
        self._rest = b""
        self._partial = bytearray()
        self._message = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:  # noqa: PLR0912 - the usual frame inline
        """Parse ``data``, handing every whole message to the callback; `FrameError` on bad input."""
        if self._done:
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        elif not (self._rest or self._need or self.paused or self._message_opcode):
            # One final binary frame, with no extension bits, that is the whole read: the usual
            # case, parsed here. Anything else (or a length over the limit) takes the general way.
            size = len(data)
            if size > 2 and data[0] == 0x82 and (data[1] >= 0x80) is self.masked:
                length = data[1] & 0x7F
                start = 2
                if length == 126 and size > 4:
                    length = (data[2] << 8) | data[3]
                    start = 4
                if length < 126 or start == 4:
                    if not self.masked:
                        if start + length == size and length <= self._max:
                            self.on_binary(memoryview(data)[start:])
                            return
                    elif start + 4 + length == size and length <= self._max:
                        payload = bytearray(memoryview(data)[start + 4 :])
                        if length:
                            mask_payload(data[start : start + 4], payload)
                        self.on_binary(payload)
                        return
        if self._rest:
            data = self._rest + data
            self._rest = b""
        if self.paused:
            self._rest = data
            return
        try:
            self._parse(data)
        except FrameError:
            self.stop()
            raise

    def resume(self) -> None:
        """Stop pausing and parse what was kept meanwhile."""
        self.paused = False
        if self._rest and not self._done:
            rest, self._rest = self._rest, b""
            self.feed(rest)

    def _parse(self, data: bytes) -> None:
        size = len(data)
        view = memoryview(data)
        pos = self._finish_frame(view) if self._need else 0
        while pos < size:
            if self.paused or self._done:
                if not self._done:
                    self._rest = data[pos:]
                return
            header = self._header(data, pos, size)
            if header is None:  # cut short: the rest comes with the next read
                self._rest = data[pos:]
                return
            start, length, fin, opcode, key = header
            end = start + length
            if end > size:  # the rest of the payload is in later reads
                self._partial = bytearray(view[start:])
                self._need = end - size
                self._frame = (fin, opcode, key)
                return
            payload: bytes | bytearray | memoryview
            if key:
                payload = bytearray(view[start:end])
                if length:
                    mask_payload(key, payload)
            elif pos == 0 and end == size:
                payload = view[start:end]  # the whole read: kept as it is, a header more
            else:
                payload = data[start:end]  # a copy: a message never pins more than its own bytes
            pos = end
            self._frame_done(fin, opcode, payload)

    def _finish_frame(self, view: memoryview) -> int:
        """Take what the frame being collected still needs from ``view``; returns how much was taken."""
        take = min(self._need, len(view))
        self._partial += view[:take]
        self._need -= take
        if not self._need:
            fin, opcode, key = self._frame
            payload, self._partial = self._partial, bytearray()
            if key:
                mask_payload(key, payload)
            self._frame_done(fin, opcode, payload)
        return take

    def _header(self, data: bytes, pos: int, size: int) -> tuple[int, int, bool, int, bytes] | None:
        """(payload start, payload length, fin, opcode, masking key) of the frame at ``pos``;
        None when the header is not all there yet."""
        if size - pos < 2:
            return None
        first = data[pos]
        second = data[pos + 1]
        if first & 0x70:
            raise FrameError(f"frame with reserved bits {first & 0x70:#x} set, no extension was agreed")
        has_key = second & 0x80 != 0
        if has_key is not self.masked:
            raise FrameError("unmasked frame from a client" if self.masked else "masked frame from a server")
        length = second & 0x7F
        head = 2
        if length == 126:
            head = 4
            if size - pos < head:
                return None
            length = _UNPACK_SHORT(data, pos + 2)[0]
        elif length == 127:
            head = 10
            if size - pos < head:
                return None
            length = _UNPACK_LONG(data, pos + 2)[0]
            if length >> 63:
                raise FrameError(f"frame length {length} has its most significant bit set")
        fin = first & 0x80 != 0
        opcode = first & 0x0F
        self._check(fin, opcode, length)
        if not has_key:
            return pos + head, length, fin, opcode, b""
        if size - pos < head + 4:
            return None
        return pos + head + 4, length, fin, opcode, data[pos + head : pos + head + 4]

    def _check(self, fin: bool, opcode: int, length: int) -> None:
        if opcode >= 0x8:
            if opcode not in _CONTROL_OPCODES:
                raise FrameError(f"frame with unknown opcode {opcode:#x}")
            if not fin:
                raise FrameError(f"fragmented control frame (opcode {opcode:#x})")
            if length > MAX_CONTROL_PAYLOAD_BYTES:
                raise FrameError(f"control frame (opcode {opcode:#x}) of {length} bytes, more than 125")
            return
        if opcode == OPCODE_CONTINUATION:
            if not self._message_opcode:
                raise FrameError("continuation frame with no fragmented message to continue")
            total = len(self._message) + length
        elif opcode in _DATA_OPCODES:
            if self._message_opcode:
                raise FrameError("new message before the last fragment of the previous one")
            total = length
        else:
            raise FrameError(f"frame with unknown opcode {opcode:#x}")
        if total > self._max:
            raise FrameError(
                f"websocket message of {total} bytes or more exceeds the limit of {self._max} bytes",
                code=CLOSE_MESSAGE_TOO_BIG,
            )

    def _frame_done(self, fin: bool, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        if opcode >= 0x8:
            if opcode == OPCODE_CLOSE:
                parse_close(payload)  # a bad one is a protocol error, raised before anyone sees it
                self._done = True
            self._on_message(opcode, payload)
            return
        if opcode:
            if fin:
                if opcode == OPCODE_BINARY:
                    self.on_binary(payload)
                else:
                    self._on_message(opcode, payload)
                return
            self._message_opcode = opcode
            self._message = bytearray(payload)
            return
        self._message += payload
        if fin:
            opcode, message = self._message_opcode, self._message
            self._message_opcode = 0
            self._message = bytearray()
            if opcode == OPCODE_BINARY:
                self.on_binary(message)
            else:
                self._on_message(opcode, message)


def describe(payload: bytes | bytearray | memoryview) -> str:
    """A Close frame's code and reason for a session's close reason (printable, bounded)."""
    code, reason = parse_close(payload)
    if code is None:
        return "no status code"
    return f"code {code}" + (f": {printable(reason, 123)}" if reason else "")

"""The tunnel's websocket frame parser: RFC 6455 framing, fragments, control frames, limits, bad input."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.tunnel.wsframe import frame_header, mask_payload
from corral.tunnel.wsreader import (
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    FrameError,
    FrameParser,
    describe,
)


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = False, first: int = 0
) -> bytes:
    """One frame as a peer writes it (``first``: extra bits of the first byte, the RSV bits)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", opcode, size)
    elif size < 65536:
        head = struct.pack("!BBH", opcode, 126, size)
    else:
        head = struct.pack("!BBQ", opcode, 127, size)
    head = bytes([head[0] | (0x80 if fin else 0) | first, head[1] | (0x80 if masked else 0)]) + head[2:]
    if not masked:
        return head + payload
    key = os.urandom(4)
    body = bytearray(payload)
    mask_payload(key, body)
    return head + key + bytes(body)


class Recorder:
    def __init__(self, *, masked: bool = False, max_message_bytes: int = 1 << 20) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.parser = FrameParser(self.on_message, masked=masked, max_message_bytes=max_message_bytes)
        self.pause_after: int | None = None

    def on_message(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        self.messages.append((opcode, bytes(payload)))
        if self.pause_after is not None and len(self.messages) >= self.pause_after:
            self.parser.paused = True


messages_strategy = st.lists(
    st.tuples(
        st.sampled_from([OPCODE_BINARY, OPCODE_TEXT, OPCODE_PING, OPCODE_PONG]), st.binary(max_size=300)
    ),
    min_size=1,
    max_size=12,
)


@given(messages=messages_strategy, masked=st.booleans(), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_frames_cut_anywhere_read_back_as_the_messages_sent(messages, masked, cuts):
    messages = [(op, p[:125] if op in (OPCODE_PING, OPCODE_PONG) else p) for op, p in messages]
    wire = b"".join(frame(op, p, masked=masked) for op, p in messages)
    recorder = Recorder(masked=masked)
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    for start, end in itertools.pairwise(points):
        recorder.parser.feed(wire[start:end])
    assert recorder.messages == messages
    assert recorder.parser.buffered == 0


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("masked", [False, True])
def test_every_length_encoding_reads_back(size, masked):
    payload = os.urandom(size)
    recorder = Recorder(masked=masked)
    recorder.parser.feed(frame(OPCODE_BINARY, payload, masked=masked))
    assert recorder.messages == [(OPCODE_BINARY, payload)]


def test_the_tunnels_own_encoder_reads_back():
    recorder = Recorder()
    header = frame_header(3, masked=False)
    recorder.parser.feed(header + b"abc")
    assert recorder.messages == [(OPCODE_BINARY, b"abc")]


def test_a_fragmented_message_is_joined_and_control_frames_between_its_fragments_come_first():
    recorder = Recorder(masked=True)
    wire = (
        frame(OPCODE_BINARY, b"one ", fin=False, masked=True)
        + frame(OPCODE_PING, b"p", masked=True)
        + frame(OPCODE_CONTINUATION, b"two ", fin=False, masked=True)
        + frame(OPCODE_PONG, b"", masked=True)
        + frame(OPCODE_CONTINUATION, b"three", masked=True)
        + frame(OPCODE_BINARY, b"next", masked=True)
    )
    recorder.parser.feed(wire)
    assert recorder.messages == [
        (OPCODE_PING, b"p"),
        (OPCODE_PONG, b""),
        (OPCODE_BINARY, b"one two three"),
        (OPCODE_BINARY, b"next"),
    ]


def test_a_paused_parser_keeps_the_rest_and_goes_on_from_the_next_message_when_resumed():
    recorder = Recorder()
    recorder.pause_after = 1
    recorder.parser.feed(b"".join(frame(OPCODE_BINARY, bytes([i]) * 10) for i in range(3)))
    assert recorder.messages == [(OPCODE_BINARY, b"\x00" * 10)]
    recorder.parser.feed(frame(OPCODE_BINARY, b"late"))
    assert len(recorder.messages) == 1, "nothing is parsed while paused"
    recorder.pause_after = None
    recorder.parser.resume()
    assert [p for _, p in recorder.messages] == [b"\x00" * 10, b"\x01" * 10, b"\x02" * 10, b"late"]


def test_nothing_is_read_after_a_close_frame():
    recorder = Recorder()
    recorder.parser.feed(frame(OPCODE_CLOSE, struct.pack("!H", 1000) + b"bye") + frame(OPCODE_BINARY, b"x"))
    recorder.parser.feed(frame(OPCODE_BINARY, b"y"))
    assert recorder.messages == [(OPCODE_CLOSE, b"\x03\xe8bye")]
    assert recorder.parser.done
    assert describe(recorder.messages[0][1]) == "code 1000: bye"


def test_a_message_never_holds_on_to_more_of_a_read_than_its_own_bytes_and_a_header():
    kept: list[bytes | bytearray | memoryview] = []
    parser = FrameParser(lambda op, payload: kept.append(payload), masked=False, max_message_bytes=1 << 20)
    parser.feed(frame(OPCODE_BINARY, b"small") + frame(OPCODE_BINARY, b"L" * 100_000))
    parser.feed(frame(OPCODE_BINARY, b"alone" * 100))
    for payload, size in zip(kept, (5, 100_000, 500), strict=True):
        held = payload.obj if isinstance(payload, memoryview) else payload
        assert size <= len(held) <= size + 14
    assert [bytes(p) for p in kept] == [b"small", b"L" * 100_000, b"alone" * 100]


BAD_FRAMES = [
    (False, frame(OPCODE_BINARY, b"x", masked=True), "masked frame from a server", CLOSE_PROTOCOL_ERROR),
    (True, frame(OPCODE_BINARY, b"x"), "unmasked frame from a client", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_BINARY, b"x", first=0x40), "reserved bits 0x40 set", CLOSE_PROTOCOL_ERROR),
    (False, frame(0x3, b"x"), "unknown opcode 0x3", CLOSE_PROTOCOL_ERROR),
    (False, frame(0xB, b"x"), "unknown opcode 0xb", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_PING, b"x", fin=False), "fragmented control frame", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_PING, b"x" * 126), "of 126 bytes, more than 125", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_CONTINUATION, b"x"), "no fragmented message to continue", CLOSE_PROTOCOL_ERROR),
    (
        False,
        frame(OPCODE_BINARY, b"a", fin=False) + frame(OPCODE_BINARY, b"b"),
        "new message before the last fragment",
        CLOSE_PROTOCOL_ERROR,
    ),
    (False, b"\x82\x7f" + (1 << 63).to_bytes(8, "big"), "most significant bit set", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_CLOSE, b"\x03"), "close frame of 1 byte", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_CLOSE, struct.pack("!H", 1005)), "invalid status code 1005", CLOSE_PROTOCOL_ERROR),
    (False, frame(OPCODE_CLOSE, struct.pack("!H", 1000) + b"\xff"), "not UTF-8", CLOSE_INVALID_DATA),
]


@pytest.mark.parametrize(("masked", "wire", "text", "code"), BAD_FRAMES)
def test_bad_frames_are_refused_with_a_close_code_and_a_precise_text(masked, wire, text, code):
    recorder = Recorder(masked=masked)
    with pytest.raises(FrameError, match=text) as info:
        recorder.parser.feed(wire)
    assert info.value.code == code
    assert recorder.messages == []
    recorder.parser.feed(frame(OPCODE_BINARY, b"after", masked=masked))
    assert recorder.messages == [], "a parser that refused its input reads nothing more"


def test_a_message_over_the_limit_is_refused_from_its_header_before_its_payload_arrives():
    recorder = Recorder(max_message_bytes=1000)
    with pytest.raises(
        FrameError, match="websocket message of 1001 bytes or more exceeds the limit of 1000"
    ) as info:
        recorder.parser.feed(frame(OPCODE_BINARY, b"x" * 1001)[:4])
    assert info.value.code == CLOSE_MESSAGE_TOO_BIG


def test_a_whole_frame_over_the_limit_read_at_once_is_refused_too():
    recorder = Recorder(max_message_bytes=1000)
    with pytest.raises(FrameError, match="1001 bytes or more exceeds the limit of 1000"):
        recorder.parser.feed(frame(OPCODE_BINARY, b"x" * 1001))
    assert recorder.messages == []


@pytest.mark.parametrize("masked", [False, True])
def test_binary_messages_go_to_on_binary_once_it_is_replaced_and_the_rest_to_on_message(masked):
    recorder = Recorder(masked=masked)
    binary: list[bytes] = []
    recorder.parser.on_binary = lambda payload: binary.append(bytes(payload))
    recorder.parser.feed(frame(OPCODE_BINARY, b"whole", masked=masked))  # one read, one frame
    two = frame(OPCODE_BINARY, b"one", masked=masked) + frame(OPCODE_PING, b"p", masked=masked)
    recorder.parser.feed(two)
    recorder.parser.feed(frame(OPCODE_BINARY, b"frag", fin=False, masked=masked))
    recorder.parser.feed(frame(OPCODE_CONTINUATION, b"ments", masked=masked))
    assert binary == [b"whole", b"one", b"fragments"]
    assert recorder.messages == [(OPCODE_PING, b"p")]


def test_the_limit_counts_every_fragment_of_a_message():
    recorder = Recorder(max_message_bytes=1000)
    recorder.parser.feed(frame(OPCODE_BINARY, b"x" * 600, fin=False))
    with pytest.raises(FrameError, match="1200 bytes or more exceeds the limit of 1000") as info:
        recorder.parser.feed(frame(OPCODE_CONTINUATION, b"x" * 600))
    assert info.value.code == CLOSE_MESSAGE_TOO_BIG


@given(st.binary(max_size=400), st.booleans())
def test_any_bytes_give_messages_or_a_frame_error_and_bounded_memory(data, masked):
    recorder = Recorder(masked=masked, max_message_bytes=256)
    code = None
    try:
        recorder.parser.feed(data)
    except FrameError as exc:
        code = exc.code
    assert code in (None, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_MESSAGE_TOO_BIG)
    assert recorder.parser.buffered <= 256 + 14

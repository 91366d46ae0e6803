"""The tunnel's websocket frame encoder: RFC 6455 headers and masking, coalesced writes, back-pressure."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.tunnel.wsframe import FrameWriter, _mask_python, frame_header, mask_payload


class RecordingTransport(asyncio.WriteTransport):
    """Keeps every write call (one entry per call) and reports a settable buffer size."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(b"".join(bytes(d) for d in list_of_data))

    def get_write_buffer_size(self) -> int:
        if self.closing:  # as asyncio's TLS transport once closed twice (its protocol is gone)
            raise AttributeError("'NoneType' object has no attribute '_get_write_buffer_size'")
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def parse_frames(wire: bytes) -> list[tuple[int, bool, bytes]]:
    """(opcode, masked, unmasked payload) of each frame, read as RFC 6455 section 5.2 lays them out."""
    frames = []
    at = 0
    while at < len(wire):
        first, second = wire[at], wire[at + 1]
        assert first & 0x80, "FIN must be set: the tunnel never fragments"
        assert first & 0x70 == 0, "no RSV bits without an extension"
        masked = bool(second & 0x80)
        size = second & 0x7F
        at += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", wire, at)
            assert size >= 126, "the shortest length encoding must be used"
            at += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", wire, at)
            assert size >= 65536, "the shortest length encoding must be used"
            at += 8
        key = b"\0\0\0\0"
        if masked:
            key = wire[at : at + 4]
            at += 4
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(wire[at : at + size]))
        assert len(payload) == size, "frame cut short"
        at += size
        frames.append((first & 0x0F, masked, payload))
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1023, 1024, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [False, True])
async def test_each_frame_reads_back_as_its_payload(size: int, masked: bool) -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=masked)
    payload = bytes(i % 251 for i in range(size))
    writer.write(payload)
    assert parse_frames(b"".join(transport.calls)) == [(0x2, masked, payload)]


async def test_masked_frames_use_a_fresh_key_and_hide_the_payload() -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=True)
    payload = b"A" * 64
    writer.write(payload)
    writer.write(payload)
    writer.flush()
    wire = b"".join(transport.calls)
    first, second = wire[2:6], wire[2 + 4 + 64 + 2 : 2 + 4 + 64 + 2 + 4]
    assert first != second
    assert payload not in wire
    assert [p for _, _, p in parse_frames(wire)] == [payload, payload]


async def test_frames_of_one_turn_leave_in_one_write_after_the_first() -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=False)
    payloads = [bytes([n]) * (100 + 2000 * n) for n in range(5)]
    for payload in payloads:
        writer.write(payload)
    assert len(transport.calls) == 1, "the first frame of a turn leaves at once"
    assert writer.kept_bytes > 0
    await asyncio.sleep(0)  # the end of this turn of the loop
    assert len(transport.calls) == 2, "the rest leave together at the end of the turn"
    assert writer.kept_bytes == 0
    assert [p for _, _, p in parse_frames(b"".join(transport.calls))] == payloads
    writer.write(b"next turn")
    assert len(transport.calls) == 3


async def test_room_counts_what_is_kept_and_what_the_transport_holds() -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=False, high_water_bytes=10_000)
    assert writer.has_room()
    transport.buffered = 10_000
    assert not writer.has_room()
    transport.buffered = 0
    writer.write(b"x" * 10)
    writer.write(b"y" * 10_000)
    assert not writer.has_room(), "kept frames count against the mark"
    writer.flush()
    assert writer.has_room()


async def test_try_write_writes_only_with_room_and_an_open_transport() -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=True, high_water_bytes=10_000)
    transport.buffered = 10_000
    assert not writer.try_write(b"head", b"tail")
    transport.buffered = 0
    transport.closing = True
    assert not writer.try_write(b"head", b"tail")
    assert writer.has_room(), "a closing transport drops writes: nothing to wait for"
    assert transport.calls == []
    transport.closing = False
    assert writer.try_write(b"head", b"tail")
    assert parse_frames(b"".join(transport.calls)) == [(0x2, True, b"headtail")]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 1023, 1024, 65535, 65536, 70_000])
async def test_every_size_is_framed_as_one_binary_message_from_its_two_parts(masked: bool, size: int) -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=masked)
    payload = bytes(range(256)) * (size // 256 + 1)
    writer.write(b"hd", payload[:size])
    wire = b"".join(transport.calls)
    assert wire[: len(frame_header(size + 2, masked=masked))] == frame_header(size + 2, masked=masked)
    assert parse_frames(wire) == [(0x2, masked, b"hd" + payload[:size])]


async def test_what_is_kept_is_dropped_once_the_transport_closes() -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=False)
    writer.write(b"first")
    writer.write(b"second")
    transport.closing = True
    writer.flush()
    assert len(transport.calls) == 1
    assert writer.kept_bytes == 0


def test_headers_use_the_shortest_length_form() -> None:
    assert frame_header(125, masked=False) == b"\x82\x7d"
    assert frame_header(126, masked=True) == b"\x82\xfe\x00\x7e"
    assert frame_header(65536, masked=False) == b"\x82\x7f" + (65536).to_bytes(8, "big")


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_pure_masking_matches_the_compiled_one(data: bytes, key: bytes) -> None:
    ours, theirs = bytearray(data), bytearray(data)
    _mask_python(key, ours)
    mask_payload(key, theirs)
    assert ours == theirs
    assert bytes(ours) == bytes(b ^ key[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("tail_size", [0, 10, 1500, 40_000])
@pytest.mark.parametrize("masked", [False, True])
async def test_a_head_and_a_tail_make_one_message(tail_size: int, masked: bool) -> None:
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=masked)
    head, tail = b"\x03\x02\x04", memoryview(bytes(range(256)) * (tail_size // 256 + 1))[:tail_size]
    writer.write(head, tail)
    writer.write(b"second")
    writer.flush()
    assert parse_frames(b"".join(transport.calls)) == [(0x2, masked, head + tail), (0x2, masked, b"second")]


async def test_a_frame_written_after_the_turn_ended_waits_for_those_kept_before_it() -> None:
    # a frame kept in the turn after the first write, before that turn's end was seen, must not be
    # overtaken by one written after the end but before the kept ones were flushed
    transport = RecordingTransport()
    writer = FrameWriter(transport, masked=False)
    loop = asyncio.get_running_loop()
    loop.call_soon(writer.write, b"second")  # runs next turn, ahead of the turn's end
    writer.write(b"first")
    loop.call_soon(writer.write, b"third")  # runs next turn, after the turn's end, before the flush
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [p for _, _, p in parse_frames(b"".join(transport.calls))] == [b"first", b"second", b"third"]
    assert writer.kept_bytes == 0

"""Coverage-guided fuzzing of the tunnel: the frame decoder and whole sessions fed hostile input.

Run by ``nox -s fuzz`` (bounded by ``-runs`` and ``-max_total_time``), or directly:
``python fuzz/fuzz_tunnel.py -runs=10000``. Each input is either one frame for the decoder
(which must return a `Message` or raise `ProtocolError`, nothing else), raw websocket bytes for
the frame reader, cut in two reads (whole messages or `FrameError`, nothing else, and never more
held than a message's limit), or a script of frames for a server or client session: malformed
and overlong varints, truncated frames, unknown types, text frames, data for unknown connections
and floods of Connects. The session must end or carry on, never raise, and its connections and
buffered bytes stay under their caps after every frame (`corral.tunnel.testing.feed_frames`
asserts those bounds).
"""

from __future__ import annotations

import asyncio
import sys

import atheris

with atheris.instrument_imports():
    from corral.errors import ProtocolError
    from corral.tunnel import message as msg
    from corral.tunnel.testing import feed_frames
    from corral.tunnel.wsreader import FrameError, FrameParser

MAX_FRAMES = 64
FLOOD_MAX = 400
READER_MAX_MESSAGE = 4096


def _decode_only(data: bytes) -> None:
    try:
        decoded = msg.decode(data)
    except ProtocolError:
        return
    # non-minimal varints decode (as in Go) but re-encode minimally: compare meaning, not bytes
    assert msg.decode(msg.encode(decoded)) == decoded


def _read_frames(fdp: atheris.FuzzedDataProvider) -> None:
    masked = fdp.ConsumeBool()
    cut = fdp.ConsumeIntInRange(0, 1 << 16)
    data = fdp.ConsumeBytes(fdp.remaining_bytes())
    sizes: list[int] = []

    def on_message(opcode: int, payload: bytes | bytearray | memoryview) -> None:
        assert opcode in (0x1, 0x2, 0x8, 0x9, 0xA), opcode
        sizes.append(len(payload))

    parser = FrameParser(on_message, masked=masked, max_message_bytes=READER_MAX_MESSAGE)
    code = None
    try:
        parser.feed(data[:cut])
        parser.feed(data[cut:])
    except FrameError as exc:
        code = exc.code
    assert code in (None, 1002, 1007, 1009), code
    assert all(size <= READER_MAX_MESSAGE for size in sizes)
    assert parser.buffered <= READER_MAX_MESSAGE + 14


def _script(fdp: atheris.FuzzedDataProvider) -> list[bytes | str]:
    frames: list[bytes | str] = []
    while fdp.remaining_bytes() and len(frames) < MAX_FRAMES:
        kind = fdp.ConsumeIntInRange(0, 9)
        if kind == 0:
            frames.append(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16)))
        elif kind == 1:
            frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
        elif kind == 2:
            first = fdp.ConsumeIntInRange(2, 100)
            count = fdp.ConsumeIntInRange(1, FLOOD_MAX)
            frames.extend(msg.encode(msg.connect(cid, "mem", "hold")) for cid in range(first, first + count))
        else:
            type_value = fdp.ConsumeIntInRange(0, 10)
            conn_id = fdp.ConsumeIntInRange(-3, 40)
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
            header = msg.encode_varint(fdp.ConsumeIntInRange(0, 1 << 40)) + msg.encode_varint(conn_id)
            header += msg.encode_varint(type_value)
            if type_value in (1, 2):
                header += msg.encode_varint(15000)
            frames.append(header + payload)
    return frames


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        _decode_only(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    if mode == 3:
        _read_frames(fdp)
        return
    role = "server" if mode == 1 else "client"
    reason = asyncio.run(feed_frames(_script(fdp), role=role))
    assert isinstance(reason, str), reason


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

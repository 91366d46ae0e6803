"""Connections plumbed into asyncio transports and protocols: streams, local sockets, uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import struct

import pytest

from corral.tunnel.bridge import TunnelTransport
from corral.tunnel.clock import FakeClock
from corral.tunnel.loop import run
from corral.tunnel.settings import SessionSettings
from corral.tunnel.testing import (
    ServiceDialer,
    allow_all,
    check_tunnel_semantics,
    memory_session_pair,
    wait_until,
    websocket_session_pair,
)
from corral.tunnel.transport import dial_local


async def _target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``S`` + u64: stream that many bytes (a known pattern) then close; ``E``: echo until EOF."""
    try:
        mode = await reader.readexactly(1)
        if mode == b"S":
            (left,) = struct.unpack(">Q", await reader.readexactly(8))
            block = bytes(range(256)) * 1024
            while left > 0:
                writer.write(block[: min(left, len(block))])
                left -= min(left, len(block))
                await writer.drain()
        else:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


async def _download(server, port: int, size: int) -> bytes:
    conn = await server.dial("tcp", f"127.0.0.1:{port}")
    reader, writer = await conn.as_streams()
    writer.write(b"S" + struct.pack(">Q", size))
    data = await reader.read(-1)
    writer.close()
    return data


async def test_many_parallel_downloads_through_local_sockets_arrive_whole_and_end_cleanly():
    target = await asyncio.start_server(_target, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]
    try:
        async with websocket_session_pair(allow_all, dial_local) as (server, client):
            sizes = [(i * 7919) % 300_000 + 1 for i in range(40)]
            results = await asyncio.wait_for(
                asyncio.gather(*(_download(server, port, size) for size in sizes)), 60
            )
            for size, data in zip(sizes, results, strict=True):
                assert hashlib.sha256(data).digest() == hashlib.sha256(_pattern(size)).digest()
            await wait_until(lambda: not client.conns and not server.conns, "every connection is closed")
            await wait_until(lambda: client.task_count == 4, "the agent's connection tasks end")
    finally:
        target.close()
        await target.wait_closed()


async def test_small_writes_are_coalesced_into_few_data_frames():
    async with memory_session_pair(allow_all, ServiceDialer()) as (server, client):
        conn = await server.dial("mem", "sink")
        _, writer = await conn.as_streams()
        before = server.transport.frames_sent
        for i in range(1000):
            writer.write(b"%04d" % i)  # 1000 writes of 4 bytes, no await between them
        await writer.drain()
        await wait_until(lambda: len(client.conns) == 1, "the agent has the connection")
        remote_dialer = client.local_dialer
        await wait_until(lambda: len(remote_dialer.received.get("sink", b"")) == 4000, "all bytes arrive")
        assert bytes(remote_dialer.received["sink"]) == b"".join(b"%04d" % i for i in range(1000))
        assert server.transport.frames_sent - before <= 3, "one Data frame per 32 KiB, not per write"
        writer.close()


async def test_a_stream_reader_that_is_not_read_pauses_the_tunnel_sender():
    settings = SessionSettings(clock=FakeClock())
    async with memory_session_pair(allow_all, ServiceDialer(), settings=settings) as (server, client):
        conn = await server.dial("mem", "source:20000000")
        reader, writer = await conn.as_streams()
        await wait_until(lambda: client.conns and client.conns[conn.conn_id].paused_by_peer, "we pause it")
        assert conn.buffered_bytes <= settings.max_buffer_bytes + 16 * settings.max_frame_payload_bytes
        got = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 30):
            got += len(chunk)
        assert got == 20_000_000
        writer.close()


async def test_closing_the_stream_writer_closes_the_connection_with_eof():
    dialer = ServiceDialer()
    async with memory_session_pair(allow_all, dialer) as (server, client):
        conn = await server.dial("mem", "sink")
        _, writer = await conn.as_streams()
        writer.write(b"last")
        writer.close()
        await wait_until(lambda: conn.close_reason == "EOF", "the connection ends cleanly")
        await wait_until(lambda: not client.conns, "the agent forgets it")
        assert bytes(dialer.received["sink"]) == b"last"


class _Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


class _CollectIntoBuffers(asyncio.BufferedProtocol):
    """Offers buffers of 3 bytes, so one Data frame fills several."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._buffer = bytearray(3)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self._buffer[:nbytes]


async def test_a_transport_delivers_to_the_protocol_set_last_and_fills_a_buffered_ones_buffers():
    async with memory_session_pair(allow_all, ServiceDialer()) as (server, _):
        conn = await server.dial("mem", "echo")
        first, second = _Collect(), _CollectIntoBuffers()
        transport = TunnelTransport(conn, first)
        transport.write(b"one")
        await wait_until(lambda: bytes(first.data) == b"one", "the echo reaches the first protocol")
        transport.set_protocol(second)
        transport.write(b"two, then more")
        await wait_until(lambda: bytes(second.data) == b"two, then more", "the echo fills its buffers")
        assert bytes(first.data) == b"one"
        transport.close()


@pytest.mark.parametrize(
    "make_pair", [memory_session_pair, websocket_session_pair], ids=["memory", "websocket"]
)
def test_the_tunnel_has_remotedialer_semantics_on_uvloop(make_pair):
    pytest.importorskip("uvloop")
    run(check_tunnel_semantics(make_pair), use_uvloop=True)


def test_downloads_through_local_sockets_on_uvloop():
    pytest.importorskip("uvloop")
    run(test_many_parallel_downloads_through_local_sockets_arrive_whole_and_end_cleanly(), use_uvloop=True)

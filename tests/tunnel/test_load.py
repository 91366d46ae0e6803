"""Volume and concurrency: 100 MB through one connection in bounded memory, 200 connections at once,
and floods that must hit a cap instead of growing memory."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from corral.tunnel import message as msg
from corral.tunnel.clock import FakeClock, settle
from corral.tunnel.settings import MIB, SessionSettings
from corral.tunnel.testing import ServiceDialer, allow_all, memory_session_pair, read_exactly, wait_until

from ._raw import session_with_raw_peer

TOTAL = 100 * 1000 * 1000
MEMORY_BOUND = 16 * MIB  # measured about 6 MiB; a leak or a missing Pause would hold much of the 100 MB


async def test_100_mb_from_server_to_agent_side_stays_within_bounded_memory():
    dialer = ServiceDialer()
    async with memory_session_pair(allow_all, dialer) as (server, client):
        conn = await server.dial("mem", "discard")
        block = b"\x5a" * (1 << 20)
        tracemalloc.start()
        try:
            for _ in range(TOTAL // len(block)):
                await conn.write(block)
            await conn.write(block[: TOTAL % len(block)])
            await wait_until(
                lambda: dialer.counts["discard"] >= TOTAL,
                "all bytes arrive",
                timeout_seconds=120,
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        received = dialer.counts["discard"]
    await dialer.aclose()
    assert received == TOTAL
    peak_buffered = client.peak_buffered_bytes  # the session's own accounting, at every change
    print(f"peak buffered {peak_buffered} B, tracemalloc peak {peak} B")
    assert peak_buffered <= client.settings.max_buffer_bytes + 16 * client.settings.max_frame_payload_bytes
    assert peak <= MEMORY_BOUND, f"tracemalloc peak {peak} bytes for a {TOTAL} byte transfer"


async def test_100_mb_from_agent_side_to_server_stays_within_bounded_memory():
    dialer = ServiceDialer()
    async with memory_session_pair(allow_all, dialer) as (server, _client):
        conn = await server.dial("mem", f"source:{TOTAL}")
        received = 0
        tracemalloc.start()
        try:
            async with asyncio.timeout(120):
                while chunk := await conn.read(256 * 1024):
                    received += len(chunk)
                    await asyncio.sleep(0)  # a slow consumer: the source must be paused, not buffered
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    await dialer.aclose()
    assert received == TOTAL
    peak_buffered = server.peak_buffered_bytes
    print(f"peak buffered {peak_buffered} B, tracemalloc peak {peak} B")
    assert peak_buffered <= server.settings.max_buffer_bytes + 16 * server.settings.max_frame_payload_bytes
    assert peak <= MEMORY_BOUND, f"tracemalloc peak {peak} bytes for a {TOTAL} byte transfer"


async def test_200_concurrent_connections_in_one_session_each_get_their_own_bytes():
    dialer = ServiceDialer()
    async with memory_session_pair(allow_all, dialer) as (server, client):
        conns = [await server.dial("mem", "echo") for _ in range(200)]
        await wait_until(lambda: len(client.conns) == 200, "the agent side has every connection")

        async def exchange(i: int) -> bytes:
            payload = i.to_bytes(2, "big") * 20_000
            writer = asyncio.ensure_future(conns[i].write(payload))
            echoed = await read_exactly(conns[i], len(payload), timeout_seconds=60)
            await writer
            await conns[i].close()
            return echoed == payload

        results = await asyncio.gather(*(exchange(i) for i in range(200)))
        assert all(results)
        await settle()
        assert server.conns == {}
    await dialer.aclose()


async def test_a_flood_of_connects_is_capped_per_session():
    dialer = ServiceDialer()
    settings = SessionSettings(max_connections=50)
    async with session_with_raw_peer(
        "client", connect_authorizer=allow_all, local_dialer=dialer, settings=settings
    ) as (session, peer, _):
        for conn_id in range(2, 2002):
            await peer.transport.send(msg.encode(msg.connect(conn_id, "mem", "hold")))
        await settle()
        assert len(session.conns) == 50
        errors = [m for m in peer.drain() if m.type is msg.MessageType.ERROR]
        assert len(errors) == 1950
        assert errors[0].error_text() == "too many connections (50) in this session"
        assert not session.closed
    await dialer.aclose()


@pytest.mark.parametrize("push", [True, False], ids=["pushed-frames", "asked-for-frames"])
async def test_a_peer_that_floods_us_and_does_not_read_loses_the_session_after_the_send_error_timeout(push):
    clock = FakeClock()
    settings = SessionSettings(clock=clock, max_pending_control_frames=100)
    async with session_with_raw_peer("server", settings=settings, push=push) as (session, peer, _):
        peer.transport._max_queued = 1  # the peer stops reading: our replies cannot leave
        await _send_all(peer, [msg.data(99, b"x")] * 500)
        await settle()
        assert session.frames_received < 500, "the read loop waits while our replies cannot leave"
        assert 50 < session.pending_control_frames <= 100
        await clock.advance(4.9)
        assert not session.closed, "the read loop waits for the writer, for a bounded time"
        await clock.advance(0.1)
        assert session.close_reason.startswith("peer does not read: "), session.close_reason
        assert session.close_reason.endswith(" replies still queued after 5 s"), session.close_reason


async def _send_all(peer, messages) -> None:
    for message in messages:
        await peer.transport.send(msg.encode(message))

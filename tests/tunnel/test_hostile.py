"""Hostile and broken peers: every way found to make a session leak, hang, crash or overrun.

Each test drives a session with hand-made frames (in memory, fake clock) or over a real
websocket, and checks what the session releases and reports, not how long it takes.
"""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from corral.errors import TunnelClosedError, TunnelError
from corral.tunnel import message as msg
from corral.tunnel.clock import FakeClock, settle
from corral.tunnel.manager import SessionManager
from corral.tunnel.message import Message, MessageType, printable, utf8_prefix
from corral.tunnel.session import Session
from corral.tunnel.settings import SessionSettings
from corral.tunnel.testing import ServiceDialer, allow_all, memory_session_pair, wait_until
from corral.tunnel.transport import dial_local, parse_tcp_address
from corral.tunnel.websocket import MAX_CLOSE_REASON_BYTES, tunnel_handler

from ._raw import session_with_raw_peer

SMALL = {"max_buffer_bytes": 4096, "resume_below_bytes": 512, "hard_buffer_limit_bytes": 16384}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- a local target that stops reading ---------------------------------------------------------


async def test_a_connection_whose_target_stops_reading_releases_buffer_stream_and_tasks_when_cut():
    dialer = ServiceDialer()
    settings = SessionSettings(clock=FakeClock(), **SMALL)
    async with session_with_raw_peer(
        "client", connect_authorizer=allow_all, local_dialer=dialer, settings=settings
    ) as (session, peer, _):
        idle_tasks = session.task_count
        await peer.send(msg.connect(2, "mem", "hold"))
        for _ in range(400):  # the target never reads: its stream fills, then our buffer overruns
            await peer.send(msg.data(2, b"h" * 1024))
            if 2 not in session.conns:
                break
        assert 2 not in session.conns
        errors = [m for m in peer.drain() if m.type is MessageType.ERROR]
        assert [e.conn_id for e in errors] == [2]
        assert "peer ignored Pause" in errors[0].error_text()
        assert session.buffered_bytes == 0, "the cut connection's buffer is released"
        assert session.task_count == idle_tasks, "its dial and copy tasks have ended"
        assert dialer.peers["hold"]._eof, "the local stream was closed"
        assert not session.closed


async def test_a_tcp_target_that_stops_reading_gives_its_socket_back_when_the_connection_is_cut():
    held: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = SessionSettings(clock=FakeClock(), **{**SMALL, "hard_buffer_limit_bytes": 8 << 20})
    try:
        async with session_with_raw_peer(
            "client", connect_authorizer=allow_all, local_dialer=dial_local, settings=settings
        ) as (session, peer, _):
            idle_tasks, idle_fds = session.task_count, _open_fds()
            await peer.send(msg.connect(2, "tcp", f"127.0.0.1:{port}"))
            await wait_until(lambda: bool(held), "the target accepts")
            conn = session.conns[2]
            chunk = b"t" * 65536
            while 2 in session.conns:  # fills the kernel's buffers, then ours, then overruns
                await peer.send(msg.data(2, chunk))
                if conn.buffered_bytes == 0:
                    await asyncio.sleep(0.001)  # let the socket take what it takes
            await wait_until(lambda: session.task_count == idle_tasks, "the connection's tasks end")
            assert session.buffered_bytes == 0
            # the target's own end stays open (the test holds it); ours must be gone
            await wait_until(lambda: _open_fds() <= idle_fds + len(held), "our socket to the target closes")
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_closing_a_session_releases_connections_whose_target_stopped_reading():
    dialer = ServiceDialer()
    settings = SessionSettings(clock=FakeClock(), **SMALL)
    async with session_with_raw_peer(
        "client", connect_authorizer=allow_all, local_dialer=dialer, settings=settings
    ) as (session, peer, _):
        for conn_id in range(2, 12):
            await peer.send(msg.connect(conn_id, "mem", f"hold:{conn_id}"))
            for _ in range(20):
                await peer.send(msg.data(conn_id, b"x" * 15000))
        await session.close("agent going away")
        await settle()
        assert session.task_count == 0
        assert all(stream.closed or stream._eof for stream in dialer.peers.values())
    await dialer.aclose()


async def test_a_target_that_stops_reading_after_a_clean_close_is_aborted_after_the_close_timeout():
    clock = FakeClock()
    dialer = ServiceDialer()
    settings = SessionSettings(clock=clock, **{**SMALL, "hard_buffer_limit_bytes": 1 << 20})
    async with session_with_raw_peer(
        "client", connect_authorizer=allow_all, local_dialer=dialer, settings=settings
    ) as (session, peer, _):
        idle_tasks = session.task_count
        await peer.send(msg.connect(2, "mem", "hold"))
        await peer.send(msg.data(2, b"x" * 300_000))  # more than the in-memory stream holds
        await peer.send(msg.error(2, "EOF"))
        await clock.advance(4.9)
        assert session.task_count > idle_tasks, "bytes still owed to the target: it may yet read"
        await clock.advance(0.1)
        assert session.task_count == idle_tasks
        assert dialer.peers["hold"]._eof


# -- odd Connect addresses ---------------------------------------------------------------------

ODD_ADDRESSES = [
    b"tcp/127.0.0.1:99999",
    b"tcp/127.0.0.1:-1",
    b"tcp/127.0.0.1:\xd9\xa3",  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit
    b"tcp/127.0.0.1:\xc2\xb2",  # SUPERSCRIPT TWO: isdigit, yet int() refuses it
    b"tcp/[::1:80",
    b"tcp/a\x00b:80",
    b"tcp/\xff\xfe:80",
    b"tcp/" + b"x" * 200 + b".example:80",  # a DNS label longer than 63
    b"tcp/:",
    b"udp/127.0.0.1:53",
]


@pytest.mark.parametrize("payload", ODD_ADDRESSES, ids=[repr(p)[2:30] for p in ODD_ADDRESSES])
async def test_an_odd_connect_address_is_answered_with_error_and_leaves_nothing_behind(payload):
    async with session_with_raw_peer("client", connect_authorizer=allow_all, local_dialer=dial_local) as (
        session,
        peer,
        _,
    ):
        idle_tasks = session.task_count
        await peer.send(Message(1, 2, MessageType.CONNECT, payload))
        await wait_until(lambda: 2 not in session.conns, "the failed dial forgets the connection")
        await wait_until(lambda: bool(peer.drain()), "the Error is sent")
        [reply] = peer.drain()
        assert (reply.type, reply.conn_id) == (MessageType.ERROR, 2)
        assert reply.error_text()
        assert reply.error_text() != "EOF"
        assert session.task_count == idle_tasks
        assert not session.closed


@given(st.text(max_size=40), st.sampled_from(["tcp", "tcp4", "tcp6"]))
def test_any_tcp_address_parses_to_a_dialable_host_and_port_or_an_os_error(address, proto):
    try:
        host, port = parse_tcp_address(proto, address)
    except OSError as exc:
        error = str(exc)
        host, port = "", -1
    else:
        error = ""
    if error:
        assert error.startswith(f"dial {proto} ")
        return
    assert 0 <= port <= 65535
    assert host
    assert host.isprintable()
    assert "\x00" not in host
    host.encode("idna") if not host.isascii() else host.encode("ascii")


DIALER_FAILURES = [
    ValueError("embedded null byte"),
    UnicodeError("label too long"),
    OverflowError("port must be 0-65535"),
    KeyError("x"),
    TunnelError("no route"),
    RuntimeError(""),
]


@pytest.mark.parametrize("failure", DIALER_FAILURES, ids=lambda e: type(e).__name__)
async def test_any_failure_of_a_local_dialer_is_sent_as_error_and_forgets_the_connection(failure):
    async def dialer(proto: str, address: str):
        raise failure

    async with session_with_raw_peer("client", connect_authorizer=allow_all, local_dialer=dialer) as (
        session,
        peer,
        _,
    ):
        idle_tasks = session.task_count
        await peer.send(msg.connect(2, "tcp", "10.0.0.1:80"))
        [reply] = peer.drain()
        assert (reply.type, reply.conn_id) == (MessageType.ERROR, 2)
        assert reply.error_text() == (str(failure) or "dial tcp 10.0.0.1:80: RuntimeError")
        assert session.conns == {}
        assert session.task_count == idle_tasks
        assert not session.closed


# -- closing a session whose peer stopped reading ------------------------------------------------


async def test_closing_a_session_whose_transport_cannot_finish_its_close_ends_at_the_close_timeout():
    clock = FakeClock()
    manager = SessionManager()
    async with session_with_raw_peer("server", settings=SessionSettings(clock=clock)) as (session, _peer, _):
        manager.add("c-1", session)
        session.transport.stuck_close = True
        closing = asyncio.ensure_future(session.close("going away"))
        await settle()
        assert not manager.has_session("c-1"), "a closing session is no longer registered"
        assert not closing.done()
        await clock.advance(5)
        assert closing.done()
        assert session.transport.closed, "the transport was aborted"


async def test_a_second_close_returns_only_once_the_first_has_released_the_transport():
    clock = FakeClock()
    async with session_with_raw_peer("server", settings=SessionSettings(clock=clock)) as (session, _peer, _):
        session.transport.stuck_close = True
        first = asyncio.ensure_future(session.close("read deadline"))
        await settle()
        second = asyncio.ensure_future(session.close("handler ends"))  # as the serving handler does
        await settle()
        returned_early = second.done()
        await clock.advance(5)
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert not returned_early, "the second close waits while the transport is still held"
        assert session.transport.closed
        assert session.close_reason == "read deadline"


async def test_closing_a_server_session_whose_websocket_peer_stopped_reading_does_not_hang():
    clock = FakeClock()
    manager = SessionManager()

    async def authorize(request: web.Request) -> tuple[str, bool]:
        return "c-1", True

    app = web.Application()
    app.router.add_get(
        "/v3/connect", tunnel_handler(manager, authorize, settings=SessionSettings(clock=clock))
    )
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v3/connect"
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, autoping=False) as ws:
            await wait_until(lambda: manager.has_session("c-1"), "the session is registered")
            session = manager.first("c-1")
            conn = await session.dial("tcp", "10.0.0.1:80")
            writer = asyncio.ensure_future(conn.write(b"w" * (64 << 20)))  # the peer never reads
            await wait_until(lambda: _send_blocked(session), "our sends block on the full socket")
            closing = asyncio.ensure_future(session.close("server going away"))
            await settle()
            assert not manager.has_session("c-1")
            await clock.advance(5)
            await asyncio.wait_for(closing, 10)
            with pytest.raises(TunnelClosedError):
                await asyncio.wait_for(writer, 10)
            assert ws is not None
    finally:
        await runner.cleanup()


def _send_blocked(session: Session) -> bool:
    return session._send_lock.locked() and session.transport.ws._writer.transport.get_write_buffer_size() > 0


# -- the connect authorizer and cancelled dials ------------------------------------------------


async def test_an_authorizer_that_raises_refuses_and_the_session_ends_with_no_task_left():
    def broken(proto: str, address: str) -> bool:
        raise RuntimeError("policy store unreachable")

    async with session_with_raw_peer("client", connect_authorizer=broken) as (session, peer, _):
        await peer.send(msg.connect(2, "tcp", "10.0.0.1:80"))
        assert session.close_reason == "connect not allowed: tcp/10.0.0.1:80: authorizer failed: RuntimeError"
        await settle()
        assert session.task_count == 0
        assert session.conns == {}


async def test_a_cancelled_dial_leaves_no_connection_registered():
    async with session_with_raw_peer("server") as (session, peer, _):
        peer.transport._max_queued = 0  # nothing we send can leave
        dial = asyncio.ensure_future(session.dial("tcp", "10.0.0.1:80"))
        await settle()
        assert session.conns, "the dial waits to send its Connect"
        dial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dial
        assert session.conns == {}


async def test_a_dial_that_times_out_leaves_no_connection_registered():
    clock = FakeClock()
    async with session_with_raw_peer("server", settings=SessionSettings(clock=clock)) as (session, peer, _):
        peer.transport._max_queued = 0
        dial = asyncio.ensure_future(session.dial("tcp", "10.0.0.1:80", timeout_seconds=3))
        await clock.advance(3)
        with pytest.raises(TunnelClosedError, match="connect timed out"):
            await dial
        assert session.conns == {}


async def test_a_local_dial_that_hangs_is_answered_with_error_at_the_connect_timeout():
    clock = FakeClock()

    async def hang(proto: str, address: str):
        await asyncio.Event().wait()

    async with session_with_raw_peer(
        "client",
        connect_authorizer=allow_all,
        local_dialer=hang,
        settings=SessionSettings(clock=clock, read_deadline_seconds=600),  # this peer never pongs
    ) as (session, peer, _):
        await peer.send(msg.connect(2, "tcp", "10.0.0.1:80"))
        await clock.advance(59)
        assert 2 in session.conns
        await clock.advance(1)
        [reply] = [m for m in peer.drain() if m.type is MessageType.ERROR]
        assert reply.error_text() == "dial tcp 10.0.0.1:80: i/o timeout"
        assert session.conns == {}


# -- floods from a peer that reads -------------------------------------------------------------


async def test_a_burst_of_thousands_of_connects_from_a_reading_peer_is_refused_one_by_one():
    dialer = ServiceDialer()
    settings = SessionSettings(clock=FakeClock(), max_connections=50, max_pending_control_frames=256)
    async with session_with_raw_peer(
        "client", connect_authorizer=allow_all, local_dialer=dialer, settings=settings
    ) as (session, peer, _):
        for conn_id in range(2, 5002):  # queued all at once: the read loop sees them back to back
            await peer.transport.send(msg.encode(msg.connect(conn_id, "mem", "hold")))
        await settle()
        assert not session.closed, session.close_reason
        errors = [m for m in peer.drain() if m.type is MessageType.ERROR]
        assert len(errors) == 4950
        assert len(session.conns) == 50
    await dialer.aclose()


async def test_a_burst_of_connects_over_a_real_websocket_keeps_the_session():
    settings = SessionSettings(max_connections=20, max_pending_control_frames=64)
    manager = SessionManager()

    async def authorize(request: web.Request) -> tuple[str, bool]:
        return "c-1", True

    from corral.tunnel.websocket import TunnelClient

    app = web.Application()
    app.router.add_get("/v3/connect", tunnel_handler(manager, authorize))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    dialer = ServiceDialer()
    client_end = TunnelClient(
        f"ws://127.0.0.1:{runner.addresses[0][1]}/v3/connect",
        connect_authorizer=allow_all,
        local_dialer=dialer,
        settings=settings,
    )
    try:
        agent = await client_end.start()
        await wait_until(lambda: manager.has_session("c-1"), "the session is registered")
        server = manager.first("c-1")
        for conn_id in range(1000, 4000):  # a server gone wrong: Connects without end
            await server.send(msg.connect(conn_id, "mem", "hold"))
        await wait_until(lambda: len(agent.conns) == 20, "the agent holds its maximum")
        await server.send(msg.connect(5000, "mem", "echo"))  # ordered after the flood
        await wait_until(lambda: server.frames_received >= 2980, "every refusal reaches the server")
        assert not agent.closed, agent.close_reason
    finally:
        await client_end.close()
        await runner.cleanup()
        await dialer.aclose()


async def test_a_flood_of_pause_and_resume_spawns_no_task_and_queues_at_most_one_of_each():
    async with session_with_raw_peer("server", settings=SessionSettings(clock=FakeClock(), **SMALL)) as (
        session,
        peer,
        clock,
    ):
        conn = await session.dial("tcp", "10.0.0.1:80")
        await peer.send(msg.data(conn.conn_id, b"f" * 5000))  # we pause it: its Resumes get a Pause
        idle_tasks = session.task_count
        peer.transport._max_queued = 0  # and our replies cannot leave
        for i in range(15_000):
            frame = msg.pause(conn.conn_id) if i % 2 == 0 else msg.resume(conn.conn_id)
            await peer.transport.send(msg.encode(frame))
        await settle()
        assert session.task_count == idle_tasks
        assert session.pending_control_frames <= 2
        assert clock.pending_timers <= 2


# -- a slow but honest reader ------------------------------------------------------------------


async def test_a_paused_sender_never_overruns_a_slow_honest_reader():
    clock = FakeClock()
    dialer = ServiceDialer()
    settings = SessionSettings(
        clock=clock, max_frame_payload_bytes=1024, **{**SMALL, "hard_buffer_limit_bytes": 64 * 1024}
    )
    async with memory_session_pair(allow_all, dialer, settings=settings) as (server, client):
        conn = await server.dial("mem", "hold")
        total = 2 * 256 * 1024 + 40 * SMALL["max_buffer_bytes"]  # past what the target stream holds
        writer = asyncio.ensure_future(conn.write(b"s" * total))
        await wait_until(lambda: conn.paused_by_peer, "the reader pauses us")
        await settle()
        remote = client.conns[conn.conn_id]
        paused_at = remote.buffered_bytes  # what was in flight when Pause arrived
        assert paused_at <= settings.hard_buffer_limit_bytes
        for _ in range(600):  # ten minutes of a reader that takes nothing
            await clock.advance(1)
            assert remote.buffered_bytes == paused_at, "a paused sender sends nothing more"
            assert not remote.closed, remote.close_reason
        assert not writer.done()
        stream = dialer.peers["hold"]
        received = 0
        while received < total:  # now it reads: everything arrives
            received += len(await asyncio.wait_for(stream.read(65536), 10))
            await clock.advance(0.01)
        await asyncio.wait_for(writer, 10)
    await dialer.aclose()


# -- sizes ---------------------------------------------------------------------------------------


async def test_a_16_mib_sync_connections_frame_ends_the_session_without_decoding_it():
    async with session_with_raw_peer("server") as (session, peer, _):
        await session.dial("tcp", "10.0.0.1:80")
        await peer.send(Message(1, 0, MessageType.SYNC_CONNECTIONS, bytes(16 << 20)))
        assert session.close_reason == (
            "protocol error: sync connections lists 2097152 ids, more than twice this"
            " session's max_connections (4096)"
        )


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20000), min_size=1, max_size=30))
def test_a_connection_never_holds_more_than_its_hard_limit(sizes):
    async def run() -> None:
        settings = SessionSettings(clock=FakeClock(), **SMALL)
        async with session_with_raw_peer("server", settings=settings) as (session, peer, _):
            conn = await session.dial("tcp", "10.0.0.1:80")
            for size in sizes:
                await peer.send(msg.data(conn.conn_id, b"d" * size))
                assert conn.buffered_bytes <= SMALL["hard_buffer_limit_bytes"]
                assert session.buffered_bytes <= SMALL["hard_buffer_limit_bytes"]

    asyncio.run(run())


async def test_a_session_stops_at_its_buffer_budget_and_pauses_early_when_crowded():
    settings = SessionSettings(clock=FakeClock(), **{**SMALL, "max_session_buffer_bytes": 32768})
    async with session_with_raw_peer("server", settings=settings) as (session, peer, _):
        conns = [await session.dial("tcp", f"10.0.0.1:{i}") for i in range(8)]
        for conn in conns[:5]:
            await peer.send(msg.data(conn.conn_id, b"b" * 4000))  # under max_buffer: no Pause
        assert [m.type for m in peer.drain()].count(MessageType.PAUSE) == 0
        await peer.send(msg.data(conns[5].conn_id, b"b" * 1000))  # crowded: above resume_below
        assert [m.type for m in peer.drain()].count(MessageType.PAUSE) == 1
        for conn in conns[6:]:
            await peer.send(msg.data(conn.conn_id, b"b" * 4000))
        await peer.send(msg.data(conns[5].conn_id, b"b" * 4000))
        assert session.buffered_bytes <= 32768
        assert conns[5].closed
        assert "session buffer full" in conns[5].close_reason


# -- text from the peer ------------------------------------------------------------------------


@given(st.text(max_size=80), st.integers(min_value=0, max_value=130))
def test_utf8_prefix_cuts_on_a_character_boundary_and_keeps_as_much_as_fits(text, limit):
    cut = utf8_prefix(text, limit)
    assert len(cut) <= limit
    decoded = cut.decode("utf-8")
    assert text.startswith(decoded)
    rest = text[len(decoded) :]
    assert not rest or len(cut) + len(rest[0].encode("utf-8", "replace")) > limit


async def test_close_reasons_and_error_texts_are_never_cut_inside_a_character():
    reason = "é" * 100
    assert len(utf8_prefix(reason, MAX_CLOSE_REASON_BYTES)) == 122
    error = msg.error(2, "dial failed: " + "ü" * 60)
    assert len(error.payload) <= 100
    assert msg.decode(msg.encode(error)).error_text() == error.payload.decode("utf-8")


async def test_an_error_text_cut_by_the_100_byte_read_loses_the_cut_character_not_the_text():
    wire = msg.encode(Message(1, 2, MessageType.ERROR, ("x" * 99 + "é").encode()))
    assert msg.decode(wire).error_text() == "x" * 99


async def test_text_from_the_peer_is_escaped_before_it_reaches_reasons_and_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="corral.tunnel")
    async with session_with_raw_peer("server") as (session, peer, _):
        conn = await session.dial("tcp", "10.0.0.1:80")
        await peer.send(msg.error(conn.conn_id, "EOF\nINFO forged line\x1b[31m"))
        assert conn.close_reason == "EOF\\nINFO forged line\\x1b[31m"
    async with session_with_raw_peer("client", connect_authorizer=lambda p, a: False) as (session, peer, _):
        await peer.send(msg.connect(2, "tcp", "h:1\nCRITICAL forged"))
        assert session.close_reason == "connect not allowed: tcp/h:1\\nCRITICAL forged"
    for record in caplog.records:
        assert "\n" not in record.getMessage(), record.getMessage()
    assert printable("a\u2028b") == "a\\u2028b"


# -- many sessions -----------------------------------------------------------------------------


async def test_a_server_refuses_tunnels_past_max_sessions_with_503():
    manager = SessionManager(max_sessions=1)

    async def authorize(request: web.Request) -> tuple[str, bool]:
        return request.headers["X-Tunnel-ID"], True

    app = web.Application()
    app.router.add_get("/v3/connect", tunnel_handler(manager, authorize))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v3/connect"
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"X-Tunnel-ID": "a"}):
            await wait_until(lambda: manager.has_session("a"), "the first session is registered")
            async with http.get(url, headers={"X-Tunnel-ID": "b"}) as refused:
                assert refused.status == 503
                assert await refused.text() == "too many tunnel sessions"
        await wait_until(lambda: not manager.has_session("a"), "the first session is gone")
        assert manager.budget.used_bytes == 0
    finally:
        await runner.cleanup()


async def test_sessions_of_one_manager_share_its_buffer_budget():
    manager = SessionManager(buffer_budget_bytes=20_000)
    settings = SessionSettings(clock=FakeClock(), **SMALL)
    async with (
        session_with_raw_peer("server", settings=settings, budget=manager.budget) as (one, one_peer, _),
        session_with_raw_peer("server", settings=settings, budget=manager.budget) as (two, two_peer, _),
    ):
        a = await one.dial("tcp", "10.0.0.1:1")
        b = await two.dial("tcp", "10.0.0.1:2")
        await one_peer.send(msg.data(a.conn_id, b"1" * 12_000))
        await two_peer.send(msg.data(b.conn_id, b"2" * 12_000))
        assert not a.closed
        assert b.closed
        assert "tunnel buffers of this process full (12000 of 20000 bytes)" in b.close_reason
        assert manager.budget.used_bytes == 12_000
        await a.read()
        assert manager.budget.used_bytes == 0

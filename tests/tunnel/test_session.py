"""Session semantics with a fake clock and a hand-driven peer: keepalive, sync, errors, refusals."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import TunnelClosedError
from corral.tunnel import message as msg
from corral.tunnel.clock import FakeClock, settle
from corral.tunnel.memory import memory_pair
from corral.tunnel.message import MessageType
from corral.tunnel.session import Session
from corral.tunnel.settings import SessionSettings
from corral.tunnel.testing import ServiceDialer, allow_all, serving

from ._raw import session_with_raw_peer


async def test_the_client_pings_every_five_seconds():
    async with session_with_raw_peer("client", connect_authorizer=allow_all) as (_session, peer, clock):
        await clock.advance(4.9)
        peer.drain()
        assert peer.pings == 0
        await clock.advance(15.1)
        peer.drain()
        assert peer.pings == 4


async def test_a_server_does_not_ping():
    async with session_with_raw_peer("server") as (_session, peer, clock):
        await clock.advance(30)
        peer.drain()
        assert peer.pings == 0


async def test_a_client_whose_pings_get_no_pong_drops_the_session_at_the_deadline():
    async with session_with_raw_peer("client", connect_authorizer=allow_all) as (session, peer, clock):
        peer.transport.answer_pings = False
        await clock.advance(59.9)
        assert not session.closed
        await clock.advance(0.1)
        assert session.closed
        assert session.close_reason == "read deadline: no ping or pong for 60 s"


async def test_a_server_drops_a_client_that_stops_pinging_at_the_deadline():
    async with session_with_raw_peer("server") as (session, peer, clock):
        await clock.advance(50)
        await peer.transport.ping()
        await settle()
        await clock.advance(59.9)
        assert not session.closed, "a ping extends the read deadline by 60 s"
        await clock.advance(0.1)
        assert session.closed
        assert "read deadline" in session.close_reason


async def test_a_pinging_client_keeps_its_server_session_alive():
    clock = FakeClock()
    settings = SessionSettings(clock=clock)
    server_end, client_end = memory_pair()
    server = Session(server_end, role="server", settings=settings)
    client = Session(client_end, role="client", connect_authorizer=allow_all, settings=settings)
    async with serving(server, client):
        for _ in range(60):
            await clock.advance(5)
        assert not server.closed
        assert not client.closed
        assert client_end.pings_sent == 60


async def test_the_client_sends_its_connection_ids_every_sixty_seconds():
    dialer = ServiceDialer()
    async with session_with_raw_peer("client", connect_authorizer=allow_all, local_dialer=dialer) as (
        _session,
        peer,
        clock,
    ):
        await peer.send(msg.connect(2, "mem", "hold"))
        await peer.send(msg.connect(5, "mem", "hold"))
        await peer.keep_alive_for(clock, 55)
        assert not [m for m in peer.drain() if m.type is MessageType.SYNC_CONNECTIONS]
        await peer.keep_alive_for(clock, 5)
        syncs = [m for m in peer.drain() if m.type is MessageType.SYNC_CONNECTIONS]
        assert len(syncs) == 1
        assert msg.decode_connection_ids(syncs[0].payload) == [2, 5]
    await dialer.aclose()


async def test_the_server_closes_connections_missing_from_a_sync_without_sending_error():
    async with session_with_raw_peer("server") as (session, peer, _clock):
        conns = [await session.dial("tcp", f"10.0.0.{i}:80") for i in range(3)]
        assert [c.conn_id for c in conns] == [2, 3, 4]
        await peer.send(msg.sync_connections([2, 4]))
        assert conns[1].closed
        assert conns[1].close_reason == "sync from client"
        assert not conns[0].closed
        assert not conns[2].closed
        assert sorted(session.conns) == [2, 4]
        assert [m.type for m in peer.drain()] == [MessageType.CONNECT] * 3


async def test_data_for_an_unknown_connection_is_answered_with_error():
    async with session_with_raw_peer("server", client_key="c-9", session_key=77) as (session, peer, _):
        await peer.send(msg.data(7, b"stray"))
        [reply] = peer.drain()
        assert reply.type is MessageType.ERROR
        assert reply.conn_id == 7
        assert reply.error_text() == "connection not found c-9/77/7"
        assert not session.closed


async def test_error_eof_closes_a_connection_cleanly_and_other_text_is_an_error():
    async with session_with_raw_peer("server") as (session, peer, _):
        clean = await session.dial("tcp", "a:1")
        broken = await session.dial("tcp", "b:1")
        await peer.send(msg.data(clean.conn_id, b"last words"))
        await peer.send(msg.error(clean.conn_id, "EOF"))
        await peer.send(msg.error(broken.conn_id, "dial tcp b:1: connection refused"))
        assert await clean.read() == b"last words"
        assert await clean.read() == b""
        with pytest.raises(TunnelClosedError, match="connection refused"):
            await broken.read()
        assert session.conns == {}


async def test_closing_a_connection_sends_error_eof():
    async with session_with_raw_peer("server") as (session, peer, _):
        conn = await session.dial("tcp", "a:1")
        await conn.write(b"bye")
        await conn.close()
        messages = peer.drain()
        assert [(m.type, m.payload) for m in messages[1:]] == [
            (MessageType.DATA, b"bye"),
            (MessageType.ERROR, b"EOF"),
        ]
        with pytest.raises(TunnelClosedError):
            await conn.write(b"more")


async def test_a_text_frame_ends_the_session():
    async with session_with_raw_peer("server") as (session, peer, _):
        await peer.transport.send_text("hello")
        await settle()
        assert session.close_reason == "wrong websocket message type"


async def test_a_malformed_frame_ends_the_session_with_the_reason():
    async with session_with_raw_peer("server") as (session, peer, _):
        await peer.send_bytes(b"\x02\x04")
        assert (
            session.close_reason
            == "protocol error: truncated varint in message type at byte 2 (frame of 2 bytes)"
        )


async def test_frames_of_unknown_type_are_ignored_like_remotedialer():
    async with session_with_raw_peer("server") as (session, peer, _):
        await peer.send_bytes(msg.encode_varint(1) + msg.encode_varint(2) + msg.encode_varint(42) + b"future")
        assert not session.closed
        conn = await session.dial("tcp", "a:1")
        await peer.send(msg.data(conn.conn_id, b"ok"))
        assert await conn.read() == b"ok"


async def test_a_connect_refused_by_the_authorizer_ends_the_whole_session():
    dialer = ServiceDialer()
    async with session_with_raw_peer(
        "client", connect_authorizer=lambda p, a: p == "tcp", local_dialer=dialer
    ) as (
        session,
        peer,
        _,
    ):
        await peer.send(msg.connect(2, "unix", "/var/run/docker.sock"))
        assert session.close_reason == "connect not allowed: unix//var/run/docker.sock"
        assert dialer.dialed == []


async def test_a_server_session_refuses_connects_by_default():
    async with session_with_raw_peer("server") as (session, peer, _):
        await peer.send(msg.connect(2, "tcp", "127.0.0.1:22"))
        assert session.closed
        assert "connect not allowed" in session.close_reason


async def test_a_failed_local_dial_is_answered_with_error_carrying_the_reason():
    dialer = ServiceDialer()
    async with session_with_raw_peer("client", connect_authorizer=allow_all, local_dialer=dialer) as (
        session,
        peer,
        _,
    ):
        await peer.send(msg.connect(2, "mem", "refuse"))
        await settle()
        [reply] = peer.drain()
        assert (reply.type, reply.conn_id) == (MessageType.ERROR, 2)
        assert reply.error_text() == "dial mem refuse: connection refused"
        assert not session.closed
        assert session.conns == {}


async def test_the_client_pipes_a_dialed_connection_both_ways():
    dialer = ServiceDialer()
    async with session_with_raw_peer("client", connect_authorizer=allow_all, local_dialer=dialer) as (
        _s,
        peer,
        _,
    ):
        await peer.send(msg.connect(2, "mem", "echo"))
        await peer.send(msg.data(2, b"ping?"))
        await settle()
        data = [m for m in peer.drain() if m.type is MessageType.DATA]
        assert b"".join(m.payload for m in data) == b"ping?"
        assert all(m.deadline_ms == 15000 for m in data)
    await dialer.aclose()


async def test_closing_the_session_ends_every_connection_with_tunnel_disconnect():
    async with session_with_raw_peer("server") as (session, _peer, _):
        conns = [await session.dial("tcp", f"h:{i}") for i in range(4)]
        await session.close("bye")
        for conn in conns:
            assert conn.close_reason == "tunnel disconnect"
        with pytest.raises(TunnelClosedError, match="bye"):
            await session.dial("tcp", "h:9")


async def test_an_unclean_transport_end_closes_the_session_and_its_connections():
    async with session_with_raw_peer("server") as (session, peer, _):
        conn = await session.dial("tcp", "h:1")
        await peer.transport.close("killed")
        await settle()
        assert session.closed
        with pytest.raises(TunnelClosedError, match="tunnel disconnect"):
            await conn.read()


async def test_the_receiver_pauses_a_sender_above_the_buffer_limit_and_resumes_below():
    settings = SessionSettings(clock=FakeClock(), max_buffer_bytes=1000, resume_below_bytes=100)
    async with session_with_raw_peer("server", settings=settings) as (session, peer, _):
        conn = await session.dial("tcp", "h:1")
        await peer.send(msg.data(conn.conn_id, b"x" * 1000))
        assert [m.type for m in peer.drain()] == [MessageType.CONNECT], "at the limit: no Pause yet"
        await peer.send(msg.data(conn.conn_id, b"x"))
        await peer.send(msg.data(conn.conn_id, b"x"))
        assert [m.type for m in peer.drain()][1:] == [MessageType.PAUSE], (
            "one Pause, however much more arrives"
        )
        await conn.read(901)
        await settle()
        assert [m.type for m in peer.drain()][2:] == [], "101 bytes left: still paused"
        await conn.read(2)
        await settle()  # Resume goes out through the control queue
        assert [m.type for m in peer.drain()][2:] == [MessageType.RESUME]


async def test_a_writer_paused_by_its_peer_waits_until_resume():
    async with session_with_raw_peer("server") as (session, peer, _):
        conn = await session.dial("tcp", "h:1")
        await peer.send(msg.pause(conn.conn_id))
        writer = asyncio.ensure_future(conn.write(b"held"))
        await settle()
        assert not writer.done()
        assert [m.type for m in peer.drain()] == [MessageType.CONNECT]
        await peer.send(msg.resume(conn.conn_id))
        await writer
        assert [m.payload for m in peer.drain()][1:] == [b"held"]


async def test_a_peer_that_ignores_pause_loses_the_connection_at_the_hard_limit():
    settings = SessionSettings(
        clock=FakeClock(), max_buffer_bytes=1000, resume_below_bytes=100, hard_buffer_limit_bytes=4000
    )
    async with session_with_raw_peer("server", settings=settings) as (session, peer, _):
        conn = await session.dial("tcp", "h:1")
        for _ in range(5):
            await peer.send(msg.data(conn.conn_id, b"y" * 900))
        assert conn.closed
        assert "peer ignored Pause, 4500 bytes would be buffered (limit 4000)" in conn.close_reason
        assert conn.buffered_bytes == 0, "a lost connection's buffer is released"
        assert session.buffered_bytes == 0
        last = peer.drain()[-1]
        assert (last.type, last.conn_id) == (MessageType.ERROR, conn.conn_id)
        assert not session.closed


async def test_a_peer_that_pauses_us_and_goes_quiet_is_nudged_with_resume_then_written_to_again():
    async with session_with_raw_peer("server") as (session, peer, clock):
        conn = await session.dial("tcp", "h:1")
        await peer.send(msg.pause(conn.conn_id))
        writer = asyncio.ensure_future(conn.write(b"upload"))
        await clock.advance(0.4)
        assert [m.type for m in peer.drain()] == [MessageType.CONNECT]
        await clock.advance(0.1)
        assert [m.type for m in peer.drain()][1:] == [MessageType.RESUME], "its own writes may be stuck"
        assert not writer.done(), "we still wait: it may really be full"
        await clock.advance(1.0)
        await writer
        assert [m.payload for m in peer.drain()][2:] == [b"upload"]


async def test_a_paused_peer_that_keeps_sending_is_not_nudged():
    async with session_with_raw_peer("server") as (session, peer, clock):
        conn = await session.dial("tcp", "h:1")
        await peer.send(msg.pause(conn.conn_id))
        writer = asyncio.ensure_future(conn.write(b"upload"))
        for _ in range(10):
            await peer.send(msg.data(conn.conn_id, b"download"))
            await conn.read()
            await clock.advance(0.4)
        assert MessageType.RESUME not in [m.type for m in peer.drain()]
        assert not writer.done()
        await peer.send(msg.resume(conn.conn_id))
        await writer


async def test_a_resume_not_followed_by_data_is_answered_once_to_wake_the_peers_writer():
    async with session_with_raw_peer("server") as (session, peer, clock):
        conn = await session.dial("tcp", "h:1")
        await peer.send(msg.pause(conn.conn_id))
        await peer.send(msg.resume(conn.conn_id))
        await clock.advance(0.5)
        await clock.advance(5)
        assert [m.type for m in peer.drain()][1:] == [MessageType.RESUME]


async def test_no_resume_is_sent_when_the_peers_data_follows_its_resume():
    async with session_with_raw_peer("server") as (session, peer, clock):
        conn = await session.dial("tcp", "h:1")
        await peer.send(msg.pause(conn.conn_id))
        await peer.send(msg.resume(conn.conn_id))
        await peer.send(msg.data(conn.conn_id, b"flowing"))
        await clock.advance(5)
        assert [m.type for m in peer.drain()][1:] == []


async def test_pause_is_repeated_while_a_peer_keeps_sending_past_the_limit():
    settings = SessionSettings(
        clock=FakeClock(), max_buffer_bytes=1000, resume_below_bytes=100, hard_buffer_limit_bytes=100_000
    )
    async with session_with_raw_peer("server", settings=settings) as (session, peer, _):
        conn = await session.dial("tcp", "h:1")
        for _ in range(10):
            await peer.send(msg.data(conn.conn_id, b"z" * 50))
        await peer.send(msg.data(conn.conn_id, b"z" * 600))
        assert [m.type for m in peer.drain()][1:] == [MessageType.PAUSE]
        await peer.send(msg.data(conn.conn_id, b"z" * 50))
        assert [m.type for m in peer.drain()][2:] == [], "less than resume_below_bytes more: no new Pause"
        await peer.send(msg.data(conn.conn_id, b"z" * 60))
        assert [m.type for m in peer.drain()][2:] == [MessageType.PAUSE], (
            "a peer that forgot our Pause hears it again"
        )

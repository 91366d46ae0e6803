"""The session manager: sessions by client key, dials through the first, hooks and trace events."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import SessionNotFoundError
from corral.model.trace import TunnelClosed, TunnelOpened
from corral.tunnel.clock import settle
from corral.tunnel.manager import SessionManager, trace_identity
from corral.tunnel.memory import memory_pair
from corral.tunnel.message import MessageType, decode
from corral.tunnel.session import Session


def _server_session(key: str) -> tuple[Session, object]:
    ours, theirs = memory_pair(max_queued_frames=1024)
    return Session(ours, role="server", client_key=key), theirs


async def test_dials_go_through_the_first_session_of_a_key():
    manager = SessionManager()
    first, first_peer = _server_session("c-1")
    second, second_peer = _server_session("c-1")
    manager.add("c-1", first)
    manager.add("c-1", second)
    conn = await manager.dial("c-1", "tcp", "10.43.0.1:443")
    assert conn.session is first
    assert decode(first_peer._inbox[0].data).type is MessageType.CONNECT
    assert not second_peer._inbox
    manager.remove(first)
    assert (await manager.dial("c-1", "tcp", "10.43.0.1:443")).session is second
    await settle()
    assert first.closed, "a removed session is closed"


async def test_has_session_follows_adds_and_removes():
    manager = SessionManager()
    session, _ = _server_session("c-1:node-1")
    assert not manager.has_session("c-1:node-1")
    manager.add("c-1:node-1", session)
    assert manager.has_session("c-1:node-1")
    assert manager.client_keys() == ["c-1:node-1"]
    manager.remove(session)
    manager.remove(session)
    assert not manager.has_session("c-1:node-1")
    assert manager.client_keys() == []


async def test_dialing_an_unknown_key_raises_session_not_found_naming_it():
    with pytest.raises(SessionNotFoundError, match="failed to find Session for client c-404"):
        await SessionManager().dial("c-404", "tcp", "a:1")


async def test_hooks_and_trace_events_announce_sessions():
    events = []
    hooks = []
    clock = iter([1.5, 2.5])
    manager = SessionManager(
        on_connect=lambda key, s: hooks.append(("connect", key)),
        on_disconnect=lambda key, s: hooks.append(("disconnect", key)),
        trace_sink=events.append,
        trace_time=lambda: next(clock),
    )
    session, peer = _server_session("c-1:node-2")
    served = asyncio.ensure_future(manager.serve("c-1:node-2", session))
    await settle()
    await peer.close("agent killed")
    assert "agent killed" in await asyncio.wait_for(served, 5)
    assert hooks == [("connect", "c-1:node-2"), ("disconnect", "c-1:node-2")]
    assert events[0] == TunnelOpened(t=1.5, cluster="c-1", agent="node-agent/node-2")
    assert isinstance(events[1], TunnelClosed)
    assert (events[1].t, events[1].cluster, events[1].agent) == (2.5, "c-1", "node-agent/node-2")
    assert "agent killed" in events[1].reason


def test_client_keys_map_to_trace_identities_like_rancher():
    assert trace_identity("c-abc") == ("c-abc", "cluster-agent")
    assert trace_identity("c-abc:worker-1") == ("c-abc", "node-agent/worker-1")

"""The memory bound of `corral.tunnel` (its package docstring) under hostile scripts, measured.

Buffer accounting is asserted after every frame by `feed_frames`; here tracemalloc also measures
everything the session allocates while hypothesis-chosen scripts run: floods of Connects, Data
past every limit, Pause/Resume storms, syncs, Errors and junk, on both roles.
"""

from __future__ import annotations

import asyncio
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.tunnel import message as msg
from corral.tunnel.clock import FakeClock
from corral.tunnel.message import Message, MessageType, encode
from corral.tunnel.settings import KIB, SessionSettings
from corral.tunnel.testing import feed_frames

HOSTILE = SessionSettings(
    clock=FakeClock(),
    max_connections=32,
    max_buffer_bytes=4096,
    resume_below_bytes=512,
    hard_buffer_limit_bytes=16384,
    max_session_buffer_bytes=65536,  # less than 32 connections x 16 KiB: the session cap binds
    max_pending_control_frames=256,
)
PER_CONNECTION_BYTES = 24 * KIB
"""Bookkeeping of one connection on the agent's side (its state, three tasks, an in-memory target
holding at most 1 KiB each way): measured at about 12 KiB, doubled."""
FIXED_BYTES = 256 * KIB
"""The session, its tasks and queues when empty, and the harness around it."""
REPLY_BYTES = 256
"""One queued reply: a Message and its payload (an Error text is at most 100 bytes)."""
MAX_FRAME = 48 * KIB


def bound(s: SessionSettings) -> int:
    """The stated per-session bound with these settings (see the `corral.tunnel` docstring)."""
    data = min(s.max_session_buffer_bytes, s.max_connections * s.hard_buffer_limit_bytes)
    replies = (s.max_pending_control_frames + 2 * s.max_connections) * REPLY_BYTES
    return data + replies + s.max_connections * PER_CONNECTION_BYTES + 2 * MAX_FRAME + FIXED_BYTES


@st.composite
def hostile_frame(draw: st.DrawFn) -> list[bytes | str]:
    conn_id = draw(st.integers(1, 40))
    kind = draw(
        st.sampled_from(["connect", "flood", "data", "big", "pause", "storm", "error", "sync", "junk"])
    )
    if kind == "connect":
        target = draw(
            st.sampled_from([b"mem/hold", b"mem/echo", b"mem/refuse", b"mem/deny", b"tcp/\xff:99999"])
        )
        return [encode(Message(1, conn_id, MessageType.CONNECT, target))]
    if kind == "flood":
        return [encode(msg.connect(cid, "mem", "hold")) for cid in range(conn_id, conn_id + 200)]
    if kind == "data":
        return [encode(msg.data(conn_id, b"d" * draw(st.integers(0, 8 * KIB))))]
    if kind == "big":
        return [encode(msg.data(conn_id, b"D" * MAX_FRAME))] * draw(st.integers(1, 4))
    if kind == "pause":
        return [encode(msg.pause(conn_id))]
    if kind == "storm":
        return [encode(msg.pause(conn_id) if i % 2 else msg.resume(conn_id)) for i in range(300)]
    if kind == "error":
        return [encode(msg.error(conn_id, draw(st.text(max_size=20))))]
    if kind == "sync":
        return [encode(msg.sync_connections(draw(st.lists(st.integers(1, 40), max_size=40))))]
    return [draw(st.binary(max_size=30))]


def _measure(frames: list[bytes | str], role: str) -> tuple[str, int]:
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        reason = asyncio.run(feed_frames(frames, role=role, settings=HOSTILE))
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    return reason, peak


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["server", "client"]), st.lists(hostile_frame(), max_size=25))
def test_a_session_stays_within_its_stated_memory_bound_under_hostile_scripts(role, script):
    frames = [frame for group in script for frame in group]
    reason, peak = _measure(frames, role)
    assert isinstance(reason, str)
    assert peak <= bound(HOSTILE), f"peak {peak} bytes, bound {bound(HOSTILE)}"


def test_the_worst_script_found_by_hand_fills_every_cap_and_stays_within_the_bound():
    """Every connection opened to a target that never reads, then Data past every limit."""
    frames: list[bytes | str] = [encode(msg.connect(cid, "mem", "hold")) for cid in range(2, 34)]
    for _ in range(4):
        frames += [encode(msg.data(cid, b"w" * 12 * KIB)) for cid in range(2, 34)]
    frames += [encode(msg.data(99, b"?")) for _ in range(400)]  # Errors the peer never takes
    reason, peak = _measure(frames, "client")
    assert reason == "input fed"
    print(f"peak {peak} bytes against a bound of {bound(HOSTILE)}")
    assert peak <= bound(HOSTILE)

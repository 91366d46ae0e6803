"""The generic tunnel semantics check over the in-memory pair (the websocket run is in test_websocket)."""

from __future__ import annotations

from functools import partial

from corral.tunnel.testing import check_tunnel_semantics, memory_session_pair


async def test_the_in_memory_pair_has_remotedialer_semantics():
    await check_tunnel_semantics(memory_session_pair)


async def test_sessions_that_ask_for_each_frame_have_the_same_semantics():
    await check_tunnel_semantics(partial(memory_session_pair, push=False))

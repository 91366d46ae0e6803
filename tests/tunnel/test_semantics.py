"""The generic tunnel semantics check over the in-memory pair (the websocket run is in test_websocket)."""

from __future__ import annotations

from corral.tunnel.testing import check_tunnel_semantics, memory_session_pair


async def test_the_in_memory_pair_has_remotedialer_semantics():
    await check_tunnel_semantics(memory_session_pair)

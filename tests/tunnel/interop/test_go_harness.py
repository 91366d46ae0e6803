"""The Go peers on their own (Go server + Go client): the baseline the corral interop tests rely on.

If these fail, the harness is broken, not corral's tunnel.
"""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from ._target import payload_sha256, payload_stream
from .conftest import ClientStarter, GoBinaries, GoServer, start_go_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


async def test_go_server_proxies_get_and_post_through_go_client(
    go_server: GoServer, start_go_client: ClientStarter, http_target: str
) -> None:
    client = await start_go_client(go_server.connect_url, "-id", "go-agent")
    await client.expect_line("connected ")
    await go_server.wait_for_clients({"go-agent"})
    size = 3 * 1024 * 1024 + 17
    async with aiohttp.ClientSession() as http:
        url = go_server.proxy_url("go-agent", http_target, f"bytes?size={size}&seed=7")
        async with http.get(url) as resp:
            assert resp.status == 200
            body = await resp.read()
        async with http.post(
            go_server.proxy_url("go-agent", http_target, "sha256"), data=payload_stream(size, 8)
        ) as resp:
            posted = await resp.json()
    assert len(body) == size
    assert payload_sha256(size, 7) == hashlib.sha256(body).hexdigest()
    assert posted == {"sha256": payload_sha256(size, 8), "size": size, "method": "POST"}


async def test_go_client_reports_refusal_and_exits_when_its_key_is_not_allowed(
    go_binaries: GoBinaries, start_go_client: ClientStarter
) -> None:
    server = await start_go_server(go_binaries, "-allow", "someone-else")
    try:
        client = await start_go_client(server.connect_url, "-id", "go-agent")
        assert await client.wait_exit() == 3
        lines = await client.remaining_lines()
        assert lines == ["refused 401: failed authentication"]
    finally:
        await server.process.stop()

"""HTTP and HTTPS through a tunnel session with aiohttp's client, and plain asyncio streams."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from aiohttp import web

from corral.controlplane.pki import CertificateAuthority
from corral.errors import SessionNotFoundError
from corral.tunnel.dialer import TunnelConnector, open_connection, tcp_address
from corral.tunnel.manager import SessionManager
from corral.tunnel.testing import allow_all, memory_session_pair
from corral.tunnel.transport import dial_local


def _serving_certificate(tmp_path):
    """A CA and a serving certificate for 127.0.0.1: (CA file, cert file, key file)."""
    authority = CertificateAuthority.create("tunnel test CA")
    serving = authority.issue_serving("kube-apiserver", hosts=["127.0.0.1"])
    ca_file, cert_file, key_file = tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"
    ca_file.write_bytes(authority.cert_pem)
    cert_file.write_bytes(serving.cert_pem)
    key_file.write_bytes(serving.key_pem)
    return ca_file, cert_file, key_file


async def _start_app(ssl_context=None):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.query.get('name', '')} over {request.scheme}")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"b" * (3 * 1024 * 1024))

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def tunnel():
    manager = SessionManager()
    async with memory_session_pair(allow_all, dial_local, client_key="c-1") as (server, client):
        manager.add("c-1", server)
        yield manager, client
        manager.remove(server)


async def test_aiohttp_sends_http_through_the_tunnel_to_the_agents_side(tunnel):
    manager, _ = tunnel
    runner, port = await _start_app()
    try:
        async with aiohttp.ClientSession(connector=TunnelConnector(manager, "c-1")) as http:
            async with http.get(f"http://127.0.0.1:{port}/hello", params={"name": "alice"}) as response:
                assert response.status == 200
                assert await response.text() == "hello alice over http"
            async with http.get(f"http://127.0.0.1:{port}/big") as response:
                assert len(await response.read()) == 3 * 1024 * 1024
    finally:
        await runner.cleanup()


async def test_aiohttp_speaks_tls_end_to_end_through_the_tunnel(tunnel, tmp_path):
    manager, _ = tunnel
    ca_file, cert_file, key_file = _serving_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    runner, port = await _start_app(server_ctx)
    trusting = ssl.create_default_context(cafile=str(ca_file))
    try:
        trusted = TunnelConnector(manager, "c-1", ssl=trusting)
        url = f"https://127.0.0.1:{port}/hello"
        async with aiohttp.ClientSession(connector=trusted) as http, http.get(url) as r:
            assert await r.text() == "hello  over https"
        async with aiohttp.ClientSession(connector=TunnelConnector(manager, "c-1")) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"https://127.0.0.1:{port}/hello")
    finally:
        await runner.cleanup()


async def test_open_connection_gives_asyncio_streams_to_an_address_on_the_agents_side(tunnel):
    manager, _ = tunnel

    async def shout(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    import asyncio

    listener = await asyncio.start_server(shout, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await open_connection(manager, "c-1", "127.0.0.1", port)
        writer.write(b"quiet please\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b"QUIET PLEASE\n"
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()


async def test_dialing_a_key_without_a_session_raises_session_not_found():
    with pytest.raises(SessionNotFoundError, match="c-nowhere"):
        await open_connection(SessionManager(), "c-nowhere", "10.43.0.1", 443)


def test_ipv6_hosts_are_bracketed_like_go():
    assert tcp_address("fd00::1", 6443) == "[fd00::1]:6443"
    assert tcp_address("10.43.0.1", 443) == "10.43.0.1:443"

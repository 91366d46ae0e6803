"""corral's tunnel server dialing through a Go remotedialer client to an HTTP server on the agent's side.

The server is an aiohttp app with `tunnel_handler`; requests go through `corral.tunnel.dialer`
(`TunnelConnector` for HTTP, `open_connection` for raw streams). rd-client is remotedialer's own
client session, allowing TCP to loopback addresses only.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from corral.controlplane.pki import CertificateAuthority
from corral.errors import TunnelError
from corral.tunnel.dialer import TunnelConnector, open_connection

from ._corral_peers import CorralServer, corral_server
from ._processes import PeerProcess
from ._target import body_sha256, payload_sha256, payload_stream, target_app
from .conftest import ClientStarter

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

KEY = "go-agent"
BIG = 50 * 1024 * 1024
ECHO_BYTES = 1024 * 1024


@pytest.fixture
async def server() -> AsyncIterator[CorralServer]:
    async with corral_server() as running:
        yield running


@pytest.fixture
async def go_client(server: CorralServer, start_go_client: ClientStarter) -> PeerProcess:
    """rd-client connected to the corral server as KEY."""
    client: PeerProcess = await start_go_client(server.connect_url, "-id", KEY)
    await client.expect_line("connected ")
    await server.wait_for_session(KEY)
    return client


def _tunnel_http(server: CorralServer, **connector_args: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=TunnelConnector(server.manager, KEY, **connector_args))


@pytest.mark.usefixtures("go_client")
async def test_corral_server_sends_every_method_through_go_client(
    server: CorralServer, http_target: str
) -> None:
    async with _tunnel_http(server) as http:
        async with http.get(f"http://{http_target}/hello?n=2") as resp:
            assert (resp.status, await resp.text()) == (200, "hello 2")
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            async with http.request(method, f"http://{http_target}/sha256", data=b"y" * 999) as resp:
                assert await resp.json() == {
                    "sha256": hashlib.sha256(b"y" * 999).hexdigest(),
                    "size": 999,
                    "method": method,
                }


@pytest.mark.usefixtures("go_client")
async def test_fifty_megabyte_bodies_stream_both_ways_through_go_client(
    server: CorralServer, http_target: str
) -> None:
    async with _tunnel_http(server) as http:
        async with http.get(f"http://{http_target}/bytes?size={BIG}&seed=4") as resp:
            assert resp.status == 200
            assert await body_sha256(resp) == (payload_sha256(BIG, 4), BIG)
        async with http.post(f"http://{http_target}/sha256", data=payload_stream(BIG, 5)) as resp:
            assert await resp.json() == {"sha256": payload_sha256(BIG, 5), "size": BIG, "method": "POST"}
        # Full duplex, kept under remotedialer's MaxBuffer (see test_go_server_corral_client.ECHO_BYTES).
        async with http.post(f"http://{http_target}/echo", data=payload_stream(ECHO_BYTES, 6)) as resp:
            assert await body_sha256(resp) == (payload_sha256(ECHO_BYTES, 6), ECHO_BYTES)


@pytest.mark.usefixtures("go_client")
async def test_hundred_concurrent_requests_through_go_client_each_get_their_own_body(
    server: CorralServer, http_target: str
) -> None:
    size = 64 * 1024 + 5

    async with _tunnel_http(server, limit=0) as http:

        async def fetch(seed: int) -> tuple[str, int]:
            async with http.get(f"http://{http_target}/bytes?size={size}&seed={seed}") as resp:
                assert resp.status == 200
                return await body_sha256(resp)

        async with asyncio.timeout(120):
            results = await asyncio.gather(*(fetch(seed) for seed in range(100)))
    assert results == [(payload_sha256(size, seed), size) for seed in range(100)]
    assert len(server.manager.first(KEY).conns) <= 100


@pytest.mark.usefixtures("go_client")
async def test_open_connection_carries_a_raw_http_exchange_through_go_client(
    server: CorralServer, http_target: str
) -> None:
    host, port = http_target.split(":")
    reader, writer = await open_connection(server.manager, KEY, host, int(port))
    writer.write(f"GET /hello?n=raw HTTP/1.1\r\nHost: {http_target}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(10):
        response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nhello raw")


@pytest.fixture
async def https_target(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """``host:port`` of the HTTP target behind TLS, and a client context trusting its CA only."""
    authority = CertificateAuthority.create("interop test CA")
    serving = authority.issue_serving("interop target", hosts=["127.0.0.1", "localhost"])
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = TestServer(target_app(), host="127.0.0.1")
    await server.start_server(ssl=server_context)
    try:
        yield f"127.0.0.1:{server.port}", ssl.create_default_context(cadata=authority.cert_pem.decode())
    finally:
        await server.close()


@pytest.mark.usefixtures("go_client")
async def test_https_runs_end_to_end_through_go_client_with_certificates_checked_by_corral(
    server: CorralServer, https_target: tuple[str, ssl.SSLContext]
) -> None:
    target, trusting = https_target
    async with _tunnel_http(server) as http:
        async with http.get(f"https://{target}/hello?n=tls", ssl=trusting) as resp:
            assert await resp.text() == "hello tls"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"https://{target}/hello")  # the system's CAs do not know this one
        port = target.split(":")[1]
        async with http.get(f"https://localhost:{port}/hello?n=name", ssl=trusting) as resp:
            assert await resp.text() == "hello name"  # "localhost" went in the Connect frame


async def test_a_corral_reader_that_stops_reading_pauses_the_go_sender_and_loses_nothing(
    server: CorralServer, go_client: PeerProcess, http_target: str
) -> None:
    settings = server.manager.first(KEY).settings
    size = 40 * 1024 * 1024
    conn = await server.manager.dial(KEY, "tcp", http_target)
    await conn.write(f"GET /bytes?size={size}&seed=12 HTTP/1.1\r\nHost: {http_target}\r\n\r\n".encode())
    # Nobody reads: past max_buffer_bytes corral sends Pause; once Go has stopped, what is
    # buffered stops growing (checked 200 ms apart, at most 50 times), far short of 40 MB.
    readings = [-1]
    for _ in range(50):
        await asyncio.sleep(0.2)
        readings.append(conn.buffered_bytes)
        if readings[-1] == readings[-2] > settings.max_buffer_bytes:
            break
    assert readings[-1] == readings[-2] > settings.max_buffer_bytes, readings
    assert readings[-1] < min(size, settings.hard_buffer_limit_bytes)
    assert not conn.closed, conn.close_reason
    received = bytearray()
    async with asyncio.timeout(60):
        while (end := received.find(b"\r\n\r\n")) < 0 or len(received) - end - 4 < size:
            chunk = await conn.read(1 << 20)
            assert chunk, f"connection ended after {len(received)} bytes: {conn.close_reason}"
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert hashlib.sha256(body).hexdigest() == payload_sha256(size, 12)
    await conn.close()


async def test_a_failed_dial_on_the_go_side_reaches_corral_as_an_error_and_the_session_lives_on(
    server: CorralServer, go_client: PeerProcess, http_target: str, unused_tcp_port: int
) -> None:
    conn = await server.manager.dial(KEY, "tcp", f"127.0.0.1:{unused_tcp_port}")
    async with asyncio.timeout(10):
        with pytest.raises(TunnelError, match="refused"):
            await conn.read(1)
    async with _tunnel_http(server) as http, http.get(f"http://{http_target}/hello") as resp:
        assert await resp.text() == "hello"
    assert go_client.proc.returncode is None


async def test_a_connect_the_go_client_refuses_ends_the_whole_session(
    server: CorralServer, go_client: PeerProcess
) -> None:
    await server.manager.dial(KEY, "unix", "/run/not-allowed.sock")
    assert await go_client.wait_exit() == 1
    assert (await go_client.remaining_lines())[-1] == "disconnected: connect not allowed"
    await server.wait_for_session(KEY, present=False)


async def test_go_client_refused_by_the_corral_authorizer_gets_401_and_exits(
    server: CorralServer, start_go_client: ClientStarter
) -> None:
    client = await start_go_client(server.connect_url, "-id", "intruder")
    assert await client.wait_exit() == 3
    assert await client.remaining_lines() == ["refused 401: failed authentication"]
    assert server.manager.client_keys() == []


async def test_go_client_gets_400_with_the_text_when_the_corral_authorizer_raises(
    server: CorralServer, start_go_client: ClientStarter
) -> None:
    client = await start_go_client(server.connect_url, "-id", "explode")
    assert await client.wait_exit() == 3
    assert await client.remaining_lines() == ["refused 400: cluster not found"]


async def test_go_client_ends_when_corral_closes_the_session(
    server: CorralServer, go_client: PeerProcess
) -> None:
    await server.manager.first(KEY).close("test closes it")
    assert await go_client.wait_exit() == 1
    assert (await go_client.remaining_lines())[-1].startswith("disconnected: ")
    await server.wait_for_session(KEY, present=False)


async def test_corral_server_drops_the_session_of_a_killed_go_client(
    server: CorralServer, go_client: PeerProcess
) -> None:
    go_client.kill()
    await server.wait_for_session(KEY, present=False, timeout_seconds=15)
    assert server.disconnects == [KEY]

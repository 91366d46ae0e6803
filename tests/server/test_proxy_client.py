"""The proxy's HTTP/1.1 client against a scripted server: keep-alive reuse, framing, resends, idle expiry."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral.controlplane.pki import CertificateAuthority
from corral.server import proxy_client
from corral.server.connect import TunnelEndpoints
from corral.server.proxy_client import ConnectionPool, UpstreamError, request_head
from corral.server.proxy_dial import DirectDialer, Endpoint
from corral.server.proxy_interfaces import DialError
from corral.server.tunnel_dialer import TunnelDialer
from corral.tunnel import Session, memory_pair
from corral.tunnel.testing import allow_all, wait_until
from tests.server._tunnel_fakes import Clusters, Registrar, Tokens

Answer = Callable[[bytes, int], "bytes | tuple[bytes, bool] | None"]
"""A reply to a request head on the n-th connection: bytes, (bytes, close after it), or None (close)."""
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class CountingDialer(DirectDialer):
    def __init__(self) -> None:
        super().__init__(timeout_seconds=5)
        self.dials = 0

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        self.dials += 1
        return await super().dial(cluster, host, port)


class Scripted:
    """Answers each request head it reads with ``answer(head, connection_index)``; records the heads."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[tuple[int, bytes]] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self, *, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append((index, head))
                self.bodies.append(await _read_body(reader, head))
                reply = self.answer(head, index)
                if reply is None:
                    break
                last = isinstance(reply, tuple)
                writer.write(reply[0] if isinstance(reply, tuple) else reply)
                await writer.drain()
                if last:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


@contextlib.asynccontextmanager
async def pool_for(answer: Answer) -> AsyncIterator[tuple[ConnectionPool, Scripted, CountingDialer]]:
    server = Scripted(answer)
    port = await server.start()
    dialer = CountingDialer()
    pool = ConnectionPool(
        dialer=dialer,
        cluster="c-1",
        endpoint=Endpoint(tls=False, host="127.0.0.1", port=port, prefix=""),
        context=None,
        connect_timeout_seconds=5,
        buffer_bytes=2**16,
    )
    try:
        yield pool, server, dialer
    finally:
        await pool.close()
        await server.stop()


async def _get(pool: ConnectionPool, path: str = "/api", method: str = "GET") -> tuple[int, bytes]:
    response = await pool.request(method, path, [("Accept", "application/json")], None)
    try:
        body = b"".join([chunk async for chunk in response.iter_chunks()])
    finally:
        response.close()
    return response.status, body


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true within 5 s")


async def test_requests_in_turn_share_one_kept_connection():
    async with pool_for(lambda head, _: OK) as (pool, server, dialer):
        for _ in range(3):
            assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 1
        assert [index for index, _ in server.heads] == [0, 0, 0]
        assert (
            server.heads[0][1]
            == (
                f"GET /api HTTP/1.1\r\nHost: 127.0.0.1:{pool.endpoint.port}\r\n"
                "Accept: application/json\r\n\r\n"
            ).encode()
        )
        assert pool.idle_count == 1


async def test_concurrent_requests_each_get_a_connection_and_all_are_kept():
    async with pool_for(lambda head, _: OK) as (pool, _, dialer):
        results = await asyncio.gather(*(_get(pool) for _ in range(4)))
        assert results == [(200, b"{}")] * 4
        assert dialer.dials == 4
        assert pool.idle_count == 4


async def test_a_chunked_answer_is_joined_and_marked_chunked():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with pool_for(lambda head, _: chunked) as (pool, _, dialer):
        response = await pool.request("GET", "/w", [], None)
        assert response.chunked
        assert b"".join([c async for c in response.iter_chunks()]) == b"abcde"
        response.close()
        assert await _get(pool) == (200, b"abcde")
        assert dialer.dials == 1


async def test_a_head_answer_has_no_body_and_its_connection_is_not_kept():
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    async with pool_for(lambda head, _: head_answer if head.startswith(b"HEAD") else OK) as (pool, _, dialer):
        assert await _get(pool, method="HEAD") == (200, b"")
        assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 2


async def test_an_interim_answer_is_skipped():
    async with pool_for(lambda head, _: b"HTTP/1.1 100 Continue\r\n\r\n" + OK) as (pool, _, dialer):
        assert await _get(pool) == (200, b"{}")
        assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 1


async def test_an_answer_ended_by_the_close_is_whole_and_its_connection_not_kept():
    close_framed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    async with pool_for(lambda head, index: (close_framed, True) if index == 0 else OK) as (pool, _, dialer):
        assert await _get(pool) == (200, b"until the end")
        assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 2


async def test_a_kept_connection_the_server_closed_is_replaced_for_a_read():
    # every connection answers once and is then closed by the server, without saying so
    async with pool_for(lambda head, index: OK) as (pool, server, dialer):
        assert await _get(pool) == (200, b"{}")
        server.answer = lambda head, index: OK if index > 0 else None
        assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 2


async def test_a_write_on_a_connection_closed_unanswered_is_not_sent_again():
    async with pool_for(lambda head, index: OK) as (pool, server, dialer):
        assert await _get(pool) == (200, b"{}")
        server.answer = lambda head, index: OK if index > 0 else None
        with pytest.raises(UpstreamError) as caught:
            await pool.request("POST", "/api", [("Content-Length", "2")], b"{}")
        assert caught.value.unanswered
        assert dialer.dials == 1


async def test_a_streamed_body_goes_out_chunked_when_its_length_is_unknown():
    async def body() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b""
        yield b"part two"

    async with pool_for(lambda head, _: OK) as (pool, server, _):
        response = await pool.request("POST", "/api", [("Transfer-Encoding", "chunked")], body())
        response.close()
        assert server.bodies == [b"part one, part two"]
        assert b"Transfer-Encoding: chunked\r\n" in server.heads[0][1]


async def test_a_streamed_body_of_known_length_goes_out_as_it_is():
    async def body() -> AsyncIterator[bytes]:
        yield b"12345"
        yield b"67890"

    async with pool_for(lambda head, _: OK) as (pool, server, dialer):
        response = await pool.request("PUT", "/api", [("Content-Length", "10")], body())
        response.close()
        assert server.bodies == [b"1234567890"]
        assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 1


async def test_idle_connections_are_closed_after_the_idle_time(monkeypatch):
    monkeypatch.setattr(proxy_client, "IDLE_SECONDS", 0.05)
    async with pool_for(lambda head, _: OK) as (pool, _, dialer):
        assert await _get(pool) == (200, b"{}")
        assert pool.idle_count == 1
        await _until(lambda: pool.idle_count == 0)
        assert await _get(pool) == (200, b"{}")
        assert dialer.dials == 2


async def test_a_malformed_answer_is_an_error_and_the_connection_is_dropped():
    async with pool_for(lambda head, _: b"HTTP/1.1 abc nonsense\r\n\r\n") as (pool, _, _):
        with pytest.raises(UpstreamError, match="malformed response"):
            await _get(pool)
        assert pool.idle_count == 0


async def test_an_answer_head_without_end_is_refused_at_its_bound(monkeypatch):
    monkeypatch.setattr(proxy_client, "MAX_HEAD_BYTES", 4096)
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 8192
    async with pool_for(lambda head, _: endless) as (pool, _, _):
        with pytest.raises(UpstreamError, match="head is over 4096 bytes"):
            await _get(pool)
        assert pool.idle_count == 0


async def test_an_answer_head_under_the_bound_is_read():
    head = b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * 8192 + b"\r\nContent-Length: 2\r\n\r\n{}"
    async with pool_for(lambda _head, _: head) as (pool, _, _):
        assert await _get(pool) == (200, b"{}")


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nb", "a\rb"])
def test_a_line_break_in_a_header_is_refused(value):
    with pytest.raises(UpstreamError, match="line break"):
        request_head("GET", "/", host="h", headers=[("X-Test", value)])
    with pytest.raises(UpstreamError, match="line break"):
        request_head("GET", "/", host="h", headers=[(value, "v")])


@contextlib.asynccontextmanager
async def tunnelled_tls_server(tmp_path: Path) -> AsyncIterator[tuple[Scripted, int, bytes, TunnelDialer]]:
    """A TLS server reached through an agent's tunnel session (the agent dials real TCP)."""
    authority = CertificateAuthority.create("proxy client test CA")
    serving = authority.issue_serving("apiserver", hosts=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = Scripted(lambda head, _: OK)
    port = await server.start(tls=context)
    endpoints = TunnelEndpoints(tokens=Tokens(), registrar=Registrar())
    server_end, client_end = memory_pair()
    ours = Session(server_end, role="server", client_key="c-1", settings=endpoints.settings)
    agent = Session(client_end, role="client", connect_authorizer=allow_all)
    tasks = [
        asyncio.ensure_future(endpoints.manager.serve("c-1", ours)),
        asyncio.ensure_future(agent.serve()),
    ]
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the agent's session")
    dialer = TunnelDialer(endpoints, clusters=Clusters(), internal=lambda cluster: False)
    try:
        yield server, port, authority.cert_pem, dialer
    finally:
        await agent.close("done")
        await ours.close("done")
        await asyncio.gather(*tasks, return_exceptions=True)
        await endpoints.close()
        await server.stop()


def _tls_pool(dialer: TunnelDialer, port: int, ca_pem: bytes) -> ConnectionPool:
    return ConnectionPool(
        dialer=dialer,
        cluster="c-1",
        endpoint=Endpoint(tls=True, host="127.0.0.1", port=port, prefix=""),
        context=ssl.create_default_context(cadata=ca_pem.decode()),
        connect_timeout_seconds=5,
        buffer_bytes=2**16,
    )


async def test_through_a_tunnel_tls_runs_on_the_tunnel_connection_and_the_connection_is_kept(tmp_path):
    async with tunnelled_tls_server(tmp_path) as (server, port, ca_pem, dialer):
        pool = _tls_pool(dialer, port, ca_pem)
        try:
            for _ in range(3):
                assert await _get(pool) == (200, b"{}")
            assert server.connections == 1
            [kept] = pool._idle
            assert kept.tls is not None  # no socket bridged to the tunnel: the client's own TLS
            assert kept.tls.version() in ("TLSv1.2", "TLSv1.3")
        finally:
            await pool.close()


async def test_through_a_tunnel_a_server_the_ca_does_not_vouch_for_is_a_dial_error(tmp_path):
    other = CertificateAuthority.create("some other CA")
    async with tunnelled_tls_server(tmp_path) as (_, port, _, dialer):
        pool = _tls_pool(dialer, port, other.cert_pem)
        try:
            with pytest.raises(DialError, match=r"tls handshake with .*certificate verify failed"):
                await _get(pool)
        finally:
            await pool.close()


async def test_a_retired_pool_closes_its_idle_connections_and_keeps_none_that_come_back():
    async with pool_for(lambda head, _: OK) as (pool, _, dialer):
        assert await _get(pool) == (200, b"{}")
        assert pool.idle_count == 1
        pool.retire()
        assert pool.idle_count == 0
        assert await _get(pool) == (200, b"{}")
        assert pool.idle_count == 0
        assert dialer.dials == 2

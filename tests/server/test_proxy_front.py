"""The server's front: plain proxied requests served from bytes, every other request handed to aiohttp.

A connection the front still serves is in ``front.connections``; a handed-over one is aiohttp's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from corral.server import proxy_front
from corral.server.proxy_front import MAX_HEAD_BYTES, response_head
from corral.tunnel.testing import wait_until
from tests.server._harness import ALICE_TOKEN, world

PODS = "/k8s/clusters/c-1/api/v1/namespaces/default/pods"


class RawClient:
    """One client connection that writes request bytes and reads answers as they are framed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    def request(self, target: str, *, method: str = "GET", extra: str = "", version: str = "1.1") -> bytes:
        return (
            f"{method} {target} HTTP/{version}\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {ALICE_TOKEN}\r\n{extra}\r\n"
        ).encode()

    async def answer(self, *, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """The next final answer (a ``100 Continue`` before it is skipped)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        if head.startswith(b"HTTP/1.1 100 "):
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode().split("\r\n")[:-2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ")[1])
        if method == "HEAD" or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                body += await self.reader.readexactly(size + 2)
                body = body[:-2]
            await self.reader.readuntil(b"\r\n")
            return status, headers, body
        return status, headers, await self.reader.readexactly(int(headers.get("content-length", "0")))


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[RawClient]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield RawClient(reader, writer, parts.netloc)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def connect_later() -> AsyncIterator[Callable[[str], Awaitable[RawClient]]]:
    """Connections that outlive the server they were opened to (closed at the end of the block)."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_one(url: str) -> RawClient:
            return await stack.enter_async_context(connect(url))

        yield open_one


async def test_plain_requests_are_served_by_the_front_on_a_kept_connection_then_handed_over_to_aiohttp():
    async with world() as w, connect(w.url) as client:
        for _ in range(2):
            client.writer.write(client.request(PODS))
            status, _headers, body = await client.answer()
            assert status == 200
            assert json.loads(body)["path"] == "/api/v1/namespaces/default/pods"
            assert len(w.front.connections) == 1
        client.writer.write(client.request("/no/such/route"))
        status, _, _ = await client.answer()
        assert status == 404
        assert not w.front.connections
        # the connection is aiohttp's for good now, and still proxies
        client.writer.write(client.request(PODS))
        status, _, body = await client.answer()
        assert status == 200
        assert json.loads(body)["path"] == "/api/v1/namespaces/default/pods"
        assert len(w.downstream.requests) == 3


async def test_pipelined_requests_are_answered_in_order():
    async with world() as w, connect(w.url) as client:
        client.writer.write(b"".join(client.request(f"{PODS}/p{i}") for i in range(3)))
        paths = []
        for _ in range(3):
            status, _, body = await client.answer()
            assert status == 200
            paths.append(json.loads(body)["path"])
        assert paths == [f"/api/v1/namespaces/default/pods/p{i}" for i in range(3)]


@pytest.mark.parametrize(
    ("method", "extra", "version"),
    [
        ("POST", "Content-Type: application/json\r\nContent-Length: 2\r\n", "1.1"),
        ("GET", "", "1.0"),
        ("GET", "Expect: 100-continue\r\n", "1.1"),
    ],
    ids=["a body", "HTTP/1.0", "Expect"],
)
async def test_requests_the_front_does_not_serve_still_reach_the_cluster_through_aiohttp(
    method, extra, version
):
    async with world() as w, connect(w.url) as client:
        data = client.request(PODS, method=method, extra=extra, version=version)
        client.writer.write(data + (b"{}" if method == "POST" else b""))
        status, _, _ = await client.answer()
        assert status == 200
        assert not w.front.connections
        [seen] = w.downstream.requests
        assert seen.method == method


async def test_a_malformed_or_endless_head_gets_aiohttp_s_answer_and_the_front_keeps_serving():
    async with world() as w, connect(w.url) as bad, connect(w.url) as endless, connect(w.url) as good:
        bad.writer.write(b"GET /k8s/clusters/c-1/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
        status, _, _ = await bad.answer()
        assert status == 400
        endless.writer.write(b"GET /k8s/clusters/c-1/x HTTP/1.1\r\nX-Long: " + b"a" * (MAX_HEAD_BYTES + 10))
        status, _, _ = await endless.answer()
        assert status in (400, 431)
        good.writer.write(good.request(PODS))
        status, _, _ = await good.answer()
        assert status == 200
        assert len(w.front.connections) == 1  # the good one; the others went to aiohttp
        assert len(w.downstream.requests) == 1


async def test_head_keeps_the_cluster_s_length_and_sends_no_body():
    async with world() as w, connect(w.url) as client:
        client.writer.write(client.request(PODS, method="HEAD"))
        status, headers, body = await client.answer(method="HEAD")
        assert status == 200
        assert body == b""
        assert headers["content-length"] != "0"
        assert len(w.front.connections) == 1
        client.writer.write(client.request(PODS))  # the connection is still in step
        status, _, body = await client.answer()
        assert status == 200
        assert json.loads(body)["path"] == "/api/v1/namespaces/default/pods"


async def test_connection_close_is_honoured_and_the_proxy_s_own_answers_are_framed():
    async with world() as w, connect(w.url) as client:
        client.writer.write(client.request("/k8s/clusters/c-unknown/api", extra="Connection: close\r\n"))
        status, headers, body = await client.answer()
        assert status == 403  # alice may not see that cluster: Rancher's Norman error
        assert json.loads(body)["Code"]["Code"] == "Forbidden"
        assert headers["content-length"] == str(len(body))
        assert await asyncio.wait_for(client.reader.read(), 5) == b""  # closed after the answer


async def test_shutdown_closes_idle_front_connections():
    async with connect_later() as later:
        async with world() as w:
            client = await later(w.url)
            client.writer.write(client.request(PODS))
            assert (await client.answer())[0] == 200
            assert len(w.front.connections) == 1
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
        assert not w.front.connections


def test_a_line_break_in_an_answer_s_header_never_reaches_the_client():
    head = response_head(200, "OK\r\nX: y", [("A", "b\r\nInjected: 1"), ("C", "d")])
    assert head == b"HTTP/1.1 200 OKX: y\r\nA: bInjected: 1\r\nC: d\r\n\r\n"
    assert response_head(299, "", []) == b"HTTP/1.1 299 \r\n\r\n"
    assert response_head(404, "", []).startswith(b"HTTP/1.1 404 Not Found\r\n")


async def test_a_client_that_leaves_mid_stream_ends_the_exchange_and_its_trace():
    async with world() as w:
        async with connect(w.url) as client:
            client.writer.write(client.request("/k8s/clusters/c-1/slow?watch=true"))
            head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"Transfer-Encoding: chunked" in head
            assert b"ADDED" in await asyncio.wait_for(client.reader.readuntil(b"}\n\r\n"), 10)
            assert not w.events  # the stream is still open
        await wait_until(lambda: bool(w.events) and not w.front.connections, "the exchange ended")
        [event] = w.events
        assert event.status == 200
        assert not w.downstream.release.is_set()  # the second event was never asked for


async def test_an_idle_kept_connection_is_closed_after_the_keep_alive_but_an_open_stream_is_not(monkeypatch):
    monkeypatch.setattr(proxy_front, "KEEPALIVE_SECONDS", 0.2)
    async with world() as w, connect(w.url) as idle, connect(w.url) as streaming:
        idle.writer.write(idle.request(PODS))
        assert (await idle.answer())[0] == 200
        streaming.writer.write(streaming.request("/k8s/clusters/c-1/slow?watch=true"))
        head = await asyncio.wait_for(streaming.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(idle.reader.read(), 5) == b""  # closed by the front
        await asyncio.sleep(0.5)  # well past the keep-alive: the stream's connection stays
        w.downstream.release.set()
        rest = await asyncio.wait_for(streaming.reader.readuntil(b"0\r\n\r\n"), 10)
        assert b"MODIFIED" in rest

"""Streaming and upgrades through the proxy: incremental delivery, back-pressure, websocket and SPDY pipes."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import aiohttp

from corral.server.proxy_interfaces import ClusterTarget
from tests.server._harness import ALICE_TOKEN, BLOCK, RawUpgradeServer, SmallBufferDialer, world

AUTH = {"Authorization": f"Bearer {ALICE_TOKEN}"}


async def test_a_chunked_response_arrives_piece_by_piece():
    async with (
        world() as w,
        aiohttp.ClientSession() as http,
        http.get(f"{w.url}/k8s/clusters/c-1/slow?watch=true", headers=AUTH) as r,
    ):
        assert r.status == 200
        # the downstream holds its second event until the first has reached the client
        assert await r.content.readline() == b'{"type":"ADDED"}\n'
        assert not w.downstream.release.is_set()
        w.downstream.release.set()
        assert await r.content.readline() == b'{"type":"MODIFIED"}\n'
        assert await r.content.read() == b""


async def _raw_get(
    port: int, path: str, *, receive_buffer: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {ALICE_TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _until_stalled(read_count, *, checks: int = 20) -> int:
    """Wait until a counter another task advances has not moved for ``checks`` polls; return it."""
    last, still = -1, 0
    for _ in range(3000):
        now = read_count()
        still = still + 1 if now == last else 0
        if still >= checks:
            return int(now)
        last = now
        await asyncio.sleep(0.01)
    raise AssertionError("the downstream never stopped writing")


async def test_a_client_that_stops_reading_stops_the_downstream_and_then_gets_every_byte():
    blocks = 256  # 16 MiB
    async with world(dialer=SmallBufferDialer(), proxy_send_buffer=32 * 1024) as w:
        port = int(w.url.rsplit(":", 1)[1])
        reader, writer = await _raw_get(port, f"/k8s/clusters/c-1/big/{blocks}", receive_buffer=32 * 1024)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"Content-Length: {blocks * len(BLOCK)}".encode() in head
        stalled_at = await _until_stalled(lambda: w.downstream.big_written)
        # what sits in kernel buffers and the proxy's bounded buffers, far below the body
        assert stalled_at <= 3 * 1024 * 1024
        assert not w.downstream.big_done.is_set()
        digest = hashlib.sha256()
        received = 0
        while received < blocks * len(BLOCK):
            data = await reader.read(1 << 20)
            assert data
            digest.update(data)
            received += len(data)
        assert received == blocks * len(BLOCK)
        assert digest.hexdigest() == hashlib.sha256(BLOCK * blocks).hexdigest()
        writer.close()


async def test_a_websocket_upgrade_becomes_a_byte_pipe_with_the_proxy_s_identity():
    async with world() as w, aiohttp.ClientSession() as http:
        headers = {**AUTH, "Impersonate-Group": "system:masters", "Connection": "Upgrade, Impersonate-User"}
        async with http.ws_connect(f"{w.url}/k8s/clusters/c-1/ws", headers=headers) as ws:
            await ws.send_bytes(b"\x01ls -l")
            reply = await ws.receive()
            assert reply.data == b"echo:\x01ls -l"
            await ws.send_str("exit")
            assert (await ws.receive()).data == "echo:exit"
        [seen] = w.downstream.requests
        names = [n.lower() for n, _ in seen.headers]
        assert ("Impersonate-User", "u-alice") in seen.headers
        assert ("Impersonate-Group", "system:masters") not in seen.headers
        assert ("Authorization", "Bearer sa-token-u-alice") in seen.headers
        assert names.count("authorization") == 1
        assert names.count("impersonate-user") == 1


async def _spdy_world_request(w, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    port = int(w.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: proxy.example\r\nAuthorization: Bearer {ALICE_TOKEN}\r\n"
            "Connection: Upgrade, Impersonate-Extra-Requesthost\r\nUpgrade: SPDY/3.1\r\n"
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nimpersonate-user: u-alice\r\n"
            "Impersonate-Group: system:masters\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


async def test_an_spdy_upgrade_pipes_bytes_both_ways_after_the_101():
    upstream = RawUpgradeServer()
    spdy_port = await upstream.start()
    try:
        async with world() as w:
            w.clusters.targets["c-spdy"] = ClusterTarget(
                name="c-spdy", api_endpoint=f"http://127.0.0.1:{spdy_port}"
            )
            w.clusters.members["u-alice"].add("c-spdy")
            path = "/k8s/clusters/c-spdy/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true"
            reader, writer, head = await _spdy_world_request(w, path)
            assert head.startswith(b"HTTP/1.1 101")
            assert b"Upgrade: SPDY/3.1" in head
            assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
            for chunk in (b"hello", b"\x00\x01binary\xff", b"x" * 200_000):
                writer.write(chunk)
                await writer.drain()
                assert await reader.readexactly(len(chunk)) == chunk.upper()
            writer.close()
            [sent] = upstream.heads
            lines = sent.decode().split("\r\n")
            assert (
                lines[0] == "POST /api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true HTTP/1.1"
            )
            identity = [line for line in lines if line.lower().startswith(("impersonate", "authorization"))]
            assert identity == [
                "Authorization: Bearer sa-token-u-alice",
                "Impersonate-User: u-alice",
                "Impersonate-Group: system:authenticated",
                "Impersonate-Group: system:cattle:authenticated",
                "Impersonate-Group: local://g-dev",
                "Impersonate-Extra-Principalid: local://u-alice",
                "Impersonate-Extra-Username: alice",
                "Impersonate-Extra-Requesttokenid: token-alice",
                "Impersonate-Extra-Requesthost: proxy.example",
            ]
            assert "Connection: Upgrade" in lines
            assert "Upgrade: SPDY/3.1" in lines
    finally:
        await upstream.stop()


async def test_a_refused_upgrade_is_relayed_as_the_cluster_answered():
    upstream = RawUpgradeServer()
    spdy_port = await upstream.start()
    try:
        async with world() as w:
            w.clusters.targets["c-spdy"] = ClusterTarget(
                name="c-spdy", api_endpoint=f"http://127.0.0.1:{spdy_port}"
            )
            w.clusters.members["u-alice"].add("c-spdy")
            reader, writer, head = await _spdy_world_request(w, "/k8s/clusters/c-spdy/refuse")
            assert head.startswith(b"HTTP/1.1 403")
            body = await reader.read()
            assert body.endswith(b'pods "x" is forbidden\r\n0\r\n\r\n')
            writer.close()
    finally:
        await upstream.stop()


async def test_an_upgrade_that_cannot_be_dialed_is_an_empty_502():
    async with world() as w:
        _, writer, head = await _spdy_world_request(w, "/k8s/clusters/c-gone/api/v1/namespaces/x/pods/y/exec")
        assert head.startswith(b"HTTP/1.1 502")
        assert b"Content-Length: 0" in head
        writer.close()

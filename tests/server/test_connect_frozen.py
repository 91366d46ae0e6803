"""A frozen agent over TLS: once the read deadline drops its session, the server lets go of its socket.

The agent is a raw TLS client (``ssl.SSLObject`` over a plain socket) that completes the websocket
handshake and then never reads or writes again, as a process under SIGSTOP or behind a partition.
The server must release the TCP connection within its close timeout, not leave it to TLS's own
shutdown timer or to the garbage collector.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from corral.controlplane.pki import CertificateAuthority
from corral.server.connect import PARAMS_HEADER, TOKEN_HEADER, TunnelEndpoints, encode_params
from corral.tunnel import SessionSettings
from corral.tunnel.testing import wait_until
from tests.server._tunnel_fakes import TOKEN, Registrar, Tokens

NODE = {"node": {"requestedHostname": "n1", "controlPlane": True}}


@dataclass
class TlsServer:
    port: int
    ca_pem: bytes
    endpoints: TunnelEndpoints


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[TlsServer]:
    authority = CertificateAuthority.create("frozen agent test CA")
    serving = authority.issue_serving("corral-server", hosts=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    settings = SessionSettings(read_deadline_seconds=0.5, close_timeout_seconds=0.5)
    endpoints = TunnelEndpoints(tokens=Tokens(), registrar=Registrar(), settings=settings)
    app = web.Application()
    endpoints.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield TlsServer(runner.addresses[0][1], authority.cert_pem, endpoints)
    finally:
        await endpoints.close()
        await runner.cleanup()


class FrozenAgent:
    """TLS by hand over a raw socket, so the test decides when (and whether) the agent reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ca_pem: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = ssl.create_default_context(cadata=ca_pem.decode())
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    @classmethod
    async def connect(cls, port: int, ca_pem: bytes) -> FrozenAgent:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        agent = cls(reader, writer, ca_pem)
        while True:
            try:
                agent.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await agent._flush()
                agent.incoming.write(await reader.read(65536))
        await agent._flush()
        return agent

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def upgrade(self, headers: dict[str, str]) -> str:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /v3/connect HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.tls.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._flush()
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                answer += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.incoming.write(await self.reader.read(65536))
        return answer.split(b"\r\n", 1)[0].decode()

    async def wait_for_server_to_let_go(self) -> None:
        """Read raw bytes (the server's Close frame and TLS alert stay unanswered) until the socket ends."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass

    def close(self) -> None:
        self.writer.transport.abort()


async def test_a_frozen_agent_s_socket_is_released_when_the_read_deadline_drops_its_session(tls_server):
    agent = await FrozenAgent.connect(tls_server.port, tls_server.ca_pem)
    try:
        status = await agent.upgrade({TOKEN_HEADER: TOKEN, PARAMS_HEADER: encode_params(NODE)})
        assert status == "HTTP/1.1 101 Switching Protocols"
        manager = tls_server.endpoints.manager
        await wait_until(lambda: manager.has_session("c-1:n1"), "the node agent's session")
        await wait_until(lambda: not manager.has_session("c-1:n1"), "the read deadline drops the session")
        # the agent stays frozen: it never answers the Close frame nor TLS's close_notify
        await asyncio.wait_for(agent.wait_for_server_to_let_go(), 10)
    finally:
        agent.close()

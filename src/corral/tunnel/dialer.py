"""Dial through a tunnel: asyncio streams, and an aiohttp connector for HTTP(S) on the agent's side.

`open_connection(manager, client_key, host, port)` is `asyncio.open_connection` for an address
seen from the agent. `TunnelConnector` lets ``aiohttp.ClientSession(connector=...)`` reach
``https://10.43.0.1:443`` inside a downstream cluster: each new HTTP connection becomes a tunnel
connection to ``tcp/<host>:<port>``, bridged to asyncio through a socket pair so aiohttp's own
TLS (certificate checks, SNI) runs unchanged over it. Name resolution happens on the agent's
side, as with remotedialer: the host name goes in the Connect frame.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace

from corral.errors import TunnelError
from corral.tunnel.manager import SessionManager

__all__ = ["TunnelConnector", "open_connection", "tcp_address"]


def tcp_address(host: str, port: int) -> str:
    """``host:port`` as Go's net.JoinHostPort writes it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def open_connection(
    manager: SessionManager,
    client_key: str,
    host: str,
    port: int,
    *,
    timeout_seconds: float | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams to ``host:port`` dialed by the agent of ``client_key``; `SessionNotFoundError` if none."""
    conn = await manager.dial(client_key, "tcp", tcp_address(host, port), timeout_seconds=timeout_seconds)
    return await conn.as_streams()


class TunnelConnector(aiohttp.TCPConnector):
    """An aiohttp connector whose connections go through the tunnel of one client key.

    TLS settings (``ssl=`` here or per request) work as with `aiohttp.TCPConnector`; proxies do not
    apply (the tunnel is the route).
    """

    def __init__(self, manager: SessionManager, client_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.client_key = client_key

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature; the session's timeout applies
    ) -> ResponseHandler:
        host = req.url.raw_host
        port = req.port
        if host is None or port is None:
            raise aiohttp.InvalidURL(req.url)
        sslcontext = self._get_ssl_context(req)
        try:
            conn = await self.manager.dial(self.client_key, "tcp", tcp_address(host, port))
        except TunnelError as exc:
            raise aiohttp.ClientConnectionError(
                f"cannot dial {host}:{port} through the tunnel of {self.client_key!r}: {exc}"
            ) from exc
        sock = conn.bridge_socket()
        server_hostname = (req.server_hostname or host).rstrip(".") if sslcontext else None
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                self._factory, sock=sock, ssl=sslcontext, server_hostname=server_hostname
            )
        except BaseException as exc:
            sock.close()
            await conn.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
            if isinstance(exc, ssl.SSLError):
                raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
            if isinstance(exc, OSError):
                raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
            raise
        return protocol

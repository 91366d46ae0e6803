"""Reaching a cluster's kube-apiserver from the proxy: a direct TCP dialer and the adapters on a `Dialer`.

`DialerConnector` makes every new aiohttp connection a `Dialer.dial` (so the tunnel dialer slots in
later without touching the proxy), and `open_streams` gives the raw asyncio streams the upgrade
path pipes bytes through. TLS runs on top of the dialed socket in both, checked against the
cluster's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace

from corral.server.proxy_interfaces import ClusterTarget, Dialer, DialError

logger = logging.getLogger(__name__)

__all__ = ["DialerConnector", "DirectDialer", "Endpoint", "endpoint_of", "open_streams", "tls_context"]


class DirectDialer:
    """Plain TCP to the address itself: clusters whose API endpoint the server reaches directly."""

    def __init__(self, *, timeout_seconds: float = 30.0) -> None:
        self.timeout_seconds = timeout_seconds

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        where = _join(host, port)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                last: OSError | None = None
                for family, kind, proto, _, address in infos:
                    sock = socket.socket(family, kind, proto)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, address)
                    except OSError as exc:
                        sock.close()
                        last = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return sock
        except TimeoutError as exc:
            raise DialError(f"dial tcp {where}: i/o timeout") from exc
        except OSError as exc:
            raise DialError(f"dial tcp {where}: {exc.strerror or exc}") from exc
        reason = (last.strerror or str(last)) if last is not None else "no address"
        raise DialError(f"dial tcp {where}: connect: {reason}") from last


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A parsed API endpoint: scheme, host, port and the path prefix to put before proxied paths."""

    tls: bool
    host: str
    port: int
    prefix: str

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{_join(self.host, self.port)}"


def endpoint_of(target: ClusterTarget) -> Endpoint:
    """The cluster's API endpoint, or `DialError` when it is not an http(s) URL with a host."""
    return _endpoint(target.name, target.api_endpoint)


@functools.lru_cache(maxsize=1024)
def _endpoint(cluster: str, api_endpoint: str) -> Endpoint:
    try:
        url = urlsplit(api_endpoint)
        port = url.port
    except ValueError as exc:
        raise DialError(f"cluster {cluster!r} has an unusable API endpoint") from exc
    if url.scheme not in ("https", "http") or not url.hostname:
        raise DialError(f"cluster {cluster!r} has an unusable API endpoint")
    tls = url.scheme == "https"
    return Endpoint(
        tls=tls, host=url.hostname, port=port or (443 if tls else 80), prefix=url.path.rstrip("/")
    )


def tls_context(target: ClusterTarget) -> ssl.SSLContext:
    """A client context trusting the cluster's CA (or the system store when it has none)."""
    try:
        return (
            ssl.create_default_context(cadata=target.ca_pem)
            if target.ca_pem
            else ssl.create_default_context()
        )
    except (ssl.SSLError, ValueError) as exc:
        raise DialError(f"cluster {target.name!r} has an unusable CA certificate") from exc


async def open_streams(
    dialer: Dialer, *, cluster: str, endpoint: Endpoint, context: ssl.SSLContext | None, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams to the endpoint over a dialed socket, TLS-wrapped when the endpoint is https."""
    sock = await dialer.dial(cluster, endpoint.host, endpoint.port)
    try:
        return await asyncio.open_connection(
            sock=sock,
            ssl=context if endpoint.tls else None,
            server_hostname=endpoint.host if endpoint.tls else None,
            limit=limit,
        )
    except BaseException as exc:
        sock.close()
        if isinstance(exc, ssl.SSLError | OSError):
            raise DialError(f"tls handshake with {_join(endpoint.host, endpoint.port)}: {exc}") from exc
        raise


class DialerConnector(aiohttp.TCPConnector):
    """An aiohttp connector whose connections are dialed by a `Dialer` for one cluster.

    No limit on connections unless one is given (aiohttp's default is 100): Go's transport has
    none, and every watch through the proxy holds a connection of its own.
    """

    def __init__(self, dialer: Dialer, cluster: str, **kwargs: object) -> None:
        kwargs.setdefault("limit", 0)
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.dialer = dialer
        self.cluster = cluster

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
        try:
            sock = await self.dialer.dial(self.cluster, host, port)
        except DialError as exc:
            raise aiohttp.ClientConnectionError(str(exc)) from exc
        sslcontext = self._get_ssl_context(req)
        server_hostname = (req.server_hostname or host).rstrip(".") if sslcontext else None
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                self._factory, sock=sock, ssl=sslcontext, server_hostname=server_hostname
            )
        except BaseException as exc:
            with contextlib.suppress(OSError):
                sock.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
            if isinstance(exc, ssl.SSLError):
                raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
            if isinstance(exc, OSError):
                raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
            raise
        return protocol

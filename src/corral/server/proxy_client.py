"""The proxy's HTTP/1.1 client: a pool of keep-alive connections per cluster, heads written as bytes.

A general client (aiohttp's) builds a request object, a URL, a header multidict and a connection
key for every call; the proxy already holds the rewritten header list and the raw target, so here
the request head is one string and one write, the answer's head and body are parsed by httptools
(llhttp, in C), and the body streams back with back-pressure (reading pauses while the proxy has
not passed on what it holds). Connections are dialed through the proxy's `Dialer` (TLS on top,
checked against the cluster's CA), kept after a complete exchange and reused newest first.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Final, cast

import httptools

from corral.server.proxy_dial import Endpoint
from corral.server.proxy_interfaces import Dialer, DialError, ProxyError, StreamDialer
from corral.tunnel.bridge import TunnelTransport
from corral.tunnel.connection import Connection

logger = logging.getLogger(__name__)

__all__ = ["ConnectionPool", "UpstreamError", "UpstreamResponse", "request_head"]

IDLE_SECONDS: Final = 15.0
"""An idle connection is closed after this long (aiohttp's keep-alive default, which the proxy had)."""
READ_BYTES: Final = 2**16
"""Decrypted bytes taken at a time from a connection that runs its own TLS."""
MAX_HEAD_BYTES: Final = 10 * 2**20
"""Most bytes an answer's status line and headers may take (Go's transport default, 10 MiB)."""
MAX_IDLE: Final = 256
"""Idle connections kept per cluster; more are closed as they come back."""
#: Methods a request may be sent again with when a kept connection turned out closed (as aiohttp does).
_RESENDABLE: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamError(ProxyError):
    """The exchange with the cluster failed; ``unanswered``: no byte of an answer had arrived."""

    def __init__(self, message: str, *, unanswered: bool = False, reused: bool = False) -> None:
        super().__init__(message)
        self.unanswered = unanswered
        self.reused = reused


def request_head(method: str, target: str, *, host: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """``METHOD target HTTP/1.1``, ``Host`` and the headers; `UpstreamError` on a line break in any."""
    text = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join([f"{n}: {v}\r\n" for n, v in headers])
    data = (text + "\r\n").encode("utf-8", "surrogateescape")
    lines = len(headers) + 3
    if data.count(b"\n") != lines or data.count(b"\r") != lines:
        raise UpstreamError("a request header holds a line break")
    return data


class UpstreamResponse:
    """One answer: status, reason and headers once the head is in, then the body as it arrives."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_head",
        "_limit",
        "_paused",
        "_size",
        "_waiter",
        "answered",
        "chunked",
        "framed",
        "headers",
        "informational",
        "method",
        "raw_headers",
        "reason",
        "reused",
        "status",
    )

    def __init__(self, conn: _Connection, method: str, *, limit: int, reused: bool) -> None:
        self._conn: _Connection | None = conn
        self.method = method
        self.reused = reused
        self._limit = limit
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: list[tuple[str, str]] = []
        self.chunked = False
        """The cluster sent ``Transfer-Encoding`` (so the body's length was not known up front)."""
        self.framed = False
        """The body's end is marked (a length or chunks), not the connection's close."""
        self.informational = False
        self.answered = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- fed by the connection ----------------------------------------------------------------

    def _headers_complete(self, status: int) -> None:
        self.status = status
        headers = []
        for name, value in self.raw_headers:
            text = name.decode("utf-8", "surrogateescape")
            lower = text.lower()
            if lower == "transfer-encoding":
                self.chunked = self.framed = True
            elif lower == "content-length":
                self.framed = True
            headers.append((text, value.decode("utf-8", "surrogateescape")))
        self.headers = headers
        if status in (204, 304) or self.method == "HEAD":
            self.framed = True
        if not self._head.done():
            self._head.set_result(None)

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._limit and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._resume()
        self._conn = None
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._done:
            return
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved here: the caller may be gone
        self._error = error
        self._done = True
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._conn is not None:
                self._conn.resume()

    # -- for the proxy ------------------------------------------------------------------------

    async def head(self) -> None:
        await self._head

    @property
    def complete(self) -> bool:
        """The whole body is here (it can be taken with `body`)."""
        return self._done and self._error is None

    def body(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        return data

    async def read(self) -> bytes:
        """What has arrived since the last call (waiting for some); b"" at the end, `UpstreamError` if cut."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self.body()
        self._resume()
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def close(self) -> None:
        """Done with the answer: a connection still carrying its body is closed, not reused."""
        conn, self._conn = self._conn, None
        if conn is not None and not self._done:
            self._done = True
            conn.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a cluster's apiserver; at most one exchange at a time."""

    def __init__(
        self, pool: ConnectionPool, *, tls: ssl.SSLContext | None = None, server_hostname: str = ""
    ) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = (
            tls.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
            if tls is not None
            else None
        )
        """TLS this connection runs itself (over a tunnelled connection), else None."""
        self._handshake: asyncio.Future[None] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep = True
        self.head_bytes = 0
        """Bytes received for the current answer before its head was complete."""
        self._sent = True
        self._drained: asyncio.Future[None] | None = None
        self._write_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            self._tls_received(data)
            return
        try:
            self._feed(data)
        except httptools.HttpParserError as exc:
            self._break(UpstreamError(f"malformed response from the cluster: {exc}"))

    def _feed(self, data: bytes) -> None:
        """Parse answer bytes; an answer's head that grows past `MAX_HEAD_BYTES` is malformed."""
        response = self.response
        if response is not None and not response.status:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                raise httptools.HttpParserError(f"the answer's head is over {MAX_HEAD_BYTES} bytes")
        self.parser.feed_data(data)

    def write(self, data: bytes) -> None:
        """Send request bytes (encrypted first when this connection runs its own TLS)."""
        if self.transport is None:
            return
        tls = self.tls
        if tls is None:
            self.transport.write(data)
            return
        try:
            tls.write(data)
        except ssl.SSLError as exc:
            self._break(UpstreamError(f"tls: {exc}"))
            return
        self._flush_tls()

    # -- TLS over a tunnelled connection (memory buffers; no socket to hand to the event loop) -------

    async def handshake(self) -> None:
        """Run the TLS handshake of `tls` (`ssl.SSLError` or `UpstreamError` when it fails)."""
        self._handshake = asyncio.get_running_loop().create_future()
        self._continue_handshake()
        await self._handshake

    def _continue_handshake(self) -> None:
        tls, waiter = self.tls, self._handshake
        assert tls is not None
        assert waiter is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return
        except ssl.SSLError as exc:
            if not waiter.done():
                waiter.set_exception(exc)
            return
        self._flush_tls()
        if not waiter.done():
            waiter.set_result(None)

    def _tls_received(self, data: bytes) -> None:
        tls = self.tls
        assert tls is not None
        self.incoming.write(data)
        waiter = self._handshake
        if waiter is not None and not waiter.done():
            self._continue_handshake()
            if not waiter.done():
                return
        try:
            while True:
                try:
                    plain = tls.read(READ_BYTES)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not plain:
                    break
                self._feed(plain)
        except ssl.SSLError as exc:
            self._break(UpstreamError(f"tls: {exc}"))
        except httptools.HttpParserError as exc:
            self._break(UpstreamError(f"malformed response from the cluster: {exc}"))
        else:
            self._flush_tls()

    def _flush_tls(self) -> None:
        out = self.outgoing.read()
        if out and self.transport is not None:
            self.transport.write(out)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        self._lost(
            UpstreamError(
                f"connection to the cluster lost: {exc}" if exc else "the cluster closed the connection"
            )
        )
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        handshake = self._handshake
        if handshake is not None and not handshake.done():
            handshake.set_exception(UpstreamError("the connection closed during the tls handshake"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.response is not None:
            self.response.answered = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.raw_headers.append((name, value))

    def on_status(self, status: bytes) -> None:
        if self.response is not None:
            self.response.reason = status.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            response.informational = True  # 100 Continue and the like: the answer comes next
            response.raw_headers = []
            return
        response._headers_complete(status)
        if not self.parser.should_keep_alive():
            self.keep = False
        if response.method == "HEAD":
            # llhttp would wait for the body a HEAD answer's Content-Length announces: not reused
            self.keep = False
            self.response = None
            response._finish()
            self.abort()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._body(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None:
            return
        if response.informational:
            response.informational = False
            return
        self.response = None
        response._finish()
        self._done()

    # -- the exchange --------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        head: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        *,
        chunked: bool,
        reused: bool,
        limit: int,
    ) -> UpstreamResponse:
        """Write the request (a streamed ``body`` in chunks when ``chunked``), then wait for the head."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise UpstreamError("the connection to the cluster is closed", unanswered=True, reused=reused)
        response = UpstreamResponse(self, method, limit=limit, reused=reused)
        self.response = response
        self.head_bytes = 0
        if body is None or isinstance(body, bytes):
            self.write(head + body if body else head)
        else:
            self._sent = False
            self.write(head)
            try:
                async for chunk in body:
                    if chunk:
                        self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    if self._write_paused and not self.closed:
                        self._drained = asyncio.get_running_loop().create_future()
                        await self._drained
                    if self.closed:
                        break
                if chunked:
                    self.write(b"0\r\n\r\n")
                self._sent = True
            except BaseException:
                self.abort()
                response._fail(UpstreamError("the request's body could not be read"))
                raise
        try:
            await response.head()
        except BaseException:
            if not response._done:
                self.abort()  # the caller gave up on the answer: the connection is not reusable
            raise
        return response

    def _done(self) -> None:
        if self.keep and self._sent and not self.closed:
            self.pool._release(self)
        else:
            self.abort()

    def _break(self, error: UpstreamError) -> None:
        """The exchange failed with ``error`` and the connection cannot be used again."""
        self._lost(error)
        self.abort()

    def _lost(self, error: UpstreamError) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        if response._head.done() and not response.framed:
            response._finish()  # an answer whose end is the connection's close
            return
        error.unanswered = not response.answered
        error.reused = response.reused
        response._fail(error)

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.keep = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        self.keep = False
        if self.transport is not None and not self.closed:
            self.transport.close()


class ConnectionPool:
    """Keep-alive connections to one cluster's API endpoint, dialed through the proxy's `Dialer`."""

    def __init__(
        self,
        *,
        dialer: Dialer,
        cluster: str,
        endpoint: Endpoint,
        context: ssl.SSLContext | None,
        connect_timeout_seconds: float,
        buffer_bytes: int,
    ) -> None:
        self.dialer = dialer
        self.cluster = cluster
        self.endpoint = endpoint
        self.context = context if endpoint.tls else None
        self.connect_timeout_seconds = connect_timeout_seconds
        self.buffer_bytes = buffer_bytes
        default_port = 443 if endpoint.tls else 80
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self.host = host if endpoint.port == default_port else f"{host}:{endpoint.port}"
        self._idle: collections.deque[_Connection] = collections.deque()
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False
        self.retired = False
        """Replaced by another pool (the cluster's endpoint or CA changed): no connection is kept."""

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        """Send one request and wait for the answer's head; `DialError` or `UpstreamError` if none came.

        A request that may be repeated (no streamed body, an idempotent method) and whose connection
        closed before any answer is sent once more, on another connection, as aiohttp's client does
        (a kept connection the cluster closed meanwhile, a tunnel session that was going away).
        """
        head = request_head(method, target, host=self.host, headers=headers)
        chunked = _is_stream(body) and any(name == "Transfer-Encoding" for name, _ in headers)
        resend = method in _RESENDABLE and not _is_stream(body)
        while True:
            conn, reused = await self._acquire()
            try:
                return await conn.send(
                    method, head, body, chunked=chunked, reused=reused, limit=self.buffer_bytes
                )
            except UpstreamError as exc:
                if not (resend and exc.unanswered):
                    raise
                resend = False
                logger.debug("a connection to cluster %r closed unanswered; sending again", self.cluster)

    async def _acquire(self) -> tuple[_Connection, bool]:
        idle = self._idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                self._busy.add(conn)
                return conn, True
        conn = await self._connect()
        self._busy.add(conn)
        return conn, False

    async def _connect(self) -> _Connection:
        if self.closed:
            raise DialError("the proxy is closing")
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(self.connect_timeout_seconds):
                dial_stream = getattr(self.dialer, "dial_stream", None)
                if dial_stream is None:
                    stream: socket.socket | Connection = await self.dialer.dial(
                        self.cluster, endpoint.host, endpoint.port
                    )
                else:
                    stream = await cast(StreamDialer, self.dialer).dial_stream(
                        self.cluster, endpoint.host, endpoint.port
                    )
                if isinstance(stream, socket.socket):
                    return await self._over_socket(stream)
                return await self._over_tunnel(stream)
        except TimeoutError:
            raise DialError(f"dial tcp {self.host}: i/o timeout") from None

    async def _over_socket(self, sock: socket.socket) -> _Connection:
        """The event loop's transport on the dialed socket, with its TLS when the endpoint is https."""
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self),
                sock=sock,
                ssl=self.context,
                server_hostname=self.endpoint.host if self.context is not None else None,
            )
        except BaseException as exc:
            sock.close()
            if isinstance(exc, ssl.SSLError | OSError):
                raise DialError(f"tls handshake with {self.host}: {exc}") from exc
            raise
        return conn

    async def _over_tunnel(self, stream: Connection) -> _Connection:
        """A transport straight on the tunnel's connection (no socket pair), TLS run by the connection."""
        conn = _Connection(self, tls=self.context, server_hostname=self.endpoint.host)
        TunnelTransport(stream, conn)
        if conn.tls is None:
            return conn
        try:
            await conn.handshake()
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, ssl.SSLError | UpstreamError):
                raise DialError(f"tls handshake with {self.host}: {exc}") from exc
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if self.closed or self.retired or len(self._idle) >= MAX_IDLE:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(IDLE_SECONDS, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle for longer than `IDLE_SECONDS` (the oldest sit on the left)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - IDLE_SECONDS
        idle = self._idle
        while idle and idle[0].idle_since <= cutoff:
            idle.popleft().close()
        if idle:
            self._sweeper = loop.call_later(idle[0].idle_since + IDLE_SECONDS - loop.time(), self._sweep)

    def retire(self) -> None:
        """Keep no connection from now on; the answers under way finish on theirs."""
        self.retired = True
        while self._idle:
            self._idle.pop().close()

    @property
    def busy_count(self) -> int:
        return len(self._busy)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def close(self) -> None:
        """Close every connection, idle or carrying an answer (open streams are cut)."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        conns = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.abort()
        await asyncio.sleep(0)  # let the transports report their loss


def _is_stream(body: object) -> bool:
    return body is not None and not isinstance(body, bytes)

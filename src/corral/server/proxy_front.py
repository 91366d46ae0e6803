"""The server's listener protocol: plain proxied requests served from bytes, the rest handed to aiohttp.

For each request aiohttp's server builds a message, a request object, a task hop and a response
object whose headers it prepares and serialises; for a proxied ``GET`` that machinery costs more
CPU than the proxying itself. The front takes every connection of the server's listener, parses
request heads with httptools (llhttp, in C), serves the plain ones itself (a ``/k8s/clusters/`` or
``/k8s/proxy/`` path, HTTP/1.1, a Host, no body, no upgrade, no ``Expect``) with the proxy's
`AuthProxy.exchange`, and writes the answer's head and body as bytes. At the first request it does
not serve (any other path, a body, an upgrade, a malformed or oversized head), the connection and
the bytes read so far go to aiohttp's protocol for good, so aiohttp still decides everything that
is not a plain proxied request, including what a bad request gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
from collections.abc import Callable, Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Final

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from corral.server.proxy_client import UpstreamError, UpstreamResponse
from corral.server.proxy_headers import upstream_response_headers

if TYPE_CHECKING:
    from corral.server.proxy import AuthProxy

logger = logging.getLogger(__name__)

__all__ = ["FrontRequest", "ProxyFront", "response_head"]

PREFIXES: Final = (b"/k8s/clusters/", b"/k8s/proxy/")
"""Raw path beginnings the front serves (the proxy's routes)."""
MAX_HEAD_BYTES: Final = 16 * 1024
"""A head without end after this many bytes goes to aiohttp, whose limits then answer it."""
KEEPALIVE_SECONDS: Final = 75.0
"""An idle kept connection is closed after this long (aiohttp's server default)."""
MAX_BUFFERED_BYTES: Final = 2**20
"""Reading pauses while this much of the next requests waits behind the one being answered."""
_BODILESS_STATUSES: Final = frozenset({204, 304})
_LINE_BREAKS = str.maketrans("", "", "\r\n")


class FrontRequest:
    """What the proxy reads of a request, the attributes an aiohttp ``Request`` has under the same names."""

    __slots__ = ("_cookies", "headers", "host", "method", "raw_path", "remote")

    def __init__(
        self, *, method: str, raw_path: str, headers: CIMultiDictProxy[str], host: str, remote: str | None
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.host = host
        self.remote = remote
        self._cookies: Mapping[str, str] | None = None

    @property
    def cookies(self) -> Mapping[str, str]:
        """The ``Cookie`` header's pairs, parsed when first asked for (most requests carry a token)."""
        if self._cookies is None:
            jar: SimpleCookie = SimpleCookie()
            for value in self.headers.getall("Cookie", ()):
                try:
                    jar.load(value)
                except CookieError:
                    continue
            self._cookies = {name: morsel.value for name, morsel in jar.items()}
        return self._cookies


def response_head(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """``HTTP/1.1 status reason`` and the headers, ended; a line break inside any is dropped."""
    if not reason:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    pairs = headers if isinstance(headers, list) else list(headers)
    text = f"HTTP/1.1 {status} {reason}\r\n" + "".join([f"{n}: {v}\r\n" for n, v in pairs]) + "\r\n"
    lines = len(pairs) + 2
    if text.count("\n") != lines or text.count("\r") != lines:  # rare: clean every piece
        clean = [f"{n.translate(_LINE_BREAKS)}: {v.translate(_LINE_BREAKS)}\r\n" for n, v in pairs]
        text = f"HTTP/1.1 {status} {reason.translate(_LINE_BREAKS)}\r\n" + "".join(clean) + "\r\n"
    return text.encode("utf-8", "surrogateescape")


class _Head:
    """httptools callbacks collecting one request head."""

    __slots__ = ("complete", "headers", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpRequestParser(self)

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message ends

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete = True


class ProxyFront:
    """Protocol factory for the server's listeners (give it to ``loop.create_server``)."""

    def __init__(self, proxy: AuthProxy, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.proxy = proxy
        self.fallback = fallback
        """aiohttp's protocol factory (a runner's ``server``) for the connections handed over."""
        self.connections: set[_FrontProtocol] = set()
        """The connections the front still serves (not handed over, not lost)."""
        self._none_left = asyncio.Event()

    def __call__(self) -> _FrontProtocol:
        return _FrontProtocol(self)

    def forget(self, conn: _FrontProtocol) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._none_left.set()

    async def shutdown(self, timeout_seconds: float) -> None:
        """Close idle connections now, give answers under way ``timeout_seconds``, then cut them."""
        if not self.connections:
            return
        self._none_left.clear()
        for conn in list(self.connections):
            conn.close_when_idle()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await self._none_left.wait()
        for conn in list(self.connections):
            conn.abort()


class _FrontProtocol(asyncio.Protocol):
    """One client connection, until (if ever) it is handed to aiohttp."""

    def __init__(self, front: ProxyFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.remote: str | None = None
        self.closing = False
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple | list) and peer else None
        self.front.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._next()
        elif len(self.buffer) > MAX_BUFFERED_BYTES and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.forget(self)
        self.transport = None
        self._cancel_idle()
        if self.task is not None:
            self.task.cancel()
        self._release_drain()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._release_drain()

    # -- requests ---------------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the buffered request if it is plain, hand the connection over if not; wait if partial."""
        transport = self.transport
        if transport is None or not self.buffer:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._hand_over()
            return
        request = self._parse(bytes(self.buffer[: end + 4]))
        if request is None:
            self._hand_over()
            return
        del self.buffer[: end + 4]
        keep_alive, parsed = request
        self.task = asyncio.get_running_loop().create_task(self._serve(parsed, keep_alive))

    def _parse(self, head: bytes) -> tuple[bool, FrontRequest] | None:
        """The request of a complete head when the front serves it; None for aiohttp's."""
        if not head.startswith(PREFIXES, head.find(b" ") + 1):
            return None
        collected = _Head()
        parser = collected.parser
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            return None  # an upgrade (or CONNECT): aiohttp's
        except httptools.HttpParserError:
            return None  # malformed: aiohttp answers it
        if not collected.complete or parser.get_http_version() != "1.1":
            return None  # a body follows (or HTTP/1.0): aiohttp's
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in collected.headers:
            headers.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        hosts = headers.getall("Host", ())
        if (
            len(hosts) != 1
            or "Expect" in headers
            or "Upgrade" in headers
            or "Transfer-Encoding" in headers
            or headers.get("Content-Length", "0") != "0"
        ):
            return None
        method = parser.get_method().decode("ascii", "surrogateescape")
        request = FrontRequest(
            method=method,
            raw_path=collected.url.decode("utf-8", "surrogateescape"),
            headers=CIMultiDictProxy(headers),
            host=hosts[0],
            remote=self.remote,
        )
        return collected.keep_alive, request

    def _hand_over(self) -> None:
        """Give the connection and what was read of it to aiohttp."""
        transport = self.transport
        assert transport is not None
        self._cancel_idle()
        self.front.forget(self)
        self.transport = None
        protocol = self.front.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        data, self.buffer = bytes(self.buffer), bytearray()
        if data:
            protocol.data_received(data)

    async def _serve(self, request: FrontRequest, keep_alive: bool) -> None:
        reply = _Reply(self, request.method)
        try:
            await self.front.proxy.exchange(request, reply)
        except asyncio.CancelledError:
            return  # the client went away
        except Exception:
            logger.exception("proxy request %s %s failed", request.method, request.raw_path.split("?", 1)[0])
            if not reply.started:
                reply.write(response_head(500, "", [("Content-Length", "0")]))
            keep_alive = False
        finally:
            self.task = None
        transport = self.transport
        if transport is None:
            return
        if not keep_alive or reply.cut or self.closing:
            transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._arm_idle()
        self._next()

    def _release_drain(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drain(self) -> None:
        """Wait while the client's transport holds more than its high-water mark."""
        while self._writing_paused and self.transport is not None:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    # -- lifetime ---------------------------------------------------------------------------------

    def close_when_idle(self) -> None:
        self.closing = True
        if self.task is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_idle(self) -> None:
        """Idle from now; the one timer is re-armed only when it fires early (no timer per request)."""
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(KEEPALIVE_SECONDS, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        if self.task is not None or self.transport is None:
            return  # busy: `_serve` arms it again when the answer is out
        left = self._idle_since + KEEPALIVE_SECONDS - asyncio.get_running_loop().time()
        if left > 0:
            self._idle = asyncio.get_running_loop().call_later(left, self._idle_check)
        else:
            self.close_when_idle()

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


class _Reply:
    """How `AuthProxy.exchange` answers a front request: the proxy's own answers, or the cluster's."""

    __slots__ = ("conn", "cut", "method", "started")

    def __init__(self, conn: _FrontProtocol, method: str) -> None:
        self.conn = conn
        self.method = method
        self.started = False
        self.cut = False

    def write(self, data: bytes) -> None:
        self.started = True
        transport = self.conn.transport
        if transport is not None:
            transport.write(data)

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        """The proxy's own answer."""
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Date", _date())]
        self.write(response_head(status, "", headers) + body)

    async def relay(self, upstream: UpstreamResponse) -> None:
        """The cluster's answer: at once when it is all here, else streamed with back-pressure."""
        headers = upstream_response_headers(upstream.headers)
        named = {name.lower() for name, _ in headers}
        if "date" not in named:
            headers.append(("Date", _date()))
        status = upstream.status
        if self.method == "HEAD" or status in _BODILESS_STATUSES or status < 200:
            self.write(response_head(status, upstream.reason, headers))
            return
        if upstream.complete and not upstream.chunked:
            body = upstream.body()
            if "content-length" not in named:
                headers.append(("Content-Length", str(len(body))))
            self.write(response_head(status, upstream.reason, headers) + body)
            return
        chunked = upstream.chunked or "content-length" not in named
        if chunked:
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
            headers.append(("Transfer-Encoding", "chunked"))
        self.write(response_head(status, upstream.reason, headers))
        try:
            while chunk := await upstream.read():
                self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self.conn.drain()
                if self.conn.transport is None:
                    raise ConnectionResetError("the client went away")
        except (UpstreamError, ConnectionError) as exc:
            # The status is out: all that is left is to cut the client's stream short.
            logger.info("stream of a proxied answer ended early: %s", type(exc).__name__)
            self.cut = True
            return
        if chunked:
            self.write(b"0\r\n\r\n")


def _date() -> str:
    return email.utils.formatdate(usegmt=True)

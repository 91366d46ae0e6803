"""Upgrade requests (exec, attach, port-forward) through the proxy: one HTTP/1.1 exchange, then raw bytes.

The request goes out by hand over a dialed stream; on ``101 Switching Protocols`` the client's
connection is taken over from aiohttp (its parser is swapped for a byte buffer, as aiohttp's own
websocket support does) and both directions are piped with back-pressure: neither side is read
faster than the other drains. SPDY/3.1 and websocket look the same here. Any other answer is
relayed as an ordinary response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from corral.server.proxy_headers import Headers, upstream_response_headers
from corral.server.proxy_interfaces import ProxyError

logger = logging.getLogger(__name__)

_NO_BODY_STATUS = frozenset({204, 304})


class UpstreamResponseError(ProxyError):
    """The cluster's answer to an upgrade request is not a readable HTTP/1.1 response."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers


def request_head(method: str, target: str, *, host: str, headers: Headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def read_response_head(reader: asyncio.StreamReader) -> ResponseHead:
    """Status line and headers (the stream's limit bounds their size); 1xx other than 101 skipped."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise UpstreamResponseError("the cluster closed the connection before answering") from exc
        except asyncio.LimitOverrunError as exc:
            raise UpstreamResponseError("the cluster's response headers are too long") from exc
        head = parse_response_head(raw)
        if head.status == 101 or not 100 <= head.status < 200:
            return head


def parse_response_head(raw: bytes) -> ResponseHead:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
        raise UpstreamResponseError("the cluster's response has a malformed status line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise UpstreamResponseError("the cluster's response has a malformed header line")
        headers.append((name, value.strip()))
    return ResponseHead(status=int(code), reason=reason, headers=tuple(headers))


class _ClientBytes:
    """Takes aiohttp's parser slot after the 101: the client's bytes, paused above ``limit``."""

    def __init__(self, request: web.BaseRequest, *, limit: int) -> None:
        self._transport = request.transport
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False
        self._paused = False
        self._ready = asyncio.Event()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buffer += data
        self._ready.set()
        if len(self._buffer) >= self._limit and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    async def read(self) -> bytes:
        """What arrived so far (waiting for something); b"" once the client is gone."""
        while not self._buffer and not self._eof:
            self._ready.clear()
            await self._ready.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._paused = False
        return data


async def pipe_upgraded(
    request: web.Request,
    head: ResponseHead,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    limit: int,
) -> web.StreamResponse:
    """Answer 101 to the client, then copy bytes both ways until either side ends."""
    client = _ClientBytes(request, limit=limit)
    # Swap the parser before the 101 leaves: the client may speak the new protocol right after it.
    cast(Any, request.protocol).set_parser(client)
    response = web.StreamResponse(status=101, reason=head.reason or "Switching Protocols")
    for name, value in upstream_response_headers(head.headers, upgrade=True):
        response.headers.add(name, value)
    response.force_close()
    await response.prepare(request)

    async def downstream_to_client() -> None:
        while data := await reader.read(limit):
            await response.write(data)

    async def client_to_downstream() -> None:
        while data := await client.read():
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.ensure_future(downstream_to_client()), asyncio.ensure_future(client_to_downstream())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                logger.debug("upgraded connection ended: %s", type(exc).__name__)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await response.write_eof()
    return response


async def relay_response(
    request: web.Request, head: ResponseHead, reader: asyncio.StreamReader, *, limit: int
) -> web.StreamResponse:
    """Relay a non-101 answer to an upgrade request (an error from the cluster, usually)."""
    headers = head.headers
    chunked = any(n.lower() == "transfer-encoding" and "chunked" in v.lower() for n, v in headers)
    length = next((v for n, v in headers if n.lower() == "content-length"), None)
    response = web.StreamResponse(status=head.status, reason=head.reason or None)
    for name, value in upstream_response_headers(headers):
        if not (chunked and name.lower() == "content-length"):
            response.headers.add(name, value)
    response.force_close()
    await response.prepare(request)
    if request.method == "HEAD" or head.status in _NO_BODY_STATUS:
        pass
    elif chunked:
        await _relay_chunked(reader, response)
    elif length is not None and length.isdigit():
        remaining = int(length)
        while remaining > 0:
            data = await reader.read(min(remaining, limit))
            if not data:
                break
            remaining -= len(data)
            await response.write(data)
    else:
        while data := await reader.read(limit):
            await response.write(data)
    await response.write_eof()
    return response


async def _relay_chunked(reader: asyncio.StreamReader, response: web.StreamResponse) -> None:
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers are not passed on
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            await response.write(data)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise UpstreamResponseError("the cluster's chunked response is malformed or cut short") from exc

"""The HTTP server on the agent's side of the tunnel: deterministic payloads, hashes and echoes.

Payloads are pseudo-random bytes from a seed, made chunk by chunk, so a 50 MB body is streamed
without being held twice and both ends can compute its SHA-256 independently.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Iterator

import aiohttp
from aiohttp import web

CHUNK_BYTES = 1 << 20
HOLD_RELEASE = web.AppKey("hold_release", asyncio.Event)
"""``/hold`` sends its first half, then waits for this event before sending the rest."""


def payload_chunks(size: int, seed: int) -> Iterator[bytes]:
    """`size` deterministic bytes for `seed`, in chunks of at most 1 MiB."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(CHUNK_BYTES, left)
        yield rng.randbytes(n)
        left -= n


def payload_sha256(size: int, seed: int) -> str:
    digest = hashlib.sha256()
    for chunk in payload_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


async def body_sha256(resp: aiohttp.ClientResponse) -> tuple[str, int]:
    """The SHA-256 and size of a response body, read in chunks (bodies here reach 50 MB)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def payload_stream(size: int, seed: int) -> AsyncIterator[bytes]:
    """The same payload as an async generator, for streamed request bodies."""
    for chunk in payload_chunks(size, seed):
        yield chunk


async def _bytes(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    seed = int(request.query.get("seed", "0"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    for chunk in payload_chunks(size, seed):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _sha256(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"sha256": digest.hexdigest(), "size": size, "method": request.method})


async def _echo(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_chunked(1 << 16):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _hold(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    chunks = list(payload_chunks(size, int(request.query.get("seed", "0"))))
    body = b"".join(chunks)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    await response.write(body[: size // 2])
    async with asyncio.timeout(60):
        await request.app[HOLD_RELEASE].wait()
    await response.write(body[size // 2 :])
    await response.write_eof()
    return response


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello {request.query.get('n', '')}".strip())


def target_app() -> web.Application:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/bytes", _bytes)
    app.router.add_route("*", "/sha256", _sha256)
    app.router.add_post("/echo", _echo)
    app.router.add_get("/hello", _hello)
    app.router.add_get("/hold", _hold)
    app[HOLD_RELEASE] = asyncio.Event()
    return app

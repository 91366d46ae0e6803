"""corral's side of the interop tests: a tunnel client task and an aiohttp tunnel server, in-process.

This is the only module of the interop tests that touches `corral.tunnel.websocket`, so the
contract between the tests and the library lives in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from corral.tunnel.manager import SessionManager
from corral.tunnel.session import Session
from corral.tunnel.settings import SessionSettings
from corral.tunnel.websocket import connect, tunnel_handler

TUNNEL_ID = "X-Tunnel-ID"


def loopback_only(proto: str, address: str) -> bool:
    """The connect-authorizer of corral's client in these tests: TCP to 127.0.0.1 only."""
    host, _, port = address.rpartition(":")
    return proto == "tcp" and host == "127.0.0.1" and port.isdigit()


@dataclass
class CorralClient:
    """`corral.tunnel.websocket.connect` running as a task; `outcome` is what it returned or raised."""

    task: asyncio.Task[Any]

    async def outcome(self, *, timeout_seconds: float = 15.0) -> Any:
        """Wait for the client to end; returns its result, or the exception it raised."""
        async with asyncio.timeout(timeout_seconds):
            try:
                return await asyncio.shield(self.task)
            except asyncio.CancelledError:
                if self.task.cancelled():
                    return None
                raise
            except Exception as exc:
                return exc

    async def close(self) -> None:
        """Stop the client (cancelling its task closes its session) and wait for it."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(10):
                await self.task


@contextlib.asynccontextmanager
async def corral_client(
    url: str,
    client_key: str,
    *,
    connect_authorizer: Callable[[str, str], bool] = loopback_only,
    settings: SessionSettings | None = None,
    on_connect: Callable[[Session], Awaitable[None]] | None = None,
) -> AsyncIterator[CorralClient]:
    task = asyncio.ensure_future(
        connect(
            url,
            headers={TUNNEL_ID: client_key},
            connect_authorizer=connect_authorizer,
            settings=settings,
            on_connect=on_connect,
        )
    )
    client = CorralClient(task)
    try:
        yield client
    finally:
        await client.close()


Authorizer = Callable[[web.Request], Awaitable[tuple[str, bool]]]


async def authorize_by_tunnel_id(request: web.Request) -> tuple[str, bool]:
    """Keys tunnels by X-Tunnel-ID like the Go harness; "intruder" is refused; "explode" raises."""
    key = request.headers.get(TUNNEL_ID, "")
    if key == "explode":
        raise ValueError("cluster not found")
    return key, bool(key) and key != "intruder"


@dataclass
class CorralServer:
    manager: SessionManager
    address: str
    disconnects: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connect_url(self) -> str:
        return f"ws://{self.address}/connect"

    async def wait_for_session(
        self, client_key: str, present: bool = True, *, timeout_seconds: float = 10.0
    ) -> None:
        """Wait (bounded) until `client_key` has a session, or has none; woken by the manager's hooks."""
        try:
            async with asyncio.timeout(timeout_seconds):
                while self.manager.has_session(client_key) != present:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            state = "no session" if present else "still a session"
            raise AssertionError(
                f"corral server has {state} for {client_key!r} after {timeout_seconds}s; "
                f"keys: {self.manager.client_keys()!r}"
            ) from None

    def _on_connect(self, client_key: str, _session: object) -> None:
        self.changed.set()

    def _on_disconnect(self, client_key: str, _session: object) -> None:
        self.disconnects.append(client_key)
        self.changed.set()


@contextlib.asynccontextmanager
async def corral_server(
    authorizer: Authorizer = authorize_by_tunnel_id, *, settings: SessionSettings | None = None
) -> AsyncIterator[CorralServer]:
    manager = SessionManager()
    app = web.Application()
    app.router.add_get("/connect", tunnel_handler(manager, authorizer, settings=settings))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    result = CorralServer(manager=manager, address=f"127.0.0.1:{server.port}")
    manager.on_connect = result._on_connect
    manager.on_disconnect = result._on_disconnect
    try:
        yield result
    finally:
        for key in manager.client_keys():
            for session in manager.sessions(key):
                await session.close("test over")
        await server.close()

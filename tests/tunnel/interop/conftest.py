"""Fixtures of the tunnel interop tests: the Go remotedialer peers and the agent-side HTTP target.

The Go binaries come from `corral build` (cached; a first build of this small module takes well
under a minute). Every process a test starts is stopped in teardown, every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from corral.controlplane.build import ensure_built

from ._processes import PeerProcess
from ._target import target_app

ClientStarter = Callable[..., Awaitable[PeerProcess]]
"""``await start_go_client(url, *flags) -> PeerProcess``"""


@dataclass(frozen=True)
class GoBinaries:
    server: Path
    client: Path


@pytest.fixture(scope="session")
def go_binaries() -> GoBinaries:
    built = ensure_built(["remotedialer-server", "remotedialer-client"])
    return GoBinaries(server=built["remotedialer-server"], client=built["remotedialer-client"])


@pytest.fixture
async def http_target() -> AsyncIterator[str]:
    """``host:port`` of an HTTP server on 127.0.0.1 (see `_target`), reachable only through tunnels."""
    server = TestServer(target_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.close()


@dataclass
class GoServer:
    """A running rd-server: its address, its process and helpers to reach through its tunnels."""

    address: str
    process: PeerProcess

    @property
    def connect_url(self) -> str:
        return f"ws://{self.address}/connect"

    def proxy_url(self, client_key: str, target: str, path: str) -> str:
        """URL of rd-server's reverse proxy to http://target/path through the tunnel of `client_key`."""
        return f"http://{self.address}/client/{client_key}/http/{target}/{path.lstrip('/')}"

    async def clients(self) -> list[str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{self.address}/clients", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            resp.raise_for_status()
            keys: list[str] = json.loads(await resp.text())
            return keys

    async def wait_for_clients(self, expected: set[str], *, timeout_seconds: float = 10.0) -> None:
        """Poll /clients until it equals `expected` (a bounded poll, 50 ms apart)."""
        seen: list[str] = []
        try:
            async with asyncio.timeout(timeout_seconds):
                while True:
                    seen = await self.clients()
                    if set(seen) == expected:
                        return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"rd-server clients stayed {seen!r}, expected {sorted(expected)!r} "
                f"within {timeout_seconds}s; stderr: {self.process.stderr_tail()}"
            ) from None


async def start_go_server(binaries: GoBinaries, *extra_args: str) -> GoServer:
    process = await PeerProcess.start(
        "rd-server", [str(binaries.server), "-listen", "127.0.0.1:0", *extra_args]
    )
    try:
        line = await process.expect_line("listening ")
    except BaseException:
        await process.stop()
        raise
    return GoServer(address=line.split()[1], process=process)


@pytest.fixture
async def go_server(go_binaries: GoBinaries) -> AsyncIterator[GoServer]:
    server = await start_go_server(go_binaries)
    try:
        yield server
    finally:
        await server.process.stop()


@pytest.fixture
async def start_go_client(go_binaries: GoBinaries) -> AsyncIterator[ClientStarter]:
    """Start rd-client processes (``await start_go_client(url, "-id", "k")``); all stopped in teardown."""
    started: list[PeerProcess] = []

    async def start(url: str, *args: str) -> PeerProcess:
        process = await PeerProcess.start("rd-client", [str(go_binaries.client), "-connect", url, *args])
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.stop()

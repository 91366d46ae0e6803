"""The agent's connect loop: register until connected once, then connect, forever, on Rancher's cadence.

Rancher's agent (``cmd/agent/main.go``) dials ``/v3/connect/register`` until its ``connected`` marker
file exists (or ``CATTLE_AGENT_CONNECT=true``), then ``/v3/connect``; remotedialer's ``ClientConnect``
sleeps 5 s after a session ends with an error or a refused handshake, and the loop sleeps another 5 s,
so an agent retries about every 10 s (docs/rancher.md#agent-connect-loop). ``RetryPolicy.backoff``
is the opt-in alternative: jittered exponential backoff, reset by a session that lasted.

The connect authorizer is Rancher's: ``tcp`` to anywhere, ``unix`` only to the Docker socket, ``npipe``
only to Docker's pipe; anything else refused (and, as in remotedialer, that ends the session).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from corral.errors import TunnelError
from corral.tunnel import (
    Clock,
    HandshakeError,
    LocalDialer,
    Session,
    SessionSettings,
    SystemClock,
    TunnelClient,
)
from corral.tunnel.transport import dial_local

logger = logging.getLogger(__name__)

__all__ = ["ConnectLoop", "RetryPolicy", "rancher_connect_authorizer"]

DOCKER_SOCKET: Final = "/var/run/docker.sock"
DOCKER_PIPE: Final = "//./pipe/docker_engine"


def rancher_connect_authorizer(proto: str, address: str) -> bool:
    """What the server may dial through a cluster agent (``cmd/agent/main.go``)."""
    if proto == "tcp":
        return True
    if proto == "unix":
        return address == DOCKER_SOCKET
    if proto == "npipe":
        return address == DOCKER_PIPE
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long to wait before the next attempt."""

    kind: Literal["rancher", "backoff"] = "rancher"
    failure_seconds: float = 5.0
    """Rancher: ``ClientConnect``'s sleep after an error."""
    loop_seconds: float = 5.0
    """Rancher: the loop's own sleep after every attempt."""
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    stable_seconds: float = 10.0
    """Backoff: a session that lasted this long resets the attempt count."""

    def delay(self, failures: int, rng: random.Random) -> float:
        """The wait after ``failures`` consecutive failed attempts (at least one)."""
        if self.kind == "rancher":
            return self.failure_seconds + self.loop_seconds
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2.0 ** max(failures - 1, 0))
        return ceiling * (0.5 + rng.random() / 2)  # half fixed, half jitter


OnConnect = Callable[[Session], Awaitable[None]]


class ConnectLoop:
    """Keeps one tunnel session to the server open for as long as it runs."""

    def __init__(
        self,
        *,
        websocket_base: str,
        headers: Callable[[], Awaitable[Mapping[str, str]]],
        marker: Path | None,
        always_connect: bool = False,
        ssl_context: ssl.SSLContext | bool = True,
        retry: RetryPolicy | None = None,
        settings: SessionSettings | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_connect: OnConnect | None = None,
        connect_authorizer: Callable[[str, str], bool] = rancher_connect_authorizer,
        client_factory: Callable[..., TunnelClient] = TunnelClient,
        local_dialer: LocalDialer = dial_local,
    ) -> None:
        self.websocket_base = websocket_base
        self.headers = headers
        self.marker = marker
        self.always_connect = always_connect
        self.ssl_context = ssl_context
        self.retry = retry or RetryPolicy()
        self.settings = settings
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.on_connect = on_connect
        self.connect_authorizer = connect_authorizer
        self.client_factory = client_factory
        self.local_dialer = local_dialer
        self.attempts: list[str] = []
        """The URL of every attempt, in order (for tests and logs)."""
        self._client: TunnelClient | None = None
        self._stopping = False

    def url(self) -> str:
        connected = self.always_connect or (self.marker is not None and self.marker.exists())
        return self.websocket_base + ("/v3/connect" if connected else "/v3/connect/register")

    async def run(self) -> None:
        """Connect and reconnect until `stop`."""
        failures = 0
        while not self._stopping:
            started = self.clock.now()
            served = await self.attempt()
            if self._stopping:
                return
            if served and self.clock.now() - started >= self.retry.stable_seconds:
                failures = 0  # a session that lasted: the backoff starts over
            failures += 1
            await self.clock.sleep(self.retry.delay(failures, self.rng))

    async def attempt(self) -> bool:
        """One handshake and, if it succeeds, the session until it ends; True if a session was served."""
        url = self.url()
        self.attempts.append(url)
        client = self.client_factory(
            url,
            headers=dict(await self.headers()),
            connect_authorizer=self.connect_authorizer,
            settings=self.settings,
            ssl=self.ssl_context,
            local_dialer=self.local_dialer,
        )
        try:
            session = await client.start()
        except HandshakeError as exc:
            logger.error("tunnel handshake refused (HTTP %d): %s", exc.status, exc)
            return False
        except TunnelError as exc:
            logger.error("cannot connect the tunnel: %s", exc)
            return False
        self._client = client
        try:
            if self.marker is not None and not self.always_connect:
                self.marker.parent.mkdir(parents=True, exist_ok=True)
                self.marker.touch()
            logger.info("connected to %s", url)
            if self.on_connect is not None:
                await self.on_connect(session)
            reason = await client.wait()
            logger.info("tunnel session ended: %s", reason)
            return True
        finally:
            self._client = None

    async def stop(self, reason: str = "agent stopping") -> None:
        """Close the session cleanly (the server sees the websocket close at once) and end `run`."""
        self._stopping = True
        client = self._client
        if client is not None:
            await client.close(reason)
        await asyncio.sleep(0)

"""The clock seam of the tunnel: real time in production, virtual time in tests.

Keepalive pings, read deadlines and SyncConnections all wait on a `Clock`, so a test can move
time by 60 seconds in a millisecond (trio's MockClock, SimPy's ``env.now``) and assert that a
silent peer is dropped exactly at its deadline, without sleeping and without timing flakes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds and a sleep on that time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time that moves only when a test calls `advance`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def pending_sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float, *, settle_rounds: int = 20) -> None:
        """Move time forward, waking every sleeper due on the way, in deadline order."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                await settle(settle_rounds)
        self._now = target
        await settle(settle_rounds)


async def settle(rounds: int = 20) -> None:
    """Let ready tasks run for a few loop iterations (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)

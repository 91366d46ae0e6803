"""The clock seam of the tunnel: real time in production, virtual time in tests.

Keepalive pings, read deadlines, SyncConnections, flow-control timers and every timeout (connect,
send-error, close) go through a `Clock`, so a test can move time by 60 seconds in a millisecond
and assert that a silent peer is dropped exactly at its deadline, without sleeping and without
timing flakes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class TimerHandle(Protocol):
    """What `Clock.call_later` returns: a pending call that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds, a sleep on that time, and calls scheduled on it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle: ...


class SystemClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual time that moves only when a test calls `advance`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(callback)
        heapq.heappush(self._timers, (self._now + max(0.0, seconds), next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    @property
    def pending_timers(self) -> int:
        """Sleeps and scheduled calls not yet due nor cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    pending_sleepers = pending_timers

    async def advance(self, seconds: float) -> None:
        """Move time forward, running every call due on the way in deadline order.

        After each one, and at the end, the event loop runs until no task is ready (`settle`), so
        whatever a timer set off has happened when this returns.
        """
        target = self._now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, deadline)
            timer.cancelled = True
            timer.callback()
            await settle()
        self._now = target
        await settle()


class Timeout:
    """``async with Timeout(clock, seconds):`` raises `TimeoutError` when the body overruns.

    `asyncio.timeout` on any `Clock`: at the deadline the task is cancelled, and the cancellation
    is turned into `TimeoutError` on the way out (a cancellation from elsewhere stays one).
    """

    def __init__(self, clock: Clock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._handle: TimerHandle | None = None
        self._expired = False

    def _expire(self) -> None:
        if self._task is not None and not self._task.done():
            self._expired = True
            self._task.cancel()

    async def __aenter__(self) -> Timeout:
        self._task = asyncio.current_task()
        if self._seconds is not None:
            self._handle = self._clock.call_later(self._seconds, self._expire)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        expired = self._expired and self._task is not None and self._task.uncancel() == 0
        if expired and exc_type is asyncio.CancelledError:
            raise TimeoutError(f"timed out after {self._seconds:g} s") from exc


SETTLE_LIMIT = 10_000
"""Loop turns `settle` allows before it gives up: a task that never stops being ready is a bug."""


async def settle() -> None:
    """Run the event loop until no callback is ready (every task waits on something), no real time.

    A condition, not a count: with in-memory transports and a `FakeClock`, nothing more can
    happen until a test acts. On an event loop that does not expose its ready queue, one turn.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # asyncio's BaseEventLoop; other loops do not say
    if ready is None:
        await asyncio.sleep(0)
        return
    for _ in range(SETTLE_LIMIT):
        await asyncio.sleep(0)
        if not ready:
            return
    raise RuntimeError(f"the event loop still had ready callbacks after {SETTLE_LIMIT} turns")

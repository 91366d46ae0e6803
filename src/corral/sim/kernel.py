"""A faster SimPy environment: the same events in the same order, with less Python per event.

A fleet run processes tens of millions of SimPy events, and SimPy spends a good part of each in
generic machinery: `env.timeout` goes through a descriptor that builds a bound class per call,
and `run(until=...)` calls `step()` once per event. `FastEnvironment` creates timeouts, plain
events and processes directly and runs the event loop inline. Events are still ordered by
(time, priority, id) with SimPy's own counters, so a trace is identical to plain SimPy's (the
golden tests run on it).
"""

from __future__ import annotations

from collections.abc import Generator
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.core import SimTime
from simpy.events import NORMAL, URGENT, Event, Initialize, Process, Timeout


class FastEnvironment(simpy.Environment):
    """`simpy.Environment` with inlined `timeout`, `event`, `process` and `run(until=<time>)`."""

    def timeout(self, delay: SimTime = 0, value: Any | None = None) -> Timeout:
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        timeout = Timeout.__new__(Timeout)
        timeout.env = self
        timeout.callbacks = []
        timeout._value = value
        timeout._delay = delay
        timeout._ok = True
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), timeout))
        return timeout

    def event(self) -> Event:
        event = Event.__new__(Event)
        event.env = self
        event.callbacks = []
        return event

    def process(self, generator: Generator[Event, Any, Any]) -> Process:
        process = Process.__new__(Process)
        process.env = self
        process.callbacks = []
        process._generator = generator
        start = Initialize.__new__(Initialize)
        start.env = self
        start.callbacks = [process._resume]
        start._value = None
        start._ok = True
        heappush(self._queue, (self._now, URGENT, next(self._eid), start))
        process._target = start
        return process

    def run(self, until: SimTime | Event | None = None) -> Any | None:
        """Process every event before time `until` (a number), as SimPy does, without `step()` calls.

        Events scheduled at exactly `until` stay queued, as behind SimPy's own urgent stop event;
        an event or ``None`` as `until` goes to SimPy's loop.
        """
        if until is None or isinstance(until, Event):
            return super().run(until)
        at = float(until)
        if at <= self._now:
            raise ValueError(f"until ({at}) must be greater than the current simulation time")
        queue = self._queue
        while queue and queue[0][0] < at:
            self._now, _, _, event = heappop(queue)
            callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                failure = event._value
                error = type(failure)(*failure.args)
                error.__cause__ = failure
                raise error
        self._now = at
        return None

"""A faster SimPy environment: the same events in the same order, with less Python per event.

A fleet run processes tens of millions of SimPy events, and SimPy spends a good part of each in
generic machinery: `env.timeout` goes through a descriptor that builds a bound class per call,
`run(until=...)` calls `step()` once per event, a process builds a bound method each time it
waits, and every process that ends schedules an event even when nothing waits for it.
`FastEnvironment` creates timeouts, plain events and processes directly, runs the event loop
inline, and its processes end without an event when nobody waits for them. A process that only
waits a while (`yield env.sleep(delay)`, most waits of the model) gets no timeout object at all:
its resumption itself goes into the queue. Events are still ordered by (time, priority, id) with
SimPy's own counters, so a trace is identical to plain SimPy's (the golden tests run on it); only
the count of events processed is smaller.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from heapq import heappop, heappush
from types import MethodType
from typing import Any

import simpy
from simpy.core import SimTime
from simpy.events import NORMAL, URGENT, Event, Initialize, Process, Timeout


def _sentinel(name: str) -> Event:
    event = Event.__new__(Event)
    event.callbacks = None  # type: ignore[assignment]
    event._ok = True
    event._value = None
    event._defused = True
    event.env = None  # type: ignore[assignment]
    event.name = name  # type: ignore[attr-defined]
    return event


ASLEEP = _sentinel("asleep")
"""What `FastEnvironment.sleep` returns: the process that yields it is already in the queue."""
_AWOKEN = _sentinel("awoken")
"""What a process that slept resumes with: a processed event whose value is ``None``, as a timeout's."""


class FastProcess(Process):
    """A process that resumes with less work per wait and ends silently when nobody waits for it.

    SimPy schedules a process's end as an event even when its callbacks are empty; here such a
    process is marked processed at once (a later ``yield process`` resumes at once, as for any
    processed event). A failed process always schedules its end, so the error still surfaces.
    """

    _resume_bound: Callable[[Event], None]

    def interrupt(self, cause: Any | None = None) -> None:
        """SimPy's `interrupt`, refused while the process sleeps (its resumption is already queued)."""
        if self._target is ASLEEP:
            raise RuntimeError(
                f"{self!r} is asleep (env.sleep) and cannot be interrupted: wait with env.timeout instead"
            )
        super().interrupt(cause)

    def _resume(self, event: Event) -> None:
        env = self.env
        env._active_proc = self
        generator = self._generator
        while True:
            try:
                if event._ok:
                    event = generator.send(event._value)
                else:
                    event._defused = True
                    failure = event._value
                    error = type(failure)(*failure.args)
                    error.__cause__ = failure
                    event = generator.throw(error)
            except StopIteration as stop:
                self._ok = True
                self._value = stop.args[0] if stop.args else None
                if self.callbacks:
                    env.schedule(self)
                else:
                    self.callbacks = None  # type: ignore[assignment]
                del self._resume_bound  # it refers to the process: no cycle left behind
                event = None  # type: ignore[assignment]
                break
            except BaseException as failure:
                self._ok = False
                self._value = failure
                env.schedule(self)
                del self._resume_bound
                event = None  # type: ignore[assignment]
                break
            if event is ASLEEP:  # `sleep` queued the process's resumption itself
                break
            try:
                callbacks = event.callbacks
            except AttributeError:
                raise RuntimeError(f'Invalid yield value "{event}" in {generator!r}') from None
            if callbacks is not None:
                callbacks.append(self._resume_bound)
                break
        self._target = event
        env._active_proc = None


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

    def sleep(self, delay: SimTime) -> Event:
        """For ``yield env.sleep(delay)`` in a process, and nothing else: `timeout` without the event.

        The active process's resumption goes into the queue under the key the timeout would have
        had (now + delay, normal priority, the next event id), so everything happens in the same
        order as with ``yield env.timeout(delay)``, and the process resumes with ``None`` as from
        that timeout; only no timeout object is made, kept and processed. The returned `ASLEEP`
        tells the process not to wait for anything else.
        """
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        try:
            resume = self._active_proc._resume_bound  # type: ignore[union-attr]
        except AttributeError:  # no active process, or not one of ours
            raise RuntimeError("sleep() is for the active process of a FastEnvironment to yield") from None
        entry = (self._now + delay, NORMAL, next(self._eid), resume)
        heappush(self._queue, entry)  # a resumption where events go
        return ASLEEP

    def event(self) -> Event:
        event = Event.__new__(Event)
        event.env = self
        event.callbacks = []
        return event

    def _new_process(self, generator: Generator[Event, Any, Any]) -> FastProcess:
        process = FastProcess.__new__(FastProcess)
        process.env = self
        process.callbacks = []
        process._generator = generator
        process._resume_bound = process._resume
        return process

    def process(self, generator: Generator[Event, Any, Any]) -> Process:
        process = self._new_process(generator)
        start = Initialize.__new__(Initialize)
        start.env = self
        start.callbacks = [process._resume_bound]
        start._value = None
        start._ok = True
        heappush(self._queue, (self._now, URGENT, next(self._eid), start))
        process._target = start
        return process

    def spawn(self, generator: Generator[Event, Any, Any]) -> Process:
        """Start a process whose first step runs now, inside the caller's step.

        `process` would run that step at an urgent event of the same instant, which nothing can
        precede (an urgent event queued earlier at this instant has already run), so the only
        difference is that the first step runs before the rest of the caller's step: the same
        order as `process` for a caller that only waits after starting it.
        """
        process = self._new_process(generator)
        start = Initialize.__new__(Initialize)
        start.env = self
        start.callbacks = None  # type: ignore[assignment]
        start._value = None
        start._ok = True
        process._target = start
        active = self._active_proc
        process._resume(start)
        self._active_proc = active
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
        method: type[Any] = MethodType
        awoken = _AWOKEN
        while queue and queue[0][0] < at:
            self._now, _, _, event = heappop(queue)
            if type(event) is method:  # a process's `sleep` is over
                event(awoken)  # type: ignore[operator]
                continue
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

    def step(self) -> None:
        """SimPy's `step` (the loop of ``run()`` and ``run(until=<event>)``), knowing sleeping processes."""
        queue: list[Any] = self._queue
        if queue and type(queue[0][3]) is MethodType:
            self._now, _, _, resume = heappop(queue)
            resume(_AWOKEN)
            return
        super().step()


def timeout_at(env: simpy.Environment, at: SimTime) -> Timeout:
    """A timeout that fires at the absolute time `at` (not before now).

    ``env.timeout(at - env.now)`` would fire at ``now + (at - now)``, which floating point may
    round away from `at`; a wait computed ahead (a retry that would have come at `at` after a
    chain of waits) must land on the same instant as the chain would have.
    """
    if at < env.now:
        raise ValueError(f"time {at} is in the past (now {env.now})")
    timeout = Timeout.__new__(Timeout)
    timeout.env = env
    timeout.callbacks = []
    timeout._value = None
    timeout._delay = at - env.now
    timeout._ok = True
    heappush(env._queue, (at, NORMAL, next(env._eid), timeout))
    return timeout

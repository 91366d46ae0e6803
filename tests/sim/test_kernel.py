"""The fast SimPy environment processes the same events in the same order as SimPy's own."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy

from corral.sim.kernel import FastEnvironment


def _world(env: simpy.Environment, log: list[tuple[float, str]], *, sleep: bool = False) -> None:
    gate = env.event()
    wait = env.sleep if sleep and isinstance(env, FastEnvironment) else env.timeout

    def worker(name: str, delays: list[float]) -> Generator[simpy.Event, Any, str]:
        for delay in delays:
            yield wait(delay)
            log.append((env.now, f"{name} woke"))
        if name == "a":
            gate.succeed("open")
        value = yield gate
        log.append((env.now, f"{name} saw {value}"))
        return name

    def parent() -> Generator[simpy.Event, Any, None]:
        children = [env.process(worker(n, d)) for n, d in (("a", [1, 1, 0]), ("b", [2, 0.5]), ("c", [0, 2]))]
        for child in children:
            result = yield child
            log.append((env.now, f"joined {result}"))
        yield env.timeout(5) | env.timeout(3)
        log.append((env.now, "any-of"))

    env.process(parent())


@pytest.mark.parametrize("until", [None, 2.0, 2.5, 4.0, 100.0])
def test_the_same_world_runs_the_same_on_both_environments(until: float | None) -> None:
    plain_log: list[tuple[float, str]] = []
    fast_log: list[tuple[float, str]] = []
    plain, fast = simpy.Environment(), FastEnvironment()
    _world(plain, plain_log)
    _world(fast, fast_log)
    plain.run(until=until)
    fast.run(until=until)
    assert fast_log == plain_log
    assert fast.now == plain.now
    # What is left to do is the same (SimPy's own stop event, rescheduled at priority -1, aside).
    assert _pending(fast) == _pending(plain)


@pytest.mark.parametrize("until", [None, 2.0, 2.5, 4.0, 100.0])
def test_sleeping_processes_wake_as_they_would_from_timeouts(until: float | None) -> None:
    plain_log: list[tuple[float, str]] = []
    sleep_log: list[tuple[float, str]] = []
    timeout_log: list[tuple[float, str]] = []
    plain, sleeping, waiting = simpy.Environment(), FastEnvironment(), FastEnvironment()
    _world(plain, plain_log)
    _world(sleeping, sleep_log, sleep=True)
    _world(waiting, timeout_log)
    for env in (plain, sleeping, waiting):
        env.run(until=until)
    assert sleep_log == timeout_log == plain_log
    assert sleeping.now == waiting.now
    # Each sleep took the place in the queue (time, priority, id) its timeout would have had.
    assert sorted(entry[:3] for entry in sleeping._queue) == sorted(entry[:3] for entry in waiting._queue)
    assert any(not isinstance(entry[3], simpy.Event) for entry in sleeping._queue) == (until in (2.0, 2.5))


def _pending(env: simpy.Environment) -> list[tuple[float, int, str]]:
    return sorted(
        (t, priority, repr(event).split(" object")[0])
        for t, priority, _, event in env._queue
        if priority >= 0
    )


def test_a_sleep_is_for_the_active_process_and_never_negative() -> None:
    env = FastEnvironment()
    with pytest.raises(RuntimeError, match="active process"):
        env.sleep(1.0)
    woke: list[float] = []

    def sleeper(delay: float) -> Generator[simpy.Event, Any, None]:
        value = yield env.sleep(delay)
        woke.append(env.now if value is None else -1.0)

    env.process(sleeper(1.5))
    env.process(sleeper(-1.0))
    with pytest.raises(ValueError, match="Negative delay"):
        env.run(until=1.0)
    env.run()  # SimPy's own loop (`step`) wakes sleepers too
    assert woke == [1.5]


def test_a_sleeping_process_refuses_an_interrupt_but_a_waiting_one_takes_it() -> None:
    env = FastEnvironment()
    causes: list[object] = []

    def waiter(sleep: bool) -> Generator[simpy.Event, Any, None]:
        try:
            yield env.sleep(5.0) if sleep else env.timeout(5.0)
        except simpy.Interrupt as interrupt:
            causes.append(interrupt.cause)

    asleep = env.process(waiter(True))
    waiting = env.process(waiter(False))
    env.run(until=1.0)
    with pytest.raises(RuntimeError, match="asleep"):
        asleep.interrupt("stop")
    waiting.interrupt("stop")
    env.run()
    assert causes == ["stop"]


def test_events_at_the_stop_time_wait_for_the_next_run() -> None:
    env = FastEnvironment()
    seen: list[float] = []
    env.timeout(2.0).callbacks.append(lambda _: seen.append(env.now))
    env.run(until=2.0)
    assert (seen, env.now) == ([], 2.0)
    env.run(until=3.0)
    assert seen == [2.0]
    with pytest.raises(ValueError, match="must be greater than the current simulation time"):
        env.run(until=1.0)
    with pytest.raises(ValueError, match="Negative delay"):
        env.timeout(-1)


def test_a_failed_event_nobody_waited_for_stops_the_run() -> None:
    env = FastEnvironment()
    env.event().fail(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        env.run(until=1.0)

"""The model's shortcuts give the run they stand for: each is checked against the long way round.

An agent that cannot connect waits for a change instead of retrying every 10 s; the health tick
looks only at clusters whose sessions changed; the trace is encoded without a dict per line; the
server's workers are a counter; a process sleeps without a timeout event; a request reaches the
summariser and a sampled trace by its fields. With the shortcut replaced by the step-by-step
version, the same scenario must write the same trace, event for event.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st

from corral.model import (
    ClusterConditionChanged,
    Event,
    FaultInjected,
    RequestCompleted,
    Scenario,
    Summariser,
    TokenReviewed,
    TunnelOpened,
)
from corral.model.trace import _ENCODER
from corral.sim.build import Simulation
from corral.sim.kernel import FastEnvironment, timeout_at
from corral.sim.recorder import Recorder, RequestSample, encode_line
from corral.sim.server import Slots
from corral.sim.tunnel import Agent, SessionManager, _Retry
from tests.sim.test_mechanics import PROXY, of, run, world

STORM = (
    {"kind": "server-down", "at_seconds": 100, "duration_seconds": 95},
    # Changes while the server is down: the agents' retries must follow each of them.
    {"kind": "latency", "target": ["eu", "us"], "rtt_ms": 700, "at_seconds": 120, "duration_seconds": 30},
    {"kind": "kill-cluster-agent", "target": "c", "at_seconds": 131, "duration_seconds": 7},
    {"kind": "partition", "target": ["eu", "us"], "at_seconds": 160, "duration_seconds": 12},
    {"kind": "stop", "target": "c/node-agent/w1", "at_seconds": 175, "duration_seconds": 40},
)
CRASH = (
    {"kind": "crash", "target": "server", "at_seconds": 80, "duration_seconds": 50},
    {"kind": "partition", "target": ["eu", "us"], "at_seconds": 200, "duration_seconds": 150},
)


def _retry_every_time(self: Agent, failing_seconds: float) -> Generator[simpy.Event, Any, _Retry]:
    """What `Agent._doomed` stands for: fail after `failing_seconds`, wait, try again."""
    env = self._world.env
    yield env.timeout(failing_seconds)
    yield env.timeout(self._world.calibration.protocol.reconnect_after_error_seconds)
    return _Retry.NOW


def _worlds() -> list[Scenario]:
    return [
        world("rke1", faults=STORM, workload=(PROXY,)),
        world("rke2", faults=STORM[:4], workload=(PROXY,), agent_replicas=2),
        world("rke1", faults=CRASH, workload=(PROXY,), server={"replicas": 2}),
    ]


@pytest.mark.parametrize("scenario", _worlds(), ids=["rke1-outage", "rke2-outage", "crash-partition"])
def test_waiting_for_a_change_reconnects_exactly_as_retrying_every_ten_seconds(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    shortcut = run(scenario)
    monkeypatch.setattr(Agent, "_doomed", _retry_every_time)
    long_way = run(scenario)
    assert shortcut == long_way
    assert len(of(shortcut, TunnelOpened)) > 3  # the agents did come back, more than once


KILL = {"kind": "kill-cluster-agent", "target": "c", "at_seconds": 100, "duration_seconds": 60}


@pytest.mark.parametrize(
    ("scenario", "changes"),
    [(scenario, 1) for scenario in _worlds()] + [(world("rke1", faults=(KILL,), workload=(PROXY,)), 3)],
    ids=["rke1-outage", "rke2-outage", "crash-partition", "agent-killed"],
)
def test_the_health_tick_over_changed_clusters_sees_what_a_full_scan_sees(
    scenario: Scenario, changes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shortcut = run(scenario)

    def every_cluster(self: SessionManager) -> list[str]:
        self._changed.clear()
        return [cluster.name for cluster in scenario.clusters]

    monkeypatch.setattr(SessionManager, "take_changed", every_cluster)
    assert run(scenario) == shortcut
    assert len(of(shortcut, ClusterConditionChanged)) >= changes  # the tick did see changes


_NAMES = st.text(max_size=12)
_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)


@given(t=_FLOATS, name=_NAMES, status=st.integers(-(10**20), 10**20), flag=st.booleans() | st.none())
def test_a_trace_line_has_the_bytes_of_the_json_encoder(t: float, name: str, status: int, flag: Any) -> None:
    items: list[Event] = [
        RequestCompleted(
            t=t, path="proxy", cluster=name, user='u\u00e9"\\', verb="get", status=status, latency_seconds=t
        ),
        TokenReviewed(t=t, cluster=name, user="", authenticated=bool(flag), latency_seconds=0.1),
        FaultInjected(t=t, fault="partition", target=name, lifted=flag),  # type: ignore[arg-type]
        ClusterConditionChanged(t=t, cluster=name, connected=True),
    ]
    for item in items:
        assert encode_line(item) == _ENCODER.encode(item.to_json())


def test_slots_are_handed_over_in_the_order_they_were_asked_for() -> None:
    env = FastEnvironment()
    slots = Slots(env, 2)
    assert slots.take() is None
    assert slots.take() is None
    waiting = [slots.take() for _ in range(3)]
    assert all(isinstance(ticket, simpy.Event) for ticket in waiting)
    handed: list[int] = []
    for index, ticket in enumerate(waiting):
        assert isinstance(ticket, simpy.Event)
        ticket.callbacks.append(lambda _, index=index: handed.append(index))
    for _ in range(5):
        slots.give_back()
    env.run(until=1.0)
    assert handed == [0, 1, 2]
    assert slots.busy == 0


def test_a_spawned_process_takes_its_first_step_at_once_and_ends_without_an_event() -> None:
    env = FastEnvironment()
    seen: list[tuple[str, float]] = []

    def child() -> Generator[simpy.Event, Any, str]:
        seen.append(("child starts", env.now))
        yield env.timeout(1.5)
        seen.append(("child ends", env.now))
        return "done"

    def parent() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1.0)
        process = env.spawn(child())
        seen.append(("parent goes on", env.now))
        yield env.timeout(5.0)
        value = yield process  # long over: resumes at once with its value
        seen.append((f"parent joined {value}", env.now))

    env.process(parent())
    env.run(until=10.0)
    assert seen == [
        ("child starts", 1.0),
        ("parent goes on", 1.0),
        ("child ends", 2.5),
        ("parent joined done", 6.0),
    ]
    # Scheduled: the parent's start, its two timeouts and the child's one; no end events.
    assert int(repr(env._eid)[len("count(") : -1]) == 4


def test_a_timeout_at_an_absolute_time_lands_on_it_exactly() -> None:
    env = FastEnvironment()
    env.run(until=0.1)
    at = 0.1 + 0.2 + 0.7  # a sum whose difference with now does not round-trip
    fired: list[float] = []
    timeout_at(env, at).callbacks.append(lambda _: fired.append(env.now))
    env.run(until=2.0)
    assert fired == [at]
    with pytest.raises(ValueError, match="in the past"):
        timeout_at(env, 1.0)
    assert math.isfinite(fired[0])


def test_requests_by_their_fields_reach_the_sinks_as_their_events_would() -> None:
    """`Recorder.request` builds a request's event only for a sink that takes events: the summary,
    the sampled trace and the full trace are those of a run whose every sink takes events."""
    scenario = _worlds()[0]

    def once(*, fields: bool) -> tuple[dict[str, Any], list[Event], list[Event], int]:
        summariser, sampled, every = Summariser(), list[Event](), list[Event]()
        sample = RequestSample(sampled.append, one_in=3)

        def events_only(item: Event) -> None:
            sample(item)

        if fields:
            recorder = Recorder(summariser, sample, every.append)
        else:
            recorder = Recorder(summariser.add, events_only, every.append)
        Simulation(scenario, seed=1, recorder=recorder).run()
        return summariser.summary(), sampled, every, recorder.count

    fast, slow = once(fields=True), once(fields=False)
    assert fast == slow
    summary, sampled, every, count = fast
    requests = of(every, RequestCompleted)
    assert len(requests) > 30
    assert count == len(every)
    assert of(sampled, RequestCompleted) == requests[::3]
    assert summary["events"]["RequestCompleted"] == len(requests)


FIXTURES = Path(__file__).parents[2] / "fixtures" / "scenarios"


@pytest.mark.parametrize("name", ["smoke", "alice-au", "server-crash", "node-crash", "api-overload"])
def test_sleeping_processes_run_as_processes_waiting_for_timeouts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = Scenario.load(FIXTURES / f"{name}.yaml")
    shortcut = run(scenario)

    def timeout(self: FastEnvironment, delay: float) -> simpy.Event:
        return self.timeout(delay)

    monkeypatch.setattr(FastEnvironment, "sleep", timeout)
    long_way = run(scenario)
    assert shortcut == long_way
    assert len(of(shortcut, RequestCompleted)) > 100

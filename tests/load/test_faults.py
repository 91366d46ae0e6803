"""The fault timeline: faults applied and lifted at their (scaled) times, recorded as FaultInjected,
lifted at the end whatever happened; the `corral fault` commands each process fault maps to."""

from __future__ import annotations

import io
import itertools
import threading
import time
from pathlib import Path

import pytest

from corral.load.faults import CliProcessFaults, FaultError, Timeline
from corral.model import Fault, TraceWriter, parse_trace


class Recorder:
    def __init__(self, *, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls: list[tuple[str, str, float]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def supports(self, fault: Fault) -> bool:
        return fault.kind in ("crash", "stop")

    def apply(self, fault: Fault) -> None:
        if fault.target in self.fail:
            raise FaultError(f"cannot reach {fault.target}")
        with self.lock:
            self.calls.append(("apply", fault.target, time.time()))

    def lift(self, fault: Fault) -> None:
        with self.lock:
            self.calls.append(("lift", fault.target, time.time()))


def fault(kind: str, target: str, at: float, duration: float) -> Fault:
    return Fault(kind=kind, target=target, at_seconds=at, duration_seconds=duration)  # type: ignore[arg-type]


def test_faults_are_applied_in_time_order_recorded_and_lifted() -> None:
    recorder = Recorder()
    stream = io.StringIO()
    faults = [fault("stop", "c1/cluster-agent", 2.0, 2.0), fault("crash", "server", 1.0, 10.0)]
    epoch = time.time()
    timeline = Timeline(faults, epoch=epoch, time_scale=0.1, trace=TraceWriter(stream), processes=recorder)
    timeline.start()
    deadline = time.time() + 10
    while len(recorder.calls) < 3 and time.time() < deadline:
        time.sleep(0.01)
    timeline.stop()
    assert [(a, t) for a, t, _ in recorder.calls] == [
        ("apply", "server"),
        ("apply", "c1/cluster-agent"),
        ("lift", "c1/cluster-agent"),
        ("lift", "server"),
    ]
    # never before its time (scaled by 0.1)
    assert recorder.calls[0][2] >= epoch + 0.1
    assert recorder.calls[1][2] >= epoch + 0.2
    assert recorder.calls[2][2] >= epoch + 0.4
    events = list(parse_trace(stream.getvalue().splitlines()))
    assert [(e.fault, e.target, e.lifted) for e in events] == [  # type: ignore[attr-defined]
        ("crash", "server", False),
        ("stop", "c1/cluster-agent", False),
        ("stop", "c1/cluster-agent", True),
        ("crash", "server", True),
    ]
    assert all(b.t >= a.t for a, b in itertools.pairwise(events))


class SlowRecorder(Recorder):
    """Takes 0.2 s to apply and to lift, as a toxiproxy call or a process signal can."""

    def apply(self, fault: Fault) -> None:
        started = time.time()
        time.sleep(0.2)
        with self.lock:
            self.calls.append(("apply", fault.target, started))
            self.calls.append(("applied", fault.target, time.time()))

    def lift(self, fault: Fault) -> None:
        with self.lock:
            self.calls.append(("lift", fault.target, time.time()))
        time.sleep(0.2)


def test_a_fault_is_dated_from_the_end_of_its_application_to_the_start_of_its_lift() -> None:
    recorder = SlowRecorder()
    stream = io.StringIO()
    epoch = time.time()
    timeline = Timeline(
        [fault("stop", "server", 0.0, 5.0)],
        epoch=epoch,
        time_scale=0.1,
        trace=TraceWriter(stream),
        processes=recorder,
    )
    timeline.start()
    deadline = time.time() + 10
    while len(recorder.calls) < 3 and time.time() < deadline:
        time.sleep(0.01)
    timeline.stop()
    when = {action: t - epoch for action, _, t in recorder.calls}
    applied, lifted = parse_trace(stream.getvalue().splitlines())
    # in force only where it surely was: from the end of its application to the start of its lift
    assert applied.t >= when["applied"]
    assert lifted.t <= when["lift"]
    assert lifted.t >= applied.t


def test_a_fault_that_fails_is_reported_not_recorded_and_not_lifted() -> None:
    recorder = Recorder(fail={"c1/cluster-agent"})
    stream = io.StringIO()
    timeline = Timeline(
        [fault("stop", "c1/cluster-agent", 0.0, 1.0)],
        epoch=time.time(),
        time_scale=0.01,
        trace=TraceWriter(stream),
        processes=recorder,
    )
    timeline.start()
    timeline.stop()
    assert timeline.records[0].errors == ["cannot reach c1/cluster-agent"]
    assert stream.getvalue() == ""
    assert recorder.calls == []


def test_faults_nothing_can_apply_are_listed_before_a_run() -> None:
    timeline = Timeline(
        [
            fault("partition", "us<->au", 0, 1),
            fault("revoke-token", "alice", 0, 1),
            fault("stop", "server", 0, 1),
        ],
        epoch=0.0,
        time_scale=1.0,
        trace=TraceWriter(io.StringIO()),
        processes=Recorder(),
    )
    assert [f.kind for f in timeline.unsupported()] == ["partition", "revoke-token"]


@pytest.mark.parametrize(
    ("kind", "target", "apply", "lift"),
    [
        (
            "crash",
            "c1/cluster-agent",
            "agent freeze --cluster c1 --replica 0",
            "agent start --cluster c1 --replica 0",
        ),
        (
            "stop",
            "c1/cluster-agent-2",
            "agent stop --cluster c1 --replica 1",
            "agent start --cluster c1 --replica 1",
        ),
        (
            "kill-cluster-agent",
            "c1",
            "agent stop --cluster c1 --replica 0",
            "agent start --cluster c1 --replica 0",
        ),
        (
            "stop",
            "c1/node-agent/n2",
            "agent stop --cluster c1 --node n2",
            "agent start --cluster c1 --node n2",
        ),
        ("crash", "c1/n1", "node kill --node n1", "node start --node n1"),
        ("stop", "c1/n1", "node stop --node n1", "node start --node n1"),
        ("crash", "server/2", "server freeze --replica 2", "server start --replica 2"),
        ("server-down", "server", "server stop", "server start"),
    ],
)
def test_process_faults_map_to_corral_fault_commands(kind: str, target: str, apply: str, lift: str) -> None:
    faults = CliProcessFaults(Path("/run"), corral=["corral"])
    f = fault(kind, target, 0, 1)
    assert faults.command(f, lift=False) == ["corral", "fault", *apply.split(), "--dir", "/run"]
    assert faults.command(f, lift=True) == ["corral", "fault", *lift.split(), "--dir", "/run"]
    assert faults.supports(f)


def test_kinds_without_a_command_are_refused_precisely() -> None:
    faults = CliProcessFaults(Path("/run"), corral=["corral"])
    assert not faults.supports(fault("revoke-token", "alice", 0, 1))
    with pytest.raises(FaultError, match="no command applies a rolling-restart fault"):
        faults.command(fault("rolling-restart", "server", 0, 1), lift=False)


def test_a_failing_command_is_a_fault_error_with_its_last_line(tmp_path: Path) -> None:
    script = tmp_path / "corral"
    script.write_text("#!/bin/sh\necho 'agent c1/cluster-agent is not running' >&2\nexit 1\n")
    script.chmod(0o755)
    faults = CliProcessFaults(tmp_path, corral=[str(script)])
    with pytest.raises(FaultError, match="exit 1: agent c1/cluster-agent is not running"):
        faults.apply(fault("stop", "c1/cluster-agent", 0, 1))


def test_run_folder_faults_call_the_fault_functions_with_the_clusters_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from corral.load import faults as module

    calls: list[tuple[str, str, dict[str, object]]] = []
    monkeypatch.setattr(module, "agent_fault", lambda run, verb, **kw: calls.append(("agent", verb, kw)))
    monkeypatch.setattr(module, "server_fault", lambda run, verb, **kw: calls.append(("server", verb, kw)))
    faults = module.RunFolderFaults(Path("/run"), cluster_ids={"c1": "c-abcde"})
    faults.apply(fault("crash", "c1/cluster-agent-2", 0, 1))
    faults.lift(fault("crash", "c1/cluster-agent-2", 0, 1))
    faults.apply(fault("stop", "c1/node-agent/n2", 0, 1))
    faults.apply(fault("crash", "server/1", 0, 1))
    faults.lift(fault("server-down", "server", 0, 1))
    assert calls == [
        ("agent", "freeze", {"cluster": "c-abcde", "replica": 1}),
        ("agent", "start", {"cluster": "c-abcde", "replica": 1}),
        ("agent", "stop", {"cluster": "c-abcde", "node": "n2"}),
        ("server", "freeze", {"replica": 1}),
        ("server", "start", {"replica": None}),
    ]
    assert CliProcessFaults(Path("/run"), corral=["corral"], cluster_ids={"c1": "c-abcde"}).command(
        fault("stop", "c1/cluster-agent", 0, 1), lift=False
    ) == ["corral", "fault", "agent", "stop", "--cluster", "c-abcde", "--replica", "0", "--dir", "/run"]
    assert not faults.supports(fault("revoke-token", "alice", 0, 1))

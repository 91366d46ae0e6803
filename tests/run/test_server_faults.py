"""`corral fault server` on a run folder: a stand-in server process (prints the ready line, then waits)
stopped, killed, frozen and started again, each recorded as FaultInjected; bad requests refused."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.controlplane.processes import ProcessGroup, read_state, stop_records
from corral.errors import ConfigError
from corral.model import FaultInjected, read_trace
from corral.run.server_faults import READY_LINE, ServerFaultError, remember_server, server_fault

pytestmark = pytest.mark.timeout(120)

STAND_IN = f"import time; print({READY_LINE!r} + '127.0.0.1:1', flush=True); time.sleep(600)"


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "trace.jsonl").touch()
    group = ProcessGroup(tmp_path, detached=True)
    for index in range(2):
        argv = [sys.executable, "-c", STAND_IN]
        group.start(f"server-{index}", argv, role="server")
        remember_server(tmp_path, name=f"server-{index}", argv=argv)
    try:
        yield tmp_path
    finally:
        records = read_state(tmp_path)
        for record in records:
            with contextlib.suppress(psutil.Error):
                psutil.Process(record.pid).resume()
        stop_records(records, timeout_seconds=5)


def pid_of(run_dir: Path, name: str) -> int:
    return next(r.pid for r in read_state(run_dir) if r.name == name)


def test_stop_kill_freeze_and_start_one_replica(run_dir: Path) -> None:
    first = pid_of(run_dir, "server-1")
    other = pid_of(run_dir, "server-0")
    (stopped,) = server_fault(run_dir, "stop", replica=1)
    assert (stopped.target, stopped.pid) == ("server/1", first)
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(ServerFaultError, match="server replica 1 is not running"):
        server_fault(run_dir, "kill", replica=1)
    (again,) = server_fault(run_dir, "start", replica=1)
    assert again.pid != first
    assert pid_of(run_dir, "server-1") == again.pid
    server_fault(run_dir, "kill", replica=1)
    (restarted,) = server_fault(run_dir, "start", replica=1)
    server_fault(run_dir, "freeze", replica=1)
    assert psutil.Process(restarted.pid).status() == psutil.STATUS_STOPPED
    (thawed,) = server_fault(run_dir, "start", replica=1)
    assert thawed.pid == restarted.pid
    assert psutil.Process(restarted.pid).status() != psutil.STATUS_STOPPED
    (running,) = server_fault(run_dir, "start", replica=1)
    assert running.action == "running"
    assert pid_of(run_dir, "server-0") == other  # the other replica untouched
    events = [e for e in read_trace(run_dir / "trace.jsonl") if isinstance(e, FaultInjected)]
    assert [(e.fault, e.target, e.lifted) for e in events] == [
        ("stop-server", "server/1", False),
        ("stop-server", "server/1", True),
        ("kill-server", "server/1", False),
        ("kill-server", "server/1", True),
        ("freeze-server", "server/1", False),
        ("freeze-server", "server/1", True),
    ]


def test_every_replica_when_none_is_named(run_dir: Path) -> None:
    done = server_fault(run_dir, "freeze")
    assert [d.target for d in done] == ["server/0", "server/1"]
    assert server_fault(run_dir, "start")[0].pid == done[0].pid


def test_unknown_replicas_actions_and_folders_are_refused(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.raises(ServerFaultError, match=r"no server replica 5 in .* \(replicas: 0..1\)"):
        server_fault(run_dir, "stop", replica=5)
    with pytest.raises(ConfigError, match="a server fault is one of stop, kill, freeze, start, got 'pause'"):
        server_fault(run_dir, "pause")  # type: ignore[arg-type]
    with pytest.raises(ServerFaultError, match="records no server replica"):
        server_fault(tmp_path_factory.mktemp("empty"), "stop")

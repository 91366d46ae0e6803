"""Faults on the server processes of a ``corral up`` run folder: stop, kill, freeze, and start again.

``corral up`` remembers how it started each replica (``RUN/server/servers.json``: its argv, which
names files, never a secret). ``stop`` is SIGTERM (a clean shutdown: the agents see their sessions
closed), ``kill`` SIGKILL (the kernel closes the sockets), ``freeze`` SIGSTOP (nothing closes: the
agents learn it from silence at their read deadline), ``start`` SIGCONT for a frozen replica or the
same command again (same port, same data folder), waiting for its ready line. Each is appended to
``RUN/trace.jsonl`` as `FaultInjected` (``<action>-server`` on ``server/<replica>``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import filelock
import psutil

from corral.controlplane.processes import ProcessGroup, ProcessRecord, is_same_process, read_state, tail
from corral.errors import ConfigError, CorralError
from corral.model.trace import FaultInjected, TraceWriter

logger = logging.getLogger(__name__)

__all__ = ["SERVERS_FILE", "ServerFault", "ServerFaultError", "remember_server", "server_fault"]

SERVERS_FILE: Final = "server/servers.json"
READY_LINE: Final = "corral server ready on "
ServerFault = Literal["stop", "kill", "freeze", "start"]
ACTIONS: Final[tuple[ServerFault, ...]] = ("stop", "kill", "freeze", "start")


class ServerFaultError(CorralError):
    """No such server replica in the run folder, or it cannot be signalled or started again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerReplica:
    """A replica after a fault: its index, its process now (0: none) and what was done."""

    replica: int
    pid: int
    action: str

    @property
    def target(self) -> str:
        return f"server/{self.replica}"


def remember_server(run_dir: Path, *, name: str, argv: Sequence[str]) -> None:
    """Record how replica `name` (``server-<index>``) was started, for ``start`` after a stop or kill."""
    with _lock(run_dir):
        document = _read(run_dir)
        document["servers"][name] = {"argv": list(argv), "last": None}
        _write(run_dir, document)


def server_fault(
    run_dir: Path,
    action: ServerFault,
    *,
    replica: int | None = None,
    timeout_seconds: float = 10.0,
    ready_timeout_seconds: float = 120.0,
) -> list[ServerReplica]:
    """Apply `action` to one replica, or to every replica when `replica` is None."""
    if action not in ACTIONS:
        raise ConfigError(f"a server fault is one of {', '.join(ACTIONS)}, got {action!r}")
    run_dir = run_dir.resolve()
    with _lock(run_dir):
        document = _read(run_dir)
        names = sorted(document["servers"], key=lambda n: int(n.rpartition("-")[2]))
        if not names:
            raise ServerFaultError(f"{run_dir} records no server replica (was it brought up by corral up?)")
        if replica is not None:
            wanted = f"server-{replica}"
            if wanted not in names:
                raise ServerFaultError(
                    f"no server replica {replica} in {run_dir} (replicas: 0..{len(names) - 1})"
                )
            names = [wanted]
        done = []
        for name in names:
            done.append(
                _act(run_dir, document, name, action,
                     timeout_seconds=timeout_seconds, ready_timeout_seconds=ready_timeout_seconds)
            )  # fmt: skip
        _write(run_dir, document)
    return done


def _act(
    run_dir: Path, document: dict[str, Any], name: str, action: ServerFault, *,
    timeout_seconds: float, ready_timeout_seconds: float,
) -> ServerReplica:  # fmt: skip
    entry = document["servers"][name]
    index = int(name.rpartition("-")[2])
    record = _record(run_dir, name)
    alive = record is not None and is_same_process(record)
    if action == "start":
        last = entry.get("last")
        if alive and record is not None and _frozen(record.pid):
            _signal(record, signal.SIGCONT)
        elif alive and record is not None:
            return ServerReplica(replica=index, pid=record.pid, action="running")
        else:
            record = _restart(run_dir, name, [str(a) for a in entry["argv"]], ready_timeout_seconds)
        entry["last"] = None
        if last:
            _trace(run_dir, f"{last}-server", f"server/{index}", lifted=True)
        return ServerReplica(replica=index, pid=record.pid, action=action)
    if not alive or record is None:
        raise ServerFaultError(f"server replica {index} is not running (start it first)")
    sig = {"stop": signal.SIGTERM, "kill": signal.SIGKILL, "freeze": signal.SIGSTOP}[action]
    _signal(record, sig)
    if action != "freeze":
        deadline = time.monotonic() + timeout_seconds
        while is_same_process(record) and time.monotonic() < deadline:
            time.sleep(0.02)
        if is_same_process(record):
            _signal(record, signal.SIGKILL)
    entry["last"] = action
    _trace(run_dir, f"{action}-server", f"server/{index}", lifted=False)
    logger.info("%s server replica %d (pid %d)", action, index, record.pid)
    return ServerReplica(replica=index, pid=record.pid, action=action)


def _restart(run_dir: Path, name: str, argv: list[str], ready_timeout_seconds: float) -> ProcessRecord:
    group = ProcessGroup.resume(run_dir, detached=True)
    group.forget([name])
    log = group.log_path(name)
    offset = log.stat().st_size if log.exists() else 0
    group.start(name, argv, role="server", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + ready_timeout_seconds
    while True:
        with log.open("rb") as stream:
            stream.seek(offset)
            if READY_LINE.encode() in stream.read():
                break
        group.check_alive(name)
        if time.monotonic() > deadline:
            raise ServerFaultError(
                f"{name} not ready {ready_timeout_seconds:g}s after its start; "
                f"last lines of {log}:\n{tail(log)}"
            )
        time.sleep(0.1)
    started = _record(run_dir, name)
    if started is None:
        raise ServerFaultError(f"{name} started but is not recorded in {run_dir}")
    return started


def _record(run_dir: Path, name: str) -> ProcessRecord | None:
    return next((r for r in read_state(run_dir) if r.name == name), None)


def _frozen(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    return False


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        raise ServerFaultError(f"{record.name} (pid {record.pid}) is gone") from None
    except PermissionError as e:
        raise ServerFaultError(f"cannot signal {record.name} (pid {record.pid}): {e}") from None


def _lock(run_dir: Path) -> filelock.FileLock:
    (run_dir / "server").mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(run_dir / "server" / ".servers.json.lock"))


def _read(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SERVERS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"servers": {}}
    except (OSError, ValueError) as e:
        raise ServerFaultError(f"{path} is unreadable: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
        raise ServerFaultError(f"{path}: expected an object with servers")
    return data


def _write(run_dir: Path, document: object) -> None:
    path = run_dir / SERVERS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
    tmp.replace(path)


def _epoch(run_dir: Path) -> float:
    """The clock of the run folder's fault events: the agents' (``agents.json``), else the run's start."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return float(json.loads((run_dir / "agents.json").read_text(encoding="utf-8"))["epoch"])
    with contextlib.suppress(OSError):
        return (run_dir / "server" / "ca.crt").stat().st_mtime
    return time.time()


def _trace(run_dir: Path, fault: str, target: str, *, lifted: bool) -> None:
    path = run_dir / "trace.jsonl"
    if not path.exists():
        return
    with path.open("a", encoding="utf-8", buffering=1) as stream:
        TraceWriter(stream).write(
            FaultInjected(t=time.time() - _epoch(run_dir), fault=fault, target=target, lifted=lifted)
        )

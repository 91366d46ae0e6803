"""The scenario's faults applied when their time comes, and each recorded as `FaultInjected`.

Links (`latency`, `partition`) are changed on the WAN (`corral.wan.Wan`). Processes and nodes are
hurt through `ProcessFaults`, an interface the run folder's owners implement; `RunFolderFaults`
calls what the `corral fault` commands call, in this process, and `CliProcessFaults` runs them:

    corral fault agent freeze|stop|start --cluster C (--replica N | --node NODE) --dir RUN
    corral fault node kill|stop|start --node NODE --dir RUN          (real nodes)
    corral fault server freeze|kill|stop|start [--replica N] --dir RUN

A ``crash`` freezes a process (SIGSTOP: its peers learn it only from silence) or kills a node; a
``stop`` shuts it down cleanly; lifting starts it again. The timeline runs on its own thread,
sleeps between actions, and at the end lifts every fault it applied, whatever happened.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from corral.agent.fleet import fault as agent_fault
from corral.controlplane import nodes
from corral.errors import CorralError
from corral.model import Fault, FaultInjected, TraceWriter
from corral.run.server_faults import server_fault
from corral.wan import Wan

logger = logging.getLogger(__name__)


class FaultError(CorralError):
    """A fault of the timeline could not be applied or lifted, or nothing here can apply it."""


class ProcessFaults(Protocol):
    """Hurts the processes and nodes of a running topology (agents, server replicas, nodes)."""

    def supports(self, fault: Fault) -> bool: ...

    def apply(self, fault: Fault) -> None: ...

    def lift(self, fault: Fault) -> None: ...


class CliProcessFaults:
    """`ProcessFaults` through the `corral fault` commands on the topology's run folder."""

    def __init__(
        self,
        run_dir: Path,
        *,
        corral: Sequence[str] | None = None,
        timeout_seconds: float = 150.0,
        cluster_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.corral = list(corral) if corral is not None else [_corral_command()]
        self.timeout_seconds = timeout_seconds
        self.cluster_ids = dict(cluster_ids or {})
        """Scenario cluster name -> the id its agents are recorded under (``corral up``'s c-xxxxx)."""

    def command(self, fault: Fault, *, lift: bool) -> list[str]:
        """The command that applies (or lifts) `fault`; `FaultError` for kinds without one."""
        action = fault.action
        if action not in ("crash", "stop"):
            raise FaultError(f"no command applies a {fault.kind} fault to processes yet ({fault.target})")
        what, cluster, name = fault.subject
        cluster = self.cluster_ids.get(cluster, cluster)
        run = ["--dir", str(self.run_dir)]
        if what == "cluster-agent":
            replica = 0 if name == "cluster-agent" else int(name.rpartition("-")[2]) - 1
            verb = "start" if lift else ("freeze" if action == "crash" else "stop")
            return [
                *self.corral,
                "fault",
                "agent",
                verb,
                "--cluster",
                cluster,
                "--replica",
                str(replica),
                *run,
            ]
        if what == "node-agent":
            verb = "start" if lift else ("freeze" if action == "crash" else "stop")
            return [*self.corral, "fault", "agent", verb, "--cluster", cluster, "--node", name, *run]
        if what == "node":
            verb = "start" if lift else ("kill" if action == "crash" else "stop")
            return [*self.corral, "fault", "node", verb, "--node", name, *run]
        verb = "start" if lift else ("freeze" if action == "crash" else "stop")
        replicas = ["--replica", name] if name else []
        return [*self.corral, "fault", "server", verb, *replicas, *run]

    def supports(self, fault: Fault) -> bool:
        try:
            self.command(fault, lift=False)
        except FaultError:
            return False
        return True

    def apply(self, fault: Fault) -> None:
        self._run(self.command(fault, lift=False), fault)

    def lift(self, fault: Fault) -> None:
        self._run(self.command(fault, lift=True), fault)

    def _run(self, argv: list[str], fault: Fault) -> None:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout_seconds, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FaultError(f"{fault.kind} {fault.target}: {' '.join(argv[-8:])}: {e}") from e
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise FaultError(f"{fault.kind} {fault.target}: exit {done.returncode}: {message[0]}")


class RunFolderFaults:
    """`ProcessFaults` in this process, on a ``corral up`` run folder: the functions behind the
    `corral fault` commands (`corral.agent.fleet.fault`, `corral.run.server_faults.server_fault`,
    `corral.controlplane.nodes`), without the seconds a new interpreter costs on a loaded machine."""

    def __init__(self, run_dir: Path, *, cluster_ids: Mapping[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.cluster_ids = dict(cluster_ids or {})
        self._cli = CliProcessFaults(run_dir, corral=["corral"], cluster_ids=cluster_ids)

    def supports(self, fault: Fault) -> bool:
        return self._cli.supports(fault)

    def apply(self, fault: Fault) -> None:
        self._act(fault, lift=False)

    def lift(self, fault: Fault) -> None:
        self._act(fault, lift=True)

    def _act(self, fault: Fault, *, lift: bool) -> None:
        argv = self._cli.command(fault, lift=lift)  # validates the fault and picks the verb
        group, verb = argv[2], argv[3]
        what, cluster, name = fault.subject
        cluster = self.cluster_ids.get(cluster, cluster)
        if group == "agent" and what == "cluster-agent":
            replica = 0 if name == "cluster-agent" else int(name.rpartition("-")[2]) - 1
            agent_fault(self.run_dir, verb, cluster=cluster, replica=replica)  # type: ignore[arg-type]
        elif group == "agent":
            agent_fault(self.run_dir, verb, cluster=cluster, node=name)  # type: ignore[arg-type]
        elif group == "node":
            {"stop": nodes.stop_node, "kill": nodes.kill_node, "start": nodes.start_node}[verb](
                self.run_dir, name
            )
        else:
            server_fault(self.run_dir, verb, replica=int(name) if name else None)  # type: ignore[arg-type]


def _corral_command() -> str:
    beside = Path(sys.executable).parent / "corral"
    return str(beside) if beside.exists() else (shutil.which("corral") or "corral")


@dataclass(slots=True, kw_only=True)
class Applied:
    fault: Fault
    applied_t: float | None = None
    lifted_t: float | None = None
    errors: list[str] = field(default_factory=list)


class Timeline:
    """Applies `faults` at ``epoch + at_seconds * time_scale`` and lifts them `duration` later."""

    def __init__(
        self,
        faults: Sequence[Fault],
        *,
        epoch: float,
        time_scale: float,
        trace: TraceWriter,
        wan: Wan | None = None,
        processes: ProcessFaults | None = None,
    ) -> None:
        self.faults = list(faults)
        self.epoch = epoch
        self.time_scale = time_scale
        self.trace = trace
        self.wan = wan
        self.processes = processes
        self.records = [Applied(fault=f) for f in self.faults]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def unsupported(self) -> list[Fault]:
        """Faults nothing here can apply (checked before a run starts)."""
        return [f for f in self.faults if self._handler(f) is None]

    def _handler(self, fault: Fault) -> Wan | ProcessFaults | None:
        if fault.kind in ("latency", "partition"):
            return self.wan
        if self.processes is not None and self.processes.supports(fault):
            return self.processes
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-timeline", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_seconds: float = 60.0) -> None:
        """Stop the timeline and lift whatever is still applied."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_seconds)
        self._lift_all()

    def _actions(self) -> list[tuple[float, int, bool]]:
        actions = []
        for index, fault in enumerate(self.faults):
            actions.append((fault.at_seconds * self.time_scale, index, False))
            actions.append((fault.end_seconds * self.time_scale, index, True))
        return sorted(actions, key=lambda a: (a[0], a[2] is False, a[1]))

    def _run(self) -> None:
        for at, index, lift in self._actions():
            delay = self.epoch + at - time.time()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            self._act(self.records[index], lift=lift)

    def _act(self, record: Applied, *, lift: bool) -> None:
        with self._lock:
            if lift and (record.applied_t is None or record.lifted_t is not None):
                return
            if not lift and record.applied_t is not None:
                return
            fault = record.fault
            handler = self._handler(fault)
            # The fault is surely in force from the end of its application until the start of its
            # lift: a request in flight while toxiproxy swaps a toxic may see either state (an
            # interrupted latency toxic passes its data on at once). So an application is dated
            # when it is done, a lift when it begins.
            began = time.time() - self.epoch
            try:
                if handler is None:
                    raise FaultError(f"nothing applies a {fault.kind} fault to {fault.target}")
                if lift:
                    handler.lift(fault)
                else:
                    handler.apply(fault)
            except CorralError as e:
                logger.error("fault %s on %s: %s", fault.kind, fault.target, e)
                record.errors.append(str(e))
                return
            t = began if lift else time.time() - self.epoch
            if lift:
                record.lifted_t = t
            else:
                record.applied_t = t
            self.trace.write(FaultInjected(t=t, fault=fault.kind, target=fault.target, lifted=lift))
            logger.info("%s %s on %s at t=%.3f", "lifted" if lift else "applied", fault.kind, fault.target, t)

    def _lift_all(self) -> None:
        for record in self.records:
            self._act(record, lift=True)

"""Agent processes of a run folder: start them as Rancher deploys them, and hurt them on purpose.

Each agent is a ``corral agent`` process in its own session, with its credentials as Rancher mounts
them (``RUN/agents/<name>/credentials/{url,token}``, mode 0600) and its ``connected`` marker in
``RUN/agents/<name>``. ``RUN/agents.json`` records how to start it again and which process it is now
(pid and start time, so a recycled pid is never signalled); ``RUN/processes.json`` lists it too, so
``corral down`` stops it with the rest. Faults (`fault`): ``kill`` (SIGKILL: the kernel closes the
socket, the server learns at once), ``freeze`` (SIGSTOP: nothing closes, the server learns at its read
deadline), ``stop`` (SIGTERM: the agent closes its session cleanly) and ``start`` (SIGCONT for a frozen
agent, a new process for a stopped or killed one). Each is appended to ``RUN/trace.jsonl`` as
`FaultInjected` when that file exists.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import filelock
import psutil

from corral.controlplane.nodeconf import NODE_LEASE_SECONDS
from corral.controlplane.processes import ProcessRecord, read_state, start_ticks, write_state
from corral.errors import ConfigError, CorralError
from corral.model.trace import FaultInjected, TraceWriter

logger = logging.getLogger(__name__)

__all__ = [
    "AGENTS_FILE",
    "AgentFaultError",
    "AgentProcess",
    "Fault",
    "agent_argv",
    "fault",
    "list_agents",
    "select_agent",
    "start_agent",
    "start_cluster_agents",
    "stop_all",
]

AGENTS_FILE: Final = "agents.json"
Fault = Literal["kill", "freeze", "stop", "start"]
FAULTS: Final[tuple[Fault, ...]] = ("kill", "freeze", "stop", "start")


class AgentFaultError(CorralError):
    """No such agent in the run folder, or it cannot be signalled or started."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentProcess:
    """One recorded agent: how to start it and which process it is now (pid 0: none)."""

    name: str
    cluster: str
    kind: Literal["cluster", "node"]
    replica: int | None = None
    node: str | None = None
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment (no secrets: the token is in the credentials folder)."""
    folder: str
    log: str
    pid: int = 0
    start_ticks: int = -1

    @property
    def target(self) -> str:
        return (
            f"{self.cluster}/replica-{self.replica}"
            if self.kind == "cluster"
            else f"{self.cluster}/{self.node}"
        )

    def alive(self) -> bool:
        return self.pid > 0 and start_ticks(self.pid) == self.start_ticks

    def frozen(self) -> bool:
        if not self.alive():
            return False
        with contextlib.suppress(psutil.Error):
            return bool(psutil.Process(self.pid).status() == psutil.STATUS_STOPPED)
        return False


def _lock(run_dir: Path) -> filelock.FileLock:
    return filelock.FileLock(str(run_dir / f".{AGENTS_FILE}.lock"))


def _read(run_dir: Path) -> dict[str, Any]:
    path = run_dir / AGENTS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"epoch": time.time(), "agents": {}}
    except (OSError, ValueError) as exc:
        raise AgentFaultError(f"{path} is unreadable: {exc}") from None
    return data if isinstance(data, dict) else {"epoch": time.time(), "agents": {}}


def _write(run_dir: Path, document: Mapping[str, Any]) -> None:
    path = run_dir / AGENTS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.replace(path)


def _load(item: Mapping[str, Any]) -> AgentProcess:
    return AgentProcess(**{**item, "argv": tuple(item["argv"]), "env": dict(item.get("env") or {})})


def list_agents(run_dir: Path) -> list[AgentProcess]:
    """Every agent recorded in the run folder."""
    return [_load(item) for item in _read(run_dir)["agents"].values()]


def agent_argv(
    kind: Literal["cluster", "node"], *, node: str | None = None, kubeconfig: Path, extra: Sequence[str] = ()
) -> list[str]:
    """``corral agent`` for one agent with this interpreter."""
    # Node agents renew their virtual node's Lease as corral's kubelets are configured to.
    which = (
        ["--cluster"]
        if kind == "cluster"
        else ["--node", str(node), "--lease-seconds", str(NODE_LEASE_SECONDS)]
    )
    return [sys.executable, "-m", "corral", "agent", *which, "--kubeconfig", str(kubeconfig), *extra]


def start_agent(
    run_dir: Path,
    *,
    name: str,
    cluster: str,
    kind: Literal["cluster", "node"],
    server: str,
    token: str,
    ca_checksum: str,
    kubeconfig: Path,
    replica: int | None = None,
    node: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AgentProcess:
    """Write the agent's credentials, start it and record it."""
    run_dir = run_dir.resolve()
    folder = run_dir / "agents" / name
    credentials = folder / "credentials"
    credentials.mkdir(parents=True, exist_ok=True)
    for file, value in (("url", server), ("token", token)):
        path = credentials / file
        path.write_text(value)
        path.chmod(0o600)
    argv = [
        *agent_argv(kind, node=node, kubeconfig=kubeconfig, extra=extra_args),
        "--credentials-dir",
        str(credentials),
        "--state-dir",
        str(folder),
    ]
    extra_env = {"CATTLE_CA_CHECKSUM": ca_checksum, **(env or {})}
    record = AgentProcess(
        name=name,
        cluster=cluster,
        kind=kind,
        replica=replica,
        node=node,
        argv=tuple(argv),
        env=extra_env,
        folder=str(folder),
        log=str(run_dir / "logs" / f"{name}.log"),
    )
    return _launch(run_dir, record)


def _launch(run_dir: Path, record: AgentProcess) -> AgentProcess:
    log = Path(record.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = {
        key: value for key, value in os.environ.items() if key not in ("CATTLE_TOKEN", "CATTLE_SERVER")
    }
    environment.update(record.env, PYTHONUNBUFFERED="1")
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                list(record.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=record.folder,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentFaultError(f"cannot start agent {record.name}: {exc}") from None
    started = replace(record, pid=proc.pid, start_ticks=start_ticks(proc.pid) or -1)
    _DETACHED.append(proc)
    with _lock(run_dir):
        document = _read(run_dir)
        document["agents"][record.name] = {
            **asdict(started),
            "argv": list(started.argv),
            "env": dict(started.env),
        }
        _write(run_dir, document)
        if (run_dir / "processes.json").exists():
            others = [r for r in read_state(run_dir) if r.name != record.name]
            entry = ProcessRecord(
                name=record.name,
                pid=started.pid,
                start_ticks=started.start_ticks,
                executable=record.argv[0],
                log=record.log,
                role="agent",
            )
            write_state(run_dir, [*others, entry])
    logger.info("started agent %s (pid %d)", record.name, started.pid)
    return started


_DETACHED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _reap_detached() -> None:
    """Collect the exit status of agents that were stopped by pid (`corral down`, faults), so their
    Popen objects do not warn at interpreter exit; agents still running are left running."""
    for proc in _DETACHED:
        proc.poll()


def select_agent(
    run_dir: Path, *, cluster: str, replica: int | None = None, node: str | None = None
) -> AgentProcess:
    """The cluster agent replica (default 0) or the node agent of ``node`` of ``cluster``."""
    agents = list_agents(run_dir)
    for agent in agents:
        if agent.cluster != cluster:
            continue
        if node is not None and agent.kind == "node" and agent.node == node:
            return agent
        if node is None and agent.kind == "cluster" and agent.replica == (replica or 0):
            return agent
    known = ", ".join(a.target for a in agents) or "none"
    wanted = f"{cluster}/{node}" if node is not None else f"{cluster}/replica-{replica or 0}"
    raise AgentFaultError(f"no agent {wanted} in {run_dir} (known: {known})")


def _trace(run_dir: Path, fault_name: str, target: str, *, lifted: bool) -> None:
    path = run_dir / "trace.jsonl"
    if not path.exists():
        return
    epoch = float(_read(run_dir).get("epoch") or time.time())
    with path.open("a", encoding="utf-8", buffering=1) as stream:
        TraceWriter(stream).write(
            FaultInjected(t=time.time() - epoch, fault=fault_name, target=target, lifted=lifted)
        )


def fault(
    run_dir: Path,
    action: Fault,
    *,
    cluster: str,
    replica: int | None = None,
    node: str | None = None,
    timeout_seconds: float = 10.0,
) -> AgentProcess:
    """Apply one fault to one agent; returns its record afterwards."""
    if action not in FAULTS:
        raise ConfigError(f"fault must be one of {', '.join(FAULTS)}, got {action!r}")
    run_dir = run_dir.resolve()
    agent = select_agent(run_dir, cluster=cluster, replica=replica, node=node)
    role = "cluster-agent" if agent.kind == "cluster" else "node-agent"
    if action == "start":
        if agent.frozen():
            os.killpg(agent.pid, signal.SIGCONT)
            _trace(run_dir, f"freeze-{role}", agent.target, lifted=True)
            return agent
        if agent.alive():
            return agent
        started = _launch(run_dir, agent)
        _trace(run_dir, f"stop-{role}", agent.target, lifted=True)
        return started
    if not agent.alive():
        raise AgentFaultError(f"agent {agent.target} is not running (start it first)")
    sig = {"kill": signal.SIGKILL, "freeze": signal.SIGSTOP, "stop": signal.SIGTERM}[action]
    try:
        os.killpg(agent.pid, sig)
    except ProcessLookupError:
        raise AgentFaultError(f"agent {agent.target} is gone") from None
    if action == "stop":
        deadline = time.monotonic() + timeout_seconds
        while agent.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if agent.alive():
            os.killpg(agent.pid, signal.SIGKILL)
    elif action == "kill":
        deadline = time.monotonic() + timeout_seconds
        while agent.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
    _trace(run_dir, f"{action}-{role}", agent.target, lifted=False)
    return agent


def stop_all(run_dir: Path, *, timeout_seconds: float = 10.0) -> int:
    """SIGCONT then SIGTERM every live agent of the run folder, SIGKILL the late; returns how many ran."""
    running = [a for a in list_agents(run_dir.resolve()) if a.alive()]
    for agent in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, signal.SIGCONT)
            os.killpg(agent.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while any(a.alive() for a in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for agent in running:
        if agent.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGKILL)
    for proc in list(_DETACHED):
        if proc.poll() is not None:
            _DETACHED.remove(proc)
    return len(running)


def start_cluster_agents(
    run_dir: Path,
    *,
    cluster: str,
    profile: Literal["rke1", "rke2"],
    replicas: int,
    nodes: Sequence[str],
    server: str,
    token: str,
    ca_checksum: str,
    kubeconfig: Path,
    etcd: tuple[str, str] | None = None,
    etcd_nodes: Sequence[str] = (),
) -> list[AgentProcess]:
    """The agents Rancher runs for a cluster: ``replicas`` cluster agents, and for ``rke1`` a node agent
    per node (docs/rancher.md#cluster-agent-replicas, #node-agents). The agents of ``etcd_nodes`` get
    the cluster's ``etcd`` (URL, key prefix) for snapshots."""
    started = [
        start_agent(
            run_dir,
            name=f"cluster-agent-{cluster}-{replica}",
            cluster=cluster,
            kind="cluster",
            replica=replica,
            server=server,
            token=token,
            ca_checksum=ca_checksum,
            kubeconfig=kubeconfig,
        )
        for replica in range(replicas)
    ]
    if profile == "rke1":
        started.extend(
            start_agent(
                run_dir,
                name=f"node-agent-{cluster}-{node}",
                cluster=cluster,
                kind="node",
                node=node,
                server=server,
                token=token,
                ca_checksum=ca_checksum,
                kubeconfig=kubeconfig,
                extra_args=_etcd_args(etcd) if node in etcd_nodes else (),
            )
            for node in nodes
        )
    return started


def _etcd_args(etcd: tuple[str, str] | None) -> tuple[str, ...]:
    return () if etcd is None else ("--etcd-endpoint", etcd[0], "--etcd-prefix", etcd[1])

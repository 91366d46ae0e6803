"""One load run end to end: links, plan, seeding, locust processes, the fault timeline, checks, report.

    result = run_load(LoadSettings(scenario_file=..., topology=..., out_dir=...))
    sys.exit(result.exit_code)

locust runs in its own processes (headless; one, or a master and N workers on 127.0.0.1), writing
its CSV and HTML, the shared trace events and the write logs into `out_dir`. Everything is bounded:
the greenlets stop at the plan's end, locust's run time stops the master, and the processes are
stopped after a grace period whatever they do. The run then merges the traces, checks that nothing
was lost with admin credentials, gates on the SLOs and writes ``summary.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.checks import Violation
from corral.controlplane.build import ensure_built
from corral.controlplane.processes import ProcessGroup, free_port, tail
from corral.errors import ConfigError, CorralError
from corral.k8s import KubeClient
from corral.load.faults import FaultError, ProcessFaults, RunFolderFaults, Timeline
from corral.load.gate import Verdict, gate
from corral.load.plan import RUN_LABEL, Bounds, Plan, build_plan, run_id_for, seed
from corral.load.writes import WriteReport, check_writes, read_write_logs
from corral.model import (
    Event,
    RequestCompleted,
    Scenario,
    TraceWriter,
    quantile,
    read_trace,
    succeeded,
    summarise,
)
from corral.run.links import attach_links
from corral.wan import ToxiproxyServer, Wan, rewrite

logger = logging.getLogger(__name__)

WARMUP_SECONDS = 4.0
"""Time the locust processes get to start before the scenario's clock starts."""
WORKER_WARMUP_SECONDS = 3.0
GRACE_SECONDS = 30.0


def default_locustfile() -> Path:
    """loadtests/locustfile.py of the checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "loadtests" / "locustfile.py"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSettings:
    scenario_file: Path
    topology: Mapping[str, Any]
    out_dir: Path
    bounds: Bounds = field(default_factory=Bounds)
    paths: Sequence[str] | None = None
    wan: bool = True
    jitter_ms: int = 0
    bandwidth_kbps: int | None = None
    workers: int = 0
    """0: one locust process; N: a master and N workers."""
    fault_dir: Path | None = None
    """Run folder the `corral fault` commands act on (process faults); None applies link faults only."""
    processes: ProcessFaults | None = None
    skip_unsupported_faults: bool = False
    locustfile: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    out_dir: Path
    summary: Mapping[str, Any]
    verdict: Verdict
    writes: WriteReport
    fault_errors: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return (
            self.verdict.passed
            and self.writes.lost == 0
            and self.writes.phantom == 0
            and not self.fault_errors
            and bool(self.summary["paths"])
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def run_load(settings: LoadSettings) -> LoadResult:
    scenario = Scenario.load(settings.scenario_file)
    if settings.workers < 0:
        raise ConfigError(f"workers must be >= 0, got {settings.workers}")
    locustfile = settings.locustfile or default_locustfile()
    if not locustfile.is_file():
        raise ConfigError(f"no locustfile at {locustfile} (load runs need a checkout's loadtests/)")
    out = settings.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("trace*.jsonl"), *out.glob("writes-*.jsonl")]:
        stale.unlink()
    toxiproxy = None
    wan = None
    adopted: frozenset[str] = frozenset()
    try:
        endpoints = None
        if settings.wan:
            wan = attach_links(
                settings.topology,
                scenario,
                jitter_ms=settings.jitter_ms,
                bandwidth_kbps=settings.bandwidth_kbps,
            )
            if wan is None:
                binary = ensure_built(["toxiproxy-server"])["toxiproxy-server"]
                toxiproxy = ToxiproxyServer(Path(binary), out / "wan")
                wan = Wan(
                    toxiproxy.start(),
                    scenario,
                    jitter_ms=settings.jitter_ms,
                    bandwidth_kbps=settings.bandwidth_kbps,
                )
            adopted = frozenset(r.name for r in wan.routes)
            endpoints = rewrite(wan, scenario, settings.topology)
        run_id = run_id_for(scenario, time.time())
        plan = build_plan(
            scenario,
            settings.scenario_file,
            settings.topology,
            out_dir=out,
            run_id=run_id,
            bounds=settings.bounds,
            paths=settings.paths,
            endpoints=endpoints,
        )
        processes = settings.processes
        if processes is None and settings.fault_dir is not None:
            ids = {name: str(c.get("id", name)) for name, c in settings.topology["clusters"].items()}
            processes = RunFolderFaults(settings.fault_dir, cluster_ids=ids)
        with TraceWriter(out / "trace-faults.jsonl") as fault_trace:
            probe = Timeline(
                scenario.faults, epoch=0.0, time_scale=1.0, trace=fault_trace, wan=wan, processes=processes
            )
            unsupported = probe.unsupported()
            if unsupported and not settings.skip_unsupported_faults:
                names = ", ".join(f"{f.kind} {f.target}" for f in unsupported)
                raise FaultError(
                    f"nothing here applies these faults: {names} (give the topology's run folder for process "
                    "faults, or skip them explicitly)"
                )
            _seed(plan, scenario)
            plan = _schedule(plan, scenario, settings)
            timeline = Timeline(
                [f for f in scenario.faults if f not in unsupported],
                epoch=plan.epoch,
                time_scale=settings.bounds.time_scale,
                trace=fault_trace,
                wan=wan,
                processes=processes,
            )
            (out / "plan.json").write_text(json.dumps(plan.to_json(), indent=2), encoding="utf-8")
            master_log = _drive(plan, settings, locustfile, timeline)
            fault_errors = tuple(e for r in timeline.records for e in r.errors)
    finally:
        if toxiproxy is not None:
            toxiproxy.stop()
        elif wan is not None:
            _drop_own_routes(wan, adopted)
    skipped = tuple(f"{f.kind} {f.target}" for f in unsupported)
    return _report(plan, scenario, settings, fault_errors, skipped, master_log=master_log)


def _drop_own_routes(wan: Wan, adopted: frozenset[str]) -> None:
    """Remove the links this run added to a topology's toxiproxy (its direct paths), leaving the
    topology's own as they were."""
    for route in wan.routes:
        if route.name not in adopted:
            try:
                wan.client.delete_proxy(route.name)
            except CorralError as e:
                logger.warning("could not remove link %s: %s", route.name, e)


def _drive(plan: Plan, settings: LoadSettings, locustfile: Path, timeline: Timeline) -> Path:
    """Run locust and the fault timeline until locust ends (or its grace runs out); the master's log."""
    group = ProcessGroup(plan.out_dir / "locust")
    try:
        master = _start_locust(group, plan, settings, locustfile)
        timeline.start()
        deadline = plan.stop_at + GRACE_SECONDS
        while master.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if master.poll() is None:
            logger.warning("locust did not stop by itself; stopping it")
    finally:
        timeline.stop()
        group.stop(timeout_seconds=10.0)
    return group.log_path("master")


def _seed(plan: Plan, scenario: Scenario) -> None:
    for cluster in sorted({t.cluster for t in plan.targets}):
        with KubeClient(plan.admin[cluster]) as client:
            seed(client, scenario, namespace=plan.namespace, user_ids=plan.user_ids)


def _schedule(plan: Plan, scenario: Scenario, settings: LoadSettings) -> Plan:
    warmup = WARMUP_SECONDS + (WORKER_WARMUP_SECONDS if settings.workers else 0.0)
    epoch = time.time() + warmup
    horizon = scenario.horizon_seconds * settings.bounds.time_scale
    length = min(settings.bounds.max_seconds, horizon + 1.0)
    return dataclasses.replace(plan, epoch=epoch, stop_at=epoch + length)


def _start_locust(group: ProcessGroup, plan: Plan, settings: LoadSettings, locustfile: Path) -> Any:
    env = dict(os.environ)
    env["CORRAL_LOAD_PLAN"] = str(plan.out_dir / "plan.json")
    root = str(locustfile.resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    run_time = math.ceil(plan.stop_at - time.time()) + 2
    users = str(plan.bounds.users)
    base = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", "WARNING"]
    master = [
        *base,
        "--headless",
        "--users",
        users,
        "--spawn-rate",
        users,
        "--run-time",
        f"{run_time}s",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "0",
        "--csv",
        str(plan.out_dir / "locust"),
        "--html",
        str(plan.out_dir / "locust.html"),
    ]
    if not settings.workers:
        return group.start("master", master, env={**env, "CORRAL_LOAD_PROCESS": "local"}, cwd=plan.out_dir)
    port = free_port()
    master += [
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(settings.workers),
        "--expect-workers-max-wait",
        "30",
    ]
    proc = group.start("master", master, env={**env, "CORRAL_LOAD_PROCESS": "master"}, cwd=plan.out_dir)
    for index in range(1, settings.workers + 1):
        name = f"worker-{index}"
        worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        group.start(name, worker, env={**env, "CORRAL_LOAD_PROCESS": name}, cwd=plan.out_dir)
    return proc


def _report(
    plan: Plan,
    scenario: Scenario,
    settings: LoadSettings,
    fault_errors: tuple[str, ...],
    skipped: tuple[str, ...],
    *,
    master_log: Path,
) -> LoadResult:
    out = plan.out_dir
    events: list[Event] = []
    for path in sorted(out.glob("trace-*.jsonl")):
        events.extend(read_trace(path))
    events.sort(key=lambda e: e.t)
    with TraceWriter(out / "trace.jsonl") as writer:
        writer.write_all(events)
    if not any(isinstance(e, RequestCompleted) for e in events):
        raise CorralError(f"the load run sent no request; last lines of {master_log}:\n{tail(master_log)}")

    def read(cluster: str) -> dict[str, dict[str, str]]:
        with KubeClient(plan.admin[cluster]) as client:
            items = client.list(
                f"/api/v1/namespaces/{plan.namespace}/configmaps", label_selector=f"{RUN_LABEL}={plan.run_id}"
            )
        return {i["metadata"]["name"]: dict(i.get("data") or {}) for i in items.get("items") or ()}

    writes = check_writes(read_write_logs(sorted(out.glob("writes-*.jsonl"))), read)
    verdict = gate(scenario, events, paths=plan.paths)
    summary = summarise(
        events,
        scenario=scenario.name,
        source="load",
        run_id=plan.run_id,
        paths_carried=list(plan.paths),
        wan=settings.wan,
        workers=settings.workers,
        time_scale=settings.bounds.time_scale,
        seconds=round(plan.stop_at - plan.epoch, 3),
    )
    summary["by_path_and_verb"] = by_path_and_verb(events)
    summary["unreachable"] = list(plan.unreachable)
    summary["writes"] = writes.to_json()
    summary["slo"] = {
        "source": verdict.slo_source,
        "violations": [str(v) for v in verdict.violations],
        "not_checked": list(verdict.not_checked),
    }
    summary["faults"] = {"errors": list(fault_errors), "skipped": list(skipped)}
    result = LoadResult(
        out_dir=out, summary=summary, verdict=verdict, writes=writes, fault_errors=fault_errors
    )
    summary["passed"] = result.passed
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_report(summary, verdict.violations), encoding="utf-8")
    return result


def by_path_and_verb(events: Sequence[Event]) -> dict[str, dict[str, Any]]:
    """Requests, failures and latency quantiles of succeeded requests per ``path verb``."""
    groups: dict[str, list[RequestCompleted]] = {}
    for item in events:
        if isinstance(item, RequestCompleted):
            groups.setdefault(f"{item.path} {item.verb}", []).append(item)
    table = {}
    for key, items in sorted(groups.items()):
        served = sorted(i.latency_seconds for i in items if succeeded(i.status))
        row: dict[str, Any] = {"requests": len(items), "failed": len(items) - len(served)}
        if served:
            row |= {
                q: round(quantile(served, p, presorted=True), 6)
                for q, p in (("p50", 50), ("p95", 95), ("p99", 99))
            }
        table[key] = row
    return table


def render_report(summary: Mapping[str, Any], violations: Sequence[Violation]) -> str:
    lines = [
        f"# Load run of {summary['scenario']} ({summary['run_id']})",
        "",
        f"{'PASSED' if summary['passed'] else 'FAILED'}: paths {', '.join(summary['paths_carried'])}, "
        f"{summary['seconds']} s, {summary['workers']} worker(s), "
        f"WAN links {'on' if summary['wan'] else 'off'}.",
        "",
        "| path verb | requests | failed | p50 s | p95 s | p99 s |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in summary["by_path_and_verb"].items():
        lines.append(
            f"| {key} | {row['requests']} | {row['failed']} | {row.get('p50', '-')} | "
            f"{row.get('p95', '-')} | {row.get('p99', '-')} |"
        )
    w = summary["writes"]
    lines += [
        "",
        f"Writes: {w['writes']} ({w['acknowledged']} acknowledged, {w['rejected']} rejected, "
        f"{w['uncertain']} without a clear answer, {w['retried']} retried) on {w['objects']} objects; "
        f"lost {w['lost']}, phantom {w['phantom']}.",
        "",
        f"SLOs ({summary['slo']['source']}): " + ("met" if not violations else f"{len(violations)} missed"),
    ]
    lines += [f"- {v}" for v in violations]
    lines += [f"- not checked: {n}" for n in summary["slo"]["not_checked"]]
    lines += [f"- fault error: {e}" for e in summary["faults"]["errors"]]
    lines += [f"- fault skipped: {e}" for e in summary["faults"]["skipped"]]
    lines += [f"- not sent: {u}" for u in summary["unreachable"]]
    lines += [f"- {f}" for f in w["findings"]]
    return "\n".join(lines) + "\n"

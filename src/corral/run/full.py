"""``corral run``: the whole job on one scenario, from a bare machine to a report.

Its steps, each a child process so that one failing leaves the others to run: ``corral up`` of the
reference topology, the conformance suites that run on that topology (``pytest conformance
--corral-run RUN --corral-target-only``), a short load run of the scenario's workload on it, the
model on the same scenario, and the conformance report (measured against simulated where both
traces exist). Progress is printed as it goes; whatever fails, the report is written and says which
step failed and why, and ``RUN/run.json`` records every step.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from corral.errors import ConfigError, CorralError
from corral.model import Scenario
from corral.report.build import Report, build_report
from corral.report.catalogue import Catalogue
from corral.report.results import Results, fact_totals

logger = logging.getLogger(__name__)

__all__ = ["FullRunSettings", "RunSummary", "Step", "full_run", "summary_lines"]

REPORT_DIR: Final = "report"
RESULTS_FILE: Final = "conformance-results.json"
RUN_FILE: Final = "run.json"
LOGS_DIR: Final = "logs"
CONFORMANCE_DIR: Final = "conformance"
CATALOGUE_FILE: Final = "requirements.yaml"
PROGRESS_MARKS: Final = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class FullRunSettings:
    scenario: Path
    run_dir: Path
    checkout: Path | None
    """The folder holding ``conformance/`` (a source checkout); None: no suites, an empty catalogue."""
    load_seconds: float = 30.0
    rbac_profile: str = "default"
    keep: bool = False
    """Leave the topology running afterwards (``corral down --dir RUN`` stops it)."""
    python: str = sys.executable


@dataclass(slots=True, kw_only=True)
class Step:
    name: str
    status: str = "not run"
    """passed, failed, skipped or not run."""
    seconds: float = 0.0
    detail: str = ""


@dataclass(slots=True, kw_only=True)
class RunSummary:
    scenario: str
    run_dir: Path
    steps: list[Step] = field(default_factory=list)
    report: Report | None = None
    facts: dict[str, int | float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(step.status in ("passed", "skipped") for step in self.steps) and self.report is not None


def full_run(settings: FullRunSettings, *, progress: Progress) -> RunSummary:
    """Every step on ``settings.scenario`` into ``settings.run_dir``; the summary (``ok`` when all passed)."""
    started = time.monotonic()
    scenario = Scenario.load(settings.scenario)
    run_dir = settings.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOGS_DIR).mkdir(exist_ok=True)
    summary = RunSummary(scenario=scenario.name, run_dir=run_dir)
    runner = _Runner(settings=settings, run_dir=run_dir, summary=summary, progress=progress)
    topology = run_dir / "topology.json"
    try:
        runner.step("up", runner.up, needs=None)
        runner.step("conformance", runner.conformance, needs=topology)
        runner.step("load", runner.load, needs=topology)
        runner.step("model", runner.model, needs=None)
    finally:
        if not settings.keep and summary.steps[0].status != "not run":
            runner.step("down", runner.down, needs=None)
        runner.step("report", lambda: runner.report(scenario), needs=None)
        summary.seconds = time.monotonic() - started
        _write_run_file(summary)
    return summary


@dataclass(slots=True, kw_only=True)
class _Runner:
    settings: FullRunSettings
    run_dir: Path
    summary: RunSummary
    progress: Progress

    def step(self, name: str, action: Callable[[], str], *, needs: Path | None) -> None:
        entry = Step(name=name)
        self.summary.steps.append(entry)
        index = len(self.summary.steps)
        if needs is not None and not needs.exists():
            entry.status, entry.detail = "skipped", f"no {needs.name}: an earlier step failed"
            self.progress(f"[{index}] {name}: skipped ({entry.detail})")
            return
        self.progress(f"[{index}] {name} ...")
        started = time.monotonic()
        try:
            detail = action()
        except _StepSkippedError as e:
            entry.status, entry.detail = "skipped", str(e)
        except (CorralError, OSError, subprocess.SubprocessError) as e:
            entry.status, entry.detail = "failed", str(e)
        else:
            entry.status, entry.detail = "passed", detail
        entry.seconds = time.monotonic() - started
        said = f": {entry.detail}" if entry.detail else ""
        self.progress(f"[{index}] {name}: {entry.status} in {entry.seconds:.0f} s{said}")

    # -- the steps --------------------------------------------------------------------------------

    def up(self) -> str:
        self._child(
            "up", ["up", "--scenario", str(self.settings.scenario), "--dir", str(self.run_dir)], echo=True
        )
        return f"topology in {self.run_dir / 'topology.json'}"

    def conformance(self) -> str:
        suites = self._suites()
        results = self.run_dir / REPORT_DIR / RESULTS_FILE
        results.parent.mkdir(exist_ok=True)
        args = [
            "-m", "pytest", str(suites), "--with-clusters", "--corral-target-only", "-p", "no:cacheprovider",
            "-v", "--no-header", f"--corral-run={self.run_dir}",
            f"--corral-scenario={self.settings.scenario.resolve()}",
            f"--corral-rbac-profile={self.settings.rbac_profile}", f"--corral-results={results}",
            f"--junitxml={self.run_dir / REPORT_DIR / 'junit.xml'}",
        ]  # fmt: skip
        code = self._stream("conformance", args, cwd=suites.parent)
        counts = _outcome_counts(results)
        if code not in (0, 1) or not counts:
            raise CorralError(f"pytest exited {code} (see {self._log('conformance')})")
        elsewhere = counts.pop("deselected", 0)
        said = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        said += f" ({elsewhere} deselected: not on this topology or target)" if elsewhere else ""
        if code == 1:
            raise CorralError(f"tests failed: {said}")
        return said

    def load(self) -> str:
        # Only looked up, never imported: importing locust monkey-patches this process with gevent.
        if importlib.util.find_spec("locust") is None:
            raise _StepSkippedError("locust is not installed (the `load` extra: pip install 'corral[load]')")
        out = self.run_dir / "load"
        code = self._child(
            "load",
            ["load", "run", str(self.settings.scenario), "--topology", str(self.run_dir / "topology.json"),
             "--out", str(out), "--max-seconds", f"{self.settings.load_seconds:g}"],
            check=False,
        )  # fmt: skip
        if not (out / "trace.jsonl").exists():
            raise CorralError(f"the load run wrote no trace (exit {code}; see {self._log('load')})")
        if code == 1:
            raise CorralError(f"the scenario's SLOs were missed or a write was lost (see {out})")
        if code != 0:
            raise CorralError(f"the load run exited {code} (see {self._log('load')})")
        return f"trace in {out / 'trace.jsonl'}"

    def model(self) -> str:
        try:
            import simpy  # noqa: F401
        except ImportError:
            raise _StepSkippedError(
                "SimPy is not installed (the `sim` extra: pip install 'corral[sim]')"
            ) from None
        out = self.run_dir / "sim"
        self._child(
            "model",
            ["sim", "run", str(self.settings.scenario), "--seed", "1", "--out", str(out), "--no-progress"],
        )
        return f"trace in {out / 'trace.jsonl'}"

    def down(self) -> str:
        self._child("down", ["down", "--dir", str(self.run_dir)])
        return "topology stopped"

    def report(self, scenario: Scenario) -> str:
        checkout = self.settings.checkout
        catalogue_path = checkout / CONFORMANCE_DIR / CATALOGUE_FILE if checkout else None
        catalogue = (
            Catalogue.load(catalogue_path)
            if catalogue_path and catalogue_path.exists()
            else Catalogue(requirements=())
        )
        results_path = self.run_dir / REPORT_DIR / RESULTS_FILE
        results = Results.load(results_path) if results_path.exists() else Results.empty()
        steps = {
            f"step {i} {s.name}": f"{s.status} in {s.seconds:.0f} s" + (f": {s.detail}" if s.detail else "")
            for i, s in enumerate(self.summary.steps, start=1)
            if s.name != "report"
        }
        results = dataclasses.replace(results, environment={**results.environment, **steps})
        traces = {
            name: path
            for name, path in (
                ("measured", self.run_dir / "load" / "trace.jsonl"),
                ("simulated", self.run_dir / "sim" / "trace.jsonl"),
            )
            if path.exists()
        }
        if "measured" not in traces and (self.run_dir / "trace.jsonl").exists():
            traces["measured"] = self.run_dir / "trace.jsonl"  # the server's own trace, without load
        self.summary.report = build_report(
            catalogue=catalogue,
            results=results,
            out=self.run_dir / REPORT_DIR,
            traces=traces,
            scenario=scenario,
            title=f"corral run of {scenario.name}",
        )
        self.summary.facts = fact_totals(results.tests)
        return str(self.summary.report.html)

    # -- children ---------------------------------------------------------------------------------

    def _suites(self) -> Path:
        checkout = self.settings.checkout
        suites = checkout / CONFORMANCE_DIR if checkout else None
        if suites is None or not (suites / CATALOGUE_FILE).exists():
            raise _StepSkippedError(
                "the conformance suites are not here: run from a source checkout or pass --checkout"
            )
        return suites.resolve()

    def _log(self, name: str) -> Path:
        return self.run_dir / LOGS_DIR / f"run-{name}.log"

    def _child(self, name: str, args: Sequence[str], *, check: bool = True, echo: bool = False) -> int:
        """``python -m corral ARGS``, its output in ``RUN/logs/run-<name>.log`` (and echoed if asked)."""
        code = self._stream(name, ["-m", "corral", *args], echo=echo)
        if check and code != 0:
            raise CorralError(f"corral {args[0]} exited {code}: {_last_line(self._log(name))}")
        return code

    def _stream(self, name: str, args: Sequence[str], *, cwd: Path | None = None, echo: bool = False) -> int:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (
            self._log(name).open("w", encoding="utf-8") as log,
            subprocess.Popen(
                [self.settings.python, *args],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=environment,
            ) as child,
        ):
            assert child.stdout is not None
            for line in child.stdout:
                log.write(line)
                text = line.rstrip()
                if echo or any(f" {mark}" in text for mark in PROGRESS_MARKS):
                    self.progress(f"    {text}")
            return child.wait()


class _StepSkippedError(CorralError):
    """A step that cannot run here (an extra not installed, no suites); the others still run."""


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _outcome_counts(results: Path) -> dict[str, int]:
    if not results.exists():
        return {}
    try:
        tests = Results.load(results).tests
    except ConfigError:
        return {}
    counts: dict[str, int] = {}
    for test in tests:
        counts[test.outcome] = counts.get(test.outcome, 0) + 1
    return counts


def _write_run_file(summary: RunSummary) -> None:
    document: dict[str, Any] = {
        "scenario": summary.scenario,
        "seconds": round(summary.seconds, 1),
        "ok": summary.ok,
        "steps": [dataclasses.asdict(step) for step in summary.steps],
        "report": str(summary.report.html) if summary.report else None,
        "facts": summary.facts,
    }
    (summary.run_dir / RUN_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def summary_lines(summary: RunSummary) -> list[str]:
    """The short summary printed at the end of a run."""
    passed = sum(1 for s in summary.steps if s.status == "passed")
    minutes, seconds = divmod(int(summary.seconds), 60)
    lines = [
        f"corral run of {summary.scenario}: {passed} of {len(summary.steps)} steps passed "
        f"in {minutes} min {seconds:02d} s"
    ]
    for step in summary.steps:
        lines.append(f"  {step.name:<12} {step.status:<8} {step.seconds:6.0f} s  {step.detail}".rstrip())
    report = summary.report
    if report is not None:
        decisions = summary.facts.get("rbac_decisions")
        covered = f"requirements covered {report.covered}/{report.total}"
        lines.append(
            f"  {covered}" + (f"; RBAC decisions checked {decisions}" if decisions is not None else "")
        )
        lines.append(f"report: {report.html}")
        lines.append(f"        {report.markdown}")
    else:
        lines.append("no report could be written (see RUN/logs/)")
    return lines

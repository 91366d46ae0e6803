"""Tests linked to requirements, the target chosen, and each test's outcome kept for the report.

Every test under conformance/ names the requirements it checks with
``@pytest.mark.requirement("PROXY-001", ...)``; an unknown id, or a test naming none, stops the
session at collection with the list of offenders. Each linked test gets allure labels (epic = part,
feature, story = title, a ``requirement`` label and a link per id) and JUnit properties. Tests that
cannot hold on the chosen target (a Rancher version a requirement does not cover, corral's own
behaviour on a real Rancher, a capability the target lacks, a target that cannot run here) are
deselected with the reason, which the terminal summary and the results file both show.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.targets import Capability
from corral.report.catalogue import Catalogue
from corral.report.redact import redact_text

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
CATALOGUE = HERE / "requirements.yaml"
MARKER = "requirement"
NEEDS = "target_needs"
LINK_PATTERN = "../conformance/index.html#{id}"
"""Where an allure link of a requirement points: its row in the conformance report beside allure's."""
RESULTS_VERSION = 1

REQUIREMENTS = pytest.StashKey[tuple[str, ...]]()
ON_OWN_CLUSTERS = "the test brings up corral's own clusters instead of using the target"
"""Why a test that does not use the `target` fixture cannot say anything about a real Rancher."""


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetPlan:
    """What is known of the target before any test runs: enough to deselect at collection."""

    name: str
    capabilities: frozenset[Capability]
    rancher_version: str | None = None
    is_rancher: bool = False
    unavailable: str = ""
    """Why the target cannot run here; every test that needs it is then deselected with this."""
    target_only: bool = False
    """Only the tests that use the target run (``--corral-target-only``: a run on one topology)."""


@dataclass(slots=True)
class Outcome:
    nodeid: str
    requirements: tuple[str, ...]
    outcome: str = "not run"
    reason: str = ""
    duration: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)
    """What the test recorded with ``record_property`` (counts, a minimal failing example)."""


@dataclass(slots=True, eq=False)
class Linker:
    """The plugin object: registered by conformance/conftest.py for the whole session (hashable, as
    pytest's plugin manager needs: compared by identity)."""

    catalogue: Catalogue
    plan: TargetPlan
    results_path: Path | None = None
    root: Path = HERE
    """Tests under this folder must be linked; others are left alone."""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    summary: Counter[str] = field(default_factory=Counter)
    started: str = field(default_factory=_now)
    environment: dict[str, Any] = field(default_factory=dict)

    # -- collection -------------------------------------------------------------------------------

    def link(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Check and label every conformance test; `pytest.UsageError` lists unknown ids, unlinked tests."""
        unknown: list[str] = []
        unlinked: list[str] = []
        allure = config.pluginmanager.hasplugin("allure_pytest")
        for item in items:
            if self.root not in item.path.parents:
                continue
            ids = tuple(dict.fromkeys(i for mark in item.iter_markers(MARKER) for i in mark.args))
            if not ids:
                unlinked.append(item.nodeid)
                continue
            bad = self.catalogue.unknown(list(ids))
            if bad or not all(isinstance(i, str) for i in ids):
                unknown.append(f"{item.nodeid}: {', '.join(map(str, bad or ids))}")
                continue
            item.stash[REQUIREMENTS] = ids
            self.outcomes[item.nodeid] = Outcome(item.nodeid, ids)
            for ident in ids:
                item.user_properties.append(("requirement", ident))
                if allure:
                    _allure_marks(item, self.catalogue, ident)
        problems = []
        if unknown:
            problems.append("requirements not in conformance/requirements.yaml:\n  " + "\n  ".join(unknown))
        if unlinked:
            problems.append(
                "conformance tests that name no requirement (add @pytest.mark.requirement(...)):\n  "
                + "\n  ".join(unlinked)
            )
        if problems:
            raise pytest.UsageError("\n".join(problems))

    def select(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Deselect, with a reason, the tests that cannot hold on this target."""
        kept: list[pytest.Item] = []
        gone: list[pytest.Item] = []
        for item in items:
            reason = self.why_not(item)
            if reason:
                gone.append(item)
                self.summary[reason] += 1
                if item.nodeid in self.outcomes:
                    self.outcomes[item.nodeid].outcome = "deselected"
                    self.outcomes[item.nodeid].reason = reason
            else:
                kept.append(item)
        if gone:
            config.hook.pytest_deselected(items=gone)
            items[:] = kept

    def why_not(self, item: pytest.Item) -> str:
        if self.root not in item.path.parents:
            return ""
        plan = self.plan
        needs = {Capability(c) for mark in item.iter_markers(NEEDS) for c in mark.args}
        uses_target = "target" in getattr(item, "fixturenames", ()) or bool(needs)
        if uses_target and plan.unavailable:
            return f"target {plan.name} unavailable: {plan.unavailable}"
        if plan.target_only and not uses_target:
            return f"--corral-target-only: {ON_OWN_CLUSTERS}"
        if plan.is_rancher:
            for ident in item.stash.get(REQUIREMENTS, ()):
                reason = self.catalogue[ident].why_not_for_rancher(plan.rancher_version)
                if reason:
                    return f"not on target rancher: {reason}"
            if not uses_target:
                return f"not on target rancher: {ON_OWN_CLUSTERS}"
        missing = sorted(needs - plan.capabilities)
        if missing:
            return f"target {plan.name} lacks {', '.join(missing)}"
        return ""

    # -- outcomes ---------------------------------------------------------------------------------

    def record(self, report: pytest.TestReport) -> None:
        entry = self.outcomes.get(report.nodeid)
        if entry is None:
            return
        entry.duration += report.duration
        entry.facts.update(
            (str(k), v if isinstance(v, int | float | str) else str(v))
            for k, v in report.user_properties
            if k != "requirement"
        )
        if report.skipped:
            entry.outcome, entry.reason = "skipped", _skip_reason(report)
        elif report.failed:
            entry.outcome = "failed" if report.when == "call" else "error"
            entry.reason = _failure_line(report)
        elif report.when == "call" and entry.outcome == "not run":
            entry.outcome = "passed"

    def deselected_elsewhere(self, config: pytest.Config, items: Iterable[pytest.Item]) -> None:
        """Tests another plugin deselected (real clusters without --with-clusters, a provider)."""
        for item in items:
            entry = self.outcomes.get(item.nodeid)
            if entry is not None and entry.outcome == "not run":
                entry.outcome = "deselected"
                if item.get_closest_marker("cluster") and not config.getoption("with_clusters"):
                    entry.reason = "needs real clusters: run with --with-clusters"
                else:
                    entry.reason = "deselected by another plugin or option"

    def document(self) -> dict[str, Any]:
        return {
            "version": RESULTS_VERSION,
            "started": self.started,
            "finished": _now(),
            "environment": {
                "python": platform.python_version(),
                "pytest": pytest.__version__,
                "platform": platform.platform(),
                **self.environment,
            },
            "target": {
                "name": self.plan.name,
                "rancher_version": self.plan.rancher_version,
                "capabilities": sorted(self.plan.capabilities),
                "unavailable": self.plan.unavailable,
            },
            "catalogue": str(self.catalogue.source),
            "tests": [
                {
                    "nodeid": o.nodeid,
                    "requirements": list(o.requirements),
                    "outcome": o.outcome,
                    "reason": o.reason,
                    "duration": round(o.duration, 6),
                    **({"facts": o.facts} if o.facts else {}),
                }
                for o in self.outcomes.values()
            ],
        }

    def write(self) -> None:
        if self.results_path is None:
            return
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        self.results_path.write_text(json.dumps(self.document(), indent=2) + "\n", encoding="utf-8")

    # -- pytest hooks -----------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        self.link(config, items)
        self.select(config, items)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        config = items[0].config if items else None
        if config is not None:
            self.deselected_elsewhere(config, items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record(report)

    def pytest_sessionfinish(self) -> None:
        self.write()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        line = terminalreporter.write_line
        version = f" (Rancher {self.plan.rancher_version})" if self.plan.rancher_version else ""
        line(f"corral target: {self.plan.name}{version}")
        for reason, count in sorted(self.summary.items()):
            line(f"{count} {'test' if count == 1 else 'tests'} deselected: {reason}")
        decisions = sum(int(o.facts.get("rbac_decisions", 0)) for o in self.outcomes.values())
        if decisions:
            line(f"RBAC decisions checked against Kubernetes' own: {decisions}")
        if self.results_path is not None:
            line(f"conformance results: {self.results_path}")


def _allure_marks(item: pytest.Item, catalogue: Catalogue, ident: str) -> None:
    requirement = catalogue[ident]
    for label_type, value in (
        ("epic", requirement.part),
        ("feature", requirement.feature),
        ("story", f"{ident} {requirement.title}"),
        ("requirement", ident),
    ):
        item.add_marker(pytest.mark.allure_label(value, label_type=label_type))
    item.add_marker(pytest.mark.allure_link(LINK_PATTERN.format(id=ident), link_type="tms", name=ident))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def _failure_line(report: pytest.TestReport) -> str:
    """The first ``E`` line of a failure (or its last line), redacted and cut to 300 characters."""
    lines = report.longreprtext.strip().splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    chosen = errors[0] if errors else (lines[-1].strip() if lines else "")
    return redact_text(chosen)[:300]


__all__ = ["CATALOGUE", "MARKER", "NEEDS", "Linker", "Outcome", "TargetPlan"]

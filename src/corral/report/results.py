"""What a conformance run left behind, read back: test outcomes per requirement, and traces in summary.

The results file is written by the conformance suites (``--corral-results``): one entry per linked
test with its outcome, reason and requirements. A requirement's status follows from its tests as a
Kubernetes conformance submission reads its list: failed if any test failed or errored, else passed
if any passed, else skipped or deselected (with their reasons), and "not covered" with no test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from corral.errors import ConfigError
from corral.report.catalogue import Catalogue, Requirement

logger = logging.getLogger(__name__)

STATUSES: Final = ("passed", "failed", "skipped", "deselected", "not covered")
"""A requirement's possible statuses, in the report's order."""
OUTCOMES: Final = frozenset({"passed", "failed", "error", "skipped", "deselected", "not run"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TestOutcome:
    nodeid: str
    requirements: tuple[str, ...]
    outcome: str
    reason: str
    duration: float
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What the test recorded: counts (``rbac_decisions``) and texts (a minimal failing example)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Results:
    """A results file: when and where the run was, on which target, and every test's outcome."""

    started: str
    finished: str
    environment: Mapping[str, str]
    target: Mapping[str, Any]
    tests: tuple[TestOutcome, ...]

    @classmethod
    def empty(cls) -> Results:
        return cls(started="", finished="", environment={}, target={}, tests=())

    @classmethod
    def load(cls, path: str | Path) -> Results:
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the conformance results: {e.strerror}") from e
        except ValueError as e:
            raise ConfigError(f"{path}: not JSON: {e}") from e
        if not isinstance(document, dict) or not isinstance(document.get("tests"), list):
            raise ConfigError(f"{path}: not a conformance results file (no list of tests)")
        tests = []
        for index, entry in enumerate(document["tests"]):
            outcome = entry.get("outcome") if isinstance(entry, dict) else None
            if outcome not in OUTCOMES:
                raise ConfigError(f"{path}: tests/{index}: unknown outcome {outcome!r}")
            tests.append(
                TestOutcome(
                    nodeid=str(entry["nodeid"]),
                    requirements=tuple(str(r) for r in entry.get("requirements", ())),
                    outcome=str(outcome),
                    reason=str(entry.get("reason", "")),
                    duration=float(entry.get("duration", 0.0)),
                    facts=_facts(path, index, entry.get("facts")),
                )
            )
        return cls(
            started=str(document.get("started", "")),
            finished=str(document.get("finished", "")),
            environment={str(k): str(v) for k, v in (document.get("environment") or {}).items()},
            target=dict(document.get("target") or {}),
            tests=tuple(tests),
        )


def _facts(path: Path, index: int, facts: Any) -> dict[str, int | float | str]:
    if facts is None:
        return {}
    if not isinstance(facts, dict) or not all(
        isinstance(v, int | float | str) and not isinstance(v, bool) for v in facts.values()
    ):
        raise ConfigError(f"{path}: tests/{index}: facts must map names to numbers or texts")
    return {str(k): v for k, v in facts.items()}


def fact_totals(tests: Iterable[TestOutcome]) -> dict[str, int | float]:
    """Each numeric fact summed over the tests (``rbac_decisions``: the decisions checked in the run)."""
    totals: dict[str, int | float] = {}
    for test in tests:
        for key, value in test.facts.items():
            if isinstance(value, int | float):
                totals[key] = totals.get(key, 0) + value
    return totals


@dataclass(frozen=True, slots=True, kw_only=True)
class RequirementStatus:
    requirement: Requirement
    status: str
    tests: tuple[TestOutcome, ...]

    @property
    def reasons(self) -> list[str]:
        """Why it did not pass: each test's outcome and reason (nothing for a requirement that passed)."""
        if self.status == "passed":
            return []
        if not self.tests:
            return ["no test checks it"]
        return [
            f"{t.outcome}: {t.reason}" if t.reason else t.outcome for t in self.tests if t.outcome != "passed"
        ]


def requirement_statuses(catalogue: Catalogue, tests: Iterable[TestOutcome]) -> list[RequirementStatus]:
    """Every requirement of the catalogue, in its order, with the status its tests give it."""
    by_requirement: dict[str, list[TestOutcome]] = {}
    for test in tests:
        for ident in test.requirements:
            by_requirement.setdefault(ident, []).append(test)
    return [
        RequirementStatus(
            requirement=item,
            status=_status([t.outcome for t in by_requirement.get(item.id, [])]),
            tests=tuple(by_requirement.get(item.id, [])),
        )
        for item in catalogue
    ]


def _status(outcomes: list[str]) -> str:
    if not outcomes:
        return "not covered"
    if any(o in {"failed", "error"} for o in outcomes):
        return "failed"
    if "passed" in outcomes:
        return "passed"
    if "skipped" in outcomes:
        return "skipped"
    return "deselected"

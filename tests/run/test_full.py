"""`corral run` when its steps fail: the report is still written and says which step failed and why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from corral.bundled import scenario_path
from corral.run.full import FullRunSettings, full_run, summary_lines

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def failing_python() -> str:
    """An interpreter that fails whatever it is asked: every child step exits 1."""
    path = shutil.which("false")
    assert path is not None
    return path


def test_a_run_whose_steps_fail_still_writes_a_report_that_says_so(
    tmp_path: Path, failing_python: str
) -> None:
    lines: list[str] = []
    summary = full_run(
        FullRunSettings(
            scenario=scenario_path(), run_dir=tmp_path / "run", checkout=ROOT, python=failing_python
        ),
        progress=lines.append,
    )
    assert not summary.ok
    steps = {step.name: step for step in summary.steps}
    assert steps["up"].status == "failed"
    assert steps["up"].detail.startswith("corral up exited 1")
    # Without a topology the steps that need one do not start, and say why.
    assert steps["conformance"].status == steps["load"].status == "skipped"
    assert steps["conformance"].detail == "no topology.json: an earlier step failed"
    assert steps["report"].status == "passed"
    assert summary.report is not None
    page = summary.report.html.read_text()
    assert "step 1 up" in page
    assert "failed in" in page
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["ok"] is False
    assert [s["name"] for s in recorded["steps"]][:3] == ["up", "conformance", "load"]
    assert "[1] up: failed" in "\n".join(lines)
    printed = summary_lines(summary)
    assert printed[0].startswith(
        f"corral run of smoke: {sum(s.status == 'passed' for s in summary.steps)} of"
    )
    assert any(line.startswith("report: ") for line in printed)


def test_without_the_suites_the_conformance_step_is_skipped_with_the_reason(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "topology.json").write_text("{}")
    summary = full_run(
        FullRunSettings(
            scenario=scenario_path(), run_dir=run, checkout=tmp_path, python=shutil.which("false") or "false"
        ),
        progress=lambda _: None,
    )
    steps = {step.name: step for step in summary.steps}
    assert steps["conformance"].status == "skipped"
    assert "the conformance suites are not here" in steps["conformance"].detail
    assert summary.report is not None
    assert summary.report.total == 0

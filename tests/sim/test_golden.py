"""Golden summaries: the small scenarios at fixed seeds summarise exactly as recorded.

A change to the model that moves any number shows up here as a readable diff. When the change is
intended, regenerate with ``CORRAL_UPDATE_GOLDEN=1 pytest tests/sim/test_golden.py`` and review
the diff of `tests/sim/golden/` like code.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from corral.model import Scenario
from corral.sim.run import run_scenario

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
GOLDEN = Path(__file__).parent / "golden"
CASES = [
    ("smoke", 1),
    ("smoke", 2),
    ("alice-au", 1),
    ("agent-loss-rke1", 1),
    ("agent-loss-rke2", 1),
    ("server-outage", 1),
    ("link-partition", 1),
    ("agent-loss-single", 1),
    ("agent-crash-rke1", 1),
    ("node-crash", 1),
    ("server-crash", 1),
    ("server-rolling-restart", 1),
    ("api-overload", 1),
    ("token-revocation", 1),
]


def _render(summary: dict[str, object]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize(("name", "seed"), CASES, ids=[f"{n}-seed{s}" for n, s in CASES])
def test_summary_matches_the_golden_file(name: str, seed: int) -> None:
    result = run_scenario(Scenario.load(SCENARIOS / f"{name}.yaml"), seed=seed)
    actual = _render(result.summary)
    golden = GOLDEN / f"{name}-seed{seed}.json"
    if os.environ.get("CORRAL_UPDATE_GOLDEN") == "1":
        golden.write_text(actual, encoding="utf-8")
    if not golden.exists():
        pytest.fail(f"{golden.name} is missing; create it with CORRAL_UPDATE_GOLDEN=1 and review it")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"golden/{golden.name}",
                tofile="this run",
            )
        )
        pytest.fail(f"summary of {name} (seed {seed}) differs from its golden file:\n{diff}", pytrace=False)

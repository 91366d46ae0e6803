"""The conformance report from hand-made results and traces: statuses and reasons per requirement,
latency per path, failovers, simulated against measured, the trace checks, and both formats; then the
HTML as headless Chromium renders it, with its figures decoded."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from corral.bundled import scenario_path
from corral.errors import ConfigError
from corral.model import (
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    Scenario,
    TunnelClosed,
    TunnelOpened,
)
from corral.model.trace import write_trace
from corral.report.browser import dump_dom, ensure_chromium
from corral.report.build import build_report
from corral.report.catalogue import Catalogue
from corral.report.results import Results, requirement_statuses

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "conformance" / "requirements.yaml"

RESULTS: dict[str, Any] = {
    "version": 1,
    "started": "2026-08-30T10:00:00+00:00",
    "finished": "2026-08-30T10:05:00+00:00",
    "environment": {"python": "3.11.7", "scenario": "smoke"},
    "target": {"name": "reference", "rancher_version": None, "capabilities": ["corral", "write"]},
    "tests": [
        dict(zip(("nodeid", "requirements", "outcome", "reason", "duration"), row, strict=True))
        for row in (
            ("c/t.py::test_ok", ["PROXY-001", "PROXY-004"], "passed", "", 1.5),
            ("c/t.py::test_bad", ["PROXY-004"], "failed", "AssertionError: u-x != alice", 0.5),
            ("c/t.py::test_later", ["TOK-007"], "skipped", "no disable yet", 0),
            ("c/t.py::test_rke1", ["NODE-002"], "deselected", "target reference lacks node-agents", 0),
            ("c/t.py::test_broken", ["ACE-009"], "error", "fixture failed", 0.1),
        )
    ],
}


def write_results(folder: Path) -> Path:
    path = folder / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


def trace(folder: Path, name: str, scale: float) -> Path:
    """A small trace: requests on the three paths, an agent killed and failed over, sessions."""
    events: list[Any] = [
        TunnelOpened(t=0.5, cluster="c-us", agent="cluster-agent"),
        TunnelOpened(t=0.6, cluster="c-au", agent="cluster-agent"),
        TunnelOpened(t=0.7, cluster="c-au", agent="node-agent/c-au-cp"),
    ]
    for i in range(60):
        for path, base in (("direct", 0.002), ("proxy", 0.006), ("ace", 0.004)):
            events.append(
                RequestCompleted(
                    t=1 + i, path=path, cluster="c-us", user="bob", verb="get", status=200,
                    latency_seconds=scale * base * (1 + (i % 7) / 10),
                )
            )  # fmt: skip
    events += [
        FaultInjected(t=30, fault="kill-cluster-agent", target="c-au"),
        TunnelClosed(t=30, cluster="c-au", agent="cluster-agent", reason="killed"),
        FailoverCompleted(
            t=30.4,
            cluster="c-au",
            from_agent="cluster-agent",
            to_agent="node-agent/c-au-cp",
            duration_seconds=0.4,
        ),
        FaultInjected(t=45, fault="kill-cluster-agent", target="c-au", lifted=True),
        TunnelOpened(t=46, cluster="c-au", agent="cluster-agent"),
    ]
    path = folder / f"{name}.jsonl"
    write_trace(path, sorted(events, key=lambda e: e.t))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("report")
    return build_report(
        catalogue=Catalogue.load(CATALOGUE),
        results=Results.load(write_results(folder)),
        out=folder / "out",
        traces={"measured": trace(folder, "measured", 1.0), "simulated": trace(folder, "simulated", 1.1)},
        scenario=Scenario.load(scenario_path()),
    )


def test_a_requirement_takes_the_worst_of_its_tests() -> None:
    catalogue = Catalogue.load(CATALOGUE)
    results = Results.load(write_results_to_tmp())
    statuses = {s.requirement.id: s for s in requirement_statuses(catalogue, results.tests)}
    assert statuses["PROXY-001"].status == "passed"
    assert statuses["PROXY-004"].status == "failed"
    assert statuses["PROXY-004"].reasons == ["failed: AssertionError: u-x != alice"]
    assert statuses["TOK-007"].status == "skipped"
    assert statuses["NODE-002"].status == "deselected"
    assert statuses["NODE-002"].reasons == ["deselected: target reference lacks node-agents"]
    assert statuses["ACE-009"].status == "failed"
    assert statuses["KCFG-001"].status == "not covered"
    assert statuses["KCFG-001"].reasons == ["no test checks it"]


def write_results_to_tmp() -> Path:
    import tempfile

    return write_results(Path(tempfile.mkdtemp()))


def test_the_summary_counts_every_requirement(built: Any) -> None:
    summary = json.loads(built.summary.read_text())
    total = len(Catalogue.load(CATALOGUE))
    assert summary["requirements"] == total == built.total
    assert summary["covered"] == built.covered == 5
    assert summary["statuses"] == {
        "passed": 1,
        "failed": 2,
        "skipped": 1,
        "deselected": 1,
        "not covered": total - 5,
    }
    assert summary["paths"]["measured"]["proxy"]["requests"] == 60
    assert set(summary["checks"]) == {"measured", "simulated"}


def test_the_markdown_lists_every_requirement_and_the_comparison(built: Any) -> None:
    text = built.markdown.read_text()
    rows = re.findall(r"^\| ([A-Z]+-\d{3}) \|", text, re.M)
    assert rows == [r.id for r in Catalogue.load(CATALOGUE)]
    assert "| PROXY-004 | MUST |" in text
    assert "&lt;id&gt;" in text  # requirement text is not raw HTML
    comparison = text.split("## Simulated against measured")[1].split("##")[0]
    assert "| proxy | p50 |" in comparison
    assert "| 1.10 |" in comparison  # the simulated trace is the measured one slowed by 10 %
    assert "| measured | 30.4 | c-au | cluster-agent | node-agent/c-au-cp | 0.40 |" in text
    assert "![Latency per access path](figures/latency.png)" in text
    assert all(path.is_file() and path.stat().st_size > 1000 for path in built.figures)


def test_a_bad_results_file_is_refused_precisely(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"tests": [{"nodeid": "x", "outcome": "green"}]}))
    with pytest.raises(ConfigError, match=r"tests/0: unknown outcome 'green'"):
        Results.load(path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="not a conformance results file"):
        Results.load(path)


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.images: list[dict[str, str | None]] = []
        self.anchors: list[str] = []
        self.rows: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.body = found
        elif tag == "img":
            self.images.append(found)
        elif tag == "a" and found.get("id"):
            self.anchors.append(str(found["id"]))
        elif tag == "tr" and found.get("class"):
            self.rows.append(str(found["class"]))


def test_chromium_renders_the_report_with_its_figures(built: Any) -> None:
    ensure_chromium()
    dom = _Dom()
    dom.feed(dump_dom(built.html))
    assert dom.body.get("data-rendered") == "yes"  # the page loaded and its script ran
    assert dom.anchors == [r.id for r in Catalogue.load(CATALOGUE)]
    assert dom.rows.count("passed") >= 2  # a requirement row and a test row
    assert len(dom.images) == len(built.figures) == 3
    widths = [int(str(img.get("data-natural-width"))) for img in dom.images]
    assert all(width > 300 for width in widths), widths  # each PNG was decoded, not a broken image


def test_facts_the_tests_recorded_are_summed_and_shown(tmp_path: Path) -> None:
    document = json.loads(json.dumps(RESULTS))
    document["tests"][0]["facts"] = {"rbac_decisions": 600, "rbac_worlds": 40}
    document["tests"][1]["facts"] = {
        "rbac_decisions": 12,
        "rbac_minimal_failing_world": "cluster c-us\nbinding: user0 is read-only of project p0",
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    built = build_report(
        catalogue=Catalogue.load(CATALOGUE), results=Results.load(path), out=tmp_path / "out"
    )
    assert json.loads(built.summary.read_text())["facts"] == {"rbac_decisions": 612, "rbac_worlds": 40}
    text = built.markdown.read_text()
    assert "RBAC decisions checked against Kubernetes' own answer: **612**." in text
    assert (
        "| `c/t.py::test_bad` | rbac_minimal_failing_world | cluster c-us; binding: user0 is read-only"
        in text
    )
    page = built.html.read_text()
    assert "<pre>cluster c-us\nbinding: user0 is read-only of project p0</pre>" in page


@pytest.mark.parametrize("facts", [["a"], {"x": [1]}, {"x": True}])
def test_malformed_facts_are_refused_precisely(tmp_path: Path, facts: Any) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"tests": [{"nodeid": "x", "outcome": "passed", "facts": facts}]}))
    with pytest.raises(ConfigError, match=r"tests/0: facts must map names to numbers or texts"):
        Results.load(path)

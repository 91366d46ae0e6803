"""The standalone conformance report: one HTML file (figures inlined) and the same in Markdown.

It lists the environment and versions, a table of every requirement with its status and the reasons
(as a Kubernetes conformance submission lists its tests), every test with its outcome, latency per
access path (direct, proxy, ACE) from the run's trace, the failover timeline, the trace checks, and
measured against simulated figures when both traces exist. Built from files only, so a failed or
partial run still gets a report that says what failed and what did not run.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import platform
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from corral import __version__
from corral.checks import check_all
from corral.model import Event, Scenario, Summariser
from corral.model.trace import read_trace
from corral.report.catalogue import PARTS, Catalogue
from corral.report.figures import PATHS, latency_figure, timeline_figure
from corral.report.redact import redact_text
from corral.report.results import STATUSES, RequirementStatus, Results, fact_totals, requirement_statuses

logger = logging.getLogger(__name__)

HTML_FILE = "index.html"
MARKDOWN_FILE = "conformance.md"
SUMMARY_FILE = "summary.json"
FIGURES = "figures"


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One trace in summary: measured (the run's own) or simulated (the model's of the same scenario)."""

    name: str
    summariser: Summariser
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    html: Path
    markdown: Path
    summary: Path
    figures: tuple[Path, ...]
    counts: Mapping[str, int]
    covered: int
    total: int


def build_report(
    *,
    catalogue: Catalogue,
    results: Results,
    out: Path,
    traces: Mapping[str, Path] | None = None,
    scenario: Scenario | None = None,
    title: str = "corral conformance report",
) -> Report:
    """Write ``index.html``, ``conformance.md``, ``summary.json`` and ``figures/`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    figures_dir = out / FIGURES
    figures_dir.mkdir(exist_ok=True)
    statuses = requirement_statuses(catalogue, results.tests)
    counts = Counter(s.status for s in statuses)
    covered = sum(1 for s in statuses if s.tests)
    runs = [_run(name, path) for name, path in (traces or {}).items()]
    figures: list[tuple[str, Path]] = []
    if runs:
        latency = latency_figure({r.name: r.summariser for r in runs}, figures_dir / "latency.png")
        if latency:
            figures.append(("Latency per access path", latency))
        for run in runs:
            timeline = timeline_figure(
                run.summariser,
                figures_dir / f"timeline-{run.name}.png",
                title=f"Tunnel sessions and failovers ({run.name})",
            )
            if timeline:
                figures.append((f"Failover timeline ({run.name})", timeline))
    checks = {run.name: [str(v) for v in check_all(scenario, run.events)] for run in runs} if scenario else {}
    context = _Context(
        title=title,
        catalogue=catalogue,
        results=results,
        statuses=statuses,
        counts=counts,
        covered=covered,
        runs=runs,
        figures=figures,
        checks=checks,
        scenario=scenario.name if scenario else "",
    )
    html_path = out / HTML_FILE
    html_path.write_text(_html(context), encoding="utf-8")
    markdown_path = out / MARKDOWN_FILE
    markdown_path.write_text(_markdown(context, out), encoding="utf-8")
    summary_path = out / SUMMARY_FILE
    summary = {
        "requirements": len(catalogue),
        "covered": covered,
        "statuses": {status: counts.get(status, 0) for status in STATUSES},
        "tests": dict(Counter(t.outcome for t in results.tests)),
        "paths": {
            r.name: {p: r.summariser.path_summary(p) for p in sorted(r.summariser.totals)} for r in runs
        },
        "checks": checks,
        "facts": fact_totals(results.tests),
    }
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return Report(
        html=html_path,
        markdown=markdown_path,
        summary=summary_path,
        figures=tuple(path for _, path in figures),
        counts=dict(counts),
        covered=covered,
        total=len(catalogue),
    )


def _run(name: str, path: Path) -> Run:
    events = tuple(read_trace(path))
    summariser = Summariser()
    for event in events:
        summariser.add(event)
    return Run(name=name, summariser=summariser, events=events)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Context:
    title: str
    catalogue: Catalogue
    results: Results
    statuses: list[RequirementStatus]
    counts: Counter[str]
    covered: int
    runs: list[Run]
    figures: list[tuple[str, Path]]
    checks: dict[str, list[str]]
    scenario: str

    def environment(self) -> list[tuple[str, str]]:
        rows = [
            ("corral", __version__),
            ("report built on", platform.platform()),
            ("target", str(self.results.target.get("name", "(no results)"))),
            (
                "Rancher version",
                str(self.results.target.get("rancher_version") or "corral (current Rancher behaviour)"),
            ),
            ("target capabilities", ", ".join(self.results.target.get("capabilities", [])) or "-"),
            ("run started", self.results.started or "-"),
            ("run finished", self.results.finished or "-"),
        ]
        if self.results.target.get("unavailable"):
            rows.append(("target unavailable", str(self.results.target["unavailable"])))
        if self.scenario:
            rows.append(("scenario", self.scenario))
        shown = {k for k, _ in rows}
        rows += [(k, v) for k, v in sorted(self.results.environment.items()) if k not in shown]
        return [(k, redact_text(v)) for k, v in rows]

    def latency_rows(self) -> list[list[str]]:
        rows = []
        for run in self.runs:
            for path in [p for p in PATHS if p in run.summariser.totals] + sorted(
                set(run.summariser.totals) - set(PATHS)
            ):
                entry = run.summariser.path_summary(path)
                latency = entry.get("latency_seconds", {})
                rows.append(
                    [
                        run.name,
                        path,
                        str(entry["requests"]),
                        f"{entry['availability']:.4f}",
                        *(_ms(latency.get(q)) for q in ("p50", "p95", "p99")),
                    ]
                )
        return rows

    def comparison_rows(self) -> list[list[str]]:
        """Measured against simulated p50 and p95 per path, with their ratio (only when both ran)."""
        found = {r.name: r.summariser for r in self.runs}
        if not {"measured", "simulated"} <= set(found):
            return []
        rows = []
        for path in PATHS:
            if path not in found["measured"].totals or path not in found["simulated"].totals:
                continue
            m = found["measured"].path_summary(path).get("latency_seconds", {})
            s = found["simulated"].path_summary(path).get("latency_seconds", {})
            for q in ("p50", "p95"):
                if q in m and q in s:
                    ratio = f"{s[q] / m[q]:.2f}" if m[q] else "-"
                    rows.append([path, q, _ms(m[q]), _ms(s[q]), ratio])
        return rows

    def fact_rows(self) -> list[tuple[str, str, str]]:
        """(test, fact, value) for every fact a test recorded, texts redacted."""
        return [
            (t.nodeid, key, redact_text(str(value)))
            for t in self.results.tests
            for key, value in t.facts.items()
        ]

    def failover_rows(self) -> list[list[str]]:
        return [
            [run.name, f"{f.t:.1f}", f.cluster, f.from_agent, f.to_agent, f"{f.duration_seconds:.2f}"]
            for run in self.runs
            for f in run.summariser.failovers
        ]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


# -- HTML ---------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:0.5em 0 1.5em;width:100%}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top;font-size:0.9em}
td{overflow-wrap:anywhere}
th{background:#f3f3f3} code{font-size:0.9em}
.passed{background:#e3f6e3}.failed{background:#fbe0e0}.skipped{background:#fff4d6}
.deselected{background:#eef0f5}.not-covered{background:#f7f7f7;color:#777}
.badge{display:inline-block;padding:0.1em 0.6em;margin-right:0.4em;border-radius:1em;border:1px solid #bbb}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #ddd}
"""
_SCRIPT = """
window.addEventListener('load', function () {
  document.querySelectorAll('img').forEach(function (img) {
    img.setAttribute('data-natural-width', String(img.naturalWidth));
  });
  document.body.setAttribute('data-rendered', 'yes');
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(
    head: Iterable[str], rows: Iterable[Iterable[str]], *, row_class: Iterable[str] | None = None
) -> str:
    classes = list(row_class) if row_class is not None else None
    lines = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for index, row in enumerate(rows):
        attr = f' class="{_e(classes[index])}"' if classes else ""
        lines.append(f"<tr{attr}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _ran(results: Results) -> int:
    return sum(1 for t in results.tests if t.outcome not in {"deselected", "not run"})


def _anchor(ident: str) -> str:
    return f'<a id="{_e(ident)}" href="#{_e(ident)}">{_e(ident)}</a>'


def _html(c: _Context) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(c.title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{_e(c.title)}</h1>",
        "<p>"
        + "".join(
            f'<span class="badge {s.replace(" ", "-")}">{_e(s)}: {c.counts.get(s, 0)}</span>'
            for s in STATUSES
        )
        + f"</p><p>Requirements covered by a test: <strong>{c.covered} / {len(c.catalogue)}</strong>; "
        f"tests run: {_ran(c.results)} of {len(c.results.tests)}.</p>",
        "<h2>Environment</h2>",
        _table(["what", "value"], [[_e(k), _e(v)] for k, v in c.environment()]),
        "<h2>Requirements</h2>",
    ]
    for part in PARTS:
        rows = [s for s in c.statuses if s.requirement.part == part]
        if not rows:
            continue
        parts.append(f"<h3>{_e(part)}</h3>")
        parts.append(
            _table(
                ["id", "level", "requirement", "Rancher", "status", "tests and reasons"],
                [
                    [
                        _anchor(s.requirement.id),
                        _e(s.requirement.level),
                        f"<strong>{_e(s.requirement.title)}</strong><br>{_e(s.requirement.text)}"
                        f"<br><small>source: <code>{_e(s.requirement.source)}</code></small>",
                        _e(s.requirement.rancher or "corral only"),
                        _e(s.status),
                        "<br>".join(
                            [_e(f"{t.nodeid}: {t.outcome}") for t in s.tests]
                            + [f"<em>{_e(r)}</em>" for r in s.reasons if r != "passed"]
                        )
                        or "-",
                    ]
                    for s in rows
                ],
                row_class=[s.status.replace(" ", "-") for s in rows],
            )
        )
    parts.append("<h2>Tests</h2>")
    parts.append(
        _table(
            ["test", "outcome", "seconds", "requirements", "reason"],
            [
                [
                    f"<code>{_e(t.nodeid)}</code>",
                    _e(t.outcome),
                    f"{t.duration:.2f}",
                    _e(", ".join(t.requirements)),
                    _e(t.reason),
                ]
                for t in c.results.tests
            ],
            row_class=[
                t.outcome if t.outcome in STATUSES else "failed" if t.outcome == "error" else "not-covered"
                for t in c.results.tests
            ],
        )
    )
    facts = c.fact_rows()
    if facts:
        decisions = fact_totals(c.results.tests).get("rbac_decisions")
        parts.append("<h2>Recorded by the tests</h2>")
        if decisions is not None:
            parts.append(
                f"<p>RBAC decisions checked against Kubernetes' own answer: <strong>{decisions}</strong>.</p>"
            )
        parts.append(
            _table(
                ["test", "what", "value"],
                [
                    [f"<code>{_e(t)}</code>", _e(k), f"<pre>{_e(v)}</pre>" if "\n" in v else _e(v)]
                    for t, k, v in facts
                ],
            )
        )
    parts.append("<h2>Latency per access path</h2>")
    if c.runs:
        parts.append(
            _table(
                ["trace", "path", "requests", "availability", "p50 ms", "p95 ms", "p99 ms"],
                [[_e(x) for x in r] for r in c.latency_rows()],
            )
        )
    else:
        parts.append("<p>No trace was given: nothing to show.</p>")
    comparison = c.comparison_rows()
    if comparison:
        parts.append("<h2>Simulated against measured</h2>")
        parts.append(
            _table(
                ["path", "quantile", "measured ms", "simulated ms", "simulated / measured"],
                [[_e(x) for x in r] for r in comparison],
            )
        )
    failovers = c.failover_rows()
    parts.append("<h2>Failovers</h2>")
    parts.append(
        _table(
            ["trace", "t (s)", "cluster", "from", "to", "seconds"], [[_e(x) for x in r] for r in failovers]
        )
        if failovers
        else "<p>No failover in the traces.</p>"
    )
    if c.checks:
        parts.append("<h2>Trace checks</h2>")
        for name, violations in c.checks.items():
            parts.append(f"<h3>{_e(name)}</h3>")
            parts.append(
                "<ul>" + "".join(f"<li>{_e(v)}</li>" for v in violations) + "</ul>"
                if violations
                else "<p>No violation.</p>"
            )
    if c.figures:
        parts.append("<h2>Figures</h2>")
        for caption, path in c.figures:
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(
                f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- Markdown -----------------------------------------------------------------------------------


def _md_cell(text: object) -> str:
    """A table cell: pipes escaped, and no raw HTML (``<id>`` in a requirement stays text)."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in rows]
    return [*lines, ""]


def _markdown(c: _Context, out: Path) -> str:
    lines = [f"# {c.title}", ""]
    lines.append(" · ".join(f"{s}: {c.counts.get(s, 0)}" for s in STATUSES))
    lines += [
        "",
        f"Requirements covered by a test: **{c.covered} / {len(c.catalogue)}**.",
        "",
        "## Environment",
        "",
    ]
    lines += _md_table(["what", "value"], c.environment())
    lines += ["## Requirements", ""]
    for part in PARTS:
        rows = [s for s in c.statuses if s.requirement.part == part]
        if rows:
            lines += [f"### {part}", ""]
            lines += _md_table(
                ["id", "level", "requirement", "Rancher", "status", "reasons"],
                [
                    [
                        s.requirement.id,
                        s.requirement.level,
                        s.requirement.text,
                        s.requirement.rancher or "corral only",
                        s.status,
                        "; ".join(s.reasons) or "-",
                    ]
                    for s in rows
                ],
            )
    lines += ["## Tests", ""]
    lines += _md_table(
        ["test", "outcome", "seconds", "requirements", "reason"],
        [
            [f"`{t.nodeid}`", t.outcome, f"{t.duration:.2f}", ", ".join(t.requirements), t.reason]
            for t in c.results.tests
        ],
    )
    facts = c.fact_rows()
    if facts:
        lines += ["## Recorded by the tests", ""]
        decisions = fact_totals(c.results.tests).get("rbac_decisions")
        if decisions is not None:
            lines += [f"RBAC decisions checked against Kubernetes' own answer: **{decisions}**.", ""]
        lines += _md_table(
            ["test", "what", "value"], [(f"`{t}`", k, v.replace("\n", "; ")) for t, k, v in facts]
        )
    lines += ["## Latency per access path", ""]
    lines += (
        _md_table(
            ["trace", "path", "requests", "availability", "p50 ms", "p95 ms", "p99 ms"], c.latency_rows()
        )
        if c.runs
        else ["No trace was given.", ""]
    )
    comparison = c.comparison_rows()
    if comparison:
        lines += ["## Simulated against measured", ""]
        lines += _md_table(
            ["path", "quantile", "measured ms", "simulated ms", "simulated / measured"], comparison
        )
    lines += ["## Failovers", ""]
    failovers = c.failover_rows()
    lines += (
        _md_table(["trace", "t (s)", "cluster", "from", "to", "seconds"], failovers)
        if failovers
        else ["No failover in the traces.", ""]
    )
    for name, violations in c.checks.items():
        lines += [f"## Trace checks ({name})", ""]
        lines += [f"* {v}" for v in violations] or ["No violation."]
        lines.append("")
    if c.figures:
        lines += ["## Figures", ""]
        lines += [f"![{caption}]({path.relative_to(out).as_posix()})" for caption, path in c.figures]
        lines.append("")
    return "\n".join(lines)

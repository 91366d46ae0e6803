"""``python -m corral.report``: build the conformance report from a run's results and traces."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from corral.errors import CorralError
from corral.model import Scenario
from corral.report.build import build_report
from corral.report.catalogue import Catalogue
from corral.report.results import Results

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.report", description=__doc__)
    parser.add_argument("--catalogue", type=Path, default=Path("conformance/requirements.yaml"))
    parser.add_argument("--results", type=Path, help="conformance results (pytest --corral-results)")
    parser.add_argument("--trace", type=Path, help="the run's measured trace (trace.jsonl)")
    parser.add_argument("--sim-trace", type=Path, help="the model's trace of the same scenario")
    parser.add_argument("--scenario", type=Path, help="the scenario, for the trace checks")
    parser.add_argument("--out", type=Path, default=Path("reports/conformance"))
    args = parser.parse_args(argv)
    try:
        catalogue = Catalogue.load(args.catalogue)
        results = Results.load(args.results) if args.results and args.results.exists() else Results.empty()
        traces = {
            name: path for name, path in (("measured", args.trace), ("simulated", args.sim_trace)) if path
        }
        scenario = Scenario.load(args.scenario) if args.scenario else None
        report = build_report(
            catalogue=catalogue, results=results, out=args.out, traces=traces, scenario=scenario
        )
    except CorralError as e:
        sys.stderr.write(f"corral report: {e}\n")
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    sys.stdout.write(
        f"conformance report: {report.html}\n  {report.markdown}\n"
        f"  requirements covered {report.covered}/{report.total}; {counts}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

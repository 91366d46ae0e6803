"""Run a scenario to an output folder: trace.jsonl, summary.json, run.json and PNG plots.

`summary.json` holds only the model's results (same scenario, calibration and seed, same file),
which is what the golden tests compare. How the run went on this machine goes to `run.json`: wall
time, and the SimPy events processed (a count of SimPy's internals, not of the model) per second.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corral.model import Calibration, Scenario, Summariser, TraceWriter
from corral.sim.build import Simulation
from corral.sim.recorder import Recorder


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced: the model's summary, and how the run went (not part of the summary)."""

    summary: dict[str, Any]
    wall_seconds: float
    events_processed: int
    """SimPy events the environment processed: depends on SimPy's internals, so run metadata only."""

    @property
    def events_per_second(self) -> float:
        return self.events_processed / self.wall_seconds if self.wall_seconds > 0 else 0.0


def run_scenario(
    scenario: Scenario,
    *,
    seed: int,
    out: Path | None = None,
    calibration: Calibration | None = None,
    progress: bool = False,
    plots: bool = True,
    trace: bool = True,
) -> RunResult:
    """Simulate `scenario` and, when `out` is given, write the run's files there."""
    summariser = Summariser()
    recorder = Recorder(summariser.add)
    writer = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if trace:
            writer = TraceWriter(out / "trace.jsonl")
            recorder.add_sink(writer.write)
    simulation = Simulation(scenario, seed=seed, calibration=calibration, recorder=recorder)
    started = time.perf_counter()
    try:
        if progress:
            with tqdm(total=round(simulation.end_seconds), unit="sim-s", desc=scenario.name) as bar:
                simulation.run(progress=lambda now: bar.update(round(now) - bar.n))
        else:
            simulation.run()
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - started
    summary = summariser.summary(
        scenario=scenario.name,
        seed=seed,
        simulated_seconds=simulation.end_seconds,
        trace_events=recorder.count,
    )
    result = RunResult(summary=summary, wall_seconds=wall, events_processed=simulation.env.processed)
    if out is not None:
        (out / "summary.json").write_text(
            json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        run_info = {
            "scenario": scenario.name,
            "seed": seed,
            "calibration": simulation.calibration.source,
            "wall_seconds": round(wall, 3),
            "events_processed": simulation.env.processed,
            "events_per_second": round(result.events_per_second),
        }
        (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
        if plots:
            from corral.sim.plots import write_plots

            write_plots(summariser, out, title=scenario.name)
    return result

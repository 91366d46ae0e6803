"""Run a scenario to an output folder: the trace, summary.json, run.json and PNG plots; or several seeds.

`summary.json` holds only the model's results (same scenario, calibration and seed, same file),
which is what the golden tests compare; it says how many seeds it represents. How the run went on
this machine goes to `run.json`: wall and CPU time, peak memory, the SimPy events processed (a
count of SimPy's internals, not of the model) per second, and how the trace was written.

The trace streams to disk as the model runs: ``trace.jsonl``, or ``trace.jsonl.gz`` compressed,
optionally keeping one request in n (every other event is kept; the summary is always computed
from every event, and states the sampling of the trace next to it). A run of several seeds
writes each seed's files to ``seed-<n>/`` and a summary of the spread (mean, standard deviation,
min and max of each headline figure) at the top.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corral.model import Calibration, Scenario, Summariser, seed_spread
from corral.model.trace import MODEL_BATCH
from corral.sim.build import Simulation
from corral.sim.recorder import ModelTraceWriter, Recorder, RequestSample

TRACE_FILE = "trace.jsonl"


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced: the model's summary, and how the run went (not part of the summary)."""

    summary: dict[str, Any]
    wall_seconds: float
    events_processed: int
    """SimPy events the environment processed: depends on SimPy's internals, so run metadata only."""
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    """Peak resident memory of this process so far (it includes anything run before in it)."""

    @property
    def events_per_second(self) -> float:
        return self.events_processed / self.wall_seconds if self.wall_seconds > 0 else 0.0


def trace_file_name(*, compress: bool) -> str:
    return TRACE_FILE + (".gz" if compress else "")


def run_scenario(
    scenario: Scenario,
    *,
    seed: int,
    out: Path | None = None,
    calibration: Calibration | None = None,
    progress: bool = False,
    plots: bool = True,
    trace: bool = True,
    compress: bool = False,
    sample_requests: int = 1,
) -> RunResult:
    """Simulate `scenario` and, when `out` is given, write the run's files there.

    `compress` writes ``trace.jsonl.gz``; `sample_requests` keeps one `RequestCompleted` in that
    many in the trace file (the summary counts all of them).
    """
    if sample_requests < 1:
        raise ValueError(f"sample_requests must be >= 1, got {sample_requests}")
    summariser = Summariser(cluster_regions={cluster.name: cluster.region for cluster in scenario.clusters})
    recorder = Recorder(summariser)
    writer = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if trace:
            writer = ModelTraceWriter(out / trace_file_name(compress=compress), batch=MODEL_BATCH)
            sink = (
                writer.write if sample_requests == 1 else RequestSample(writer.write, one_in=sample_requests)
            )
            recorder.add_sink(sink)
    simulation = Simulation(scenario, seed=seed, calibration=calibration, recorder=recorder)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        if progress:
            with tqdm(total=round(simulation.end_seconds), unit="sim-s", desc=scenario.name) as bar:
                simulation.run(progress=lambda now: bar.update(round(now) - bar.n))
        else:
            simulation.run()
    finally:
        if writer is not None:
            writer.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    meta: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "seed_count": 1,
        "simulated_seconds": simulation.end_seconds,
        "trace_events": recorder.count,
    }
    if writer is not None and sample_requests > 1:
        meta["trace_sampling"] = {"requests_kept_one_in": sample_requests, "events_written": writer.written}
    summary = summariser.summary(**meta)
    result = RunResult(
        summary=summary,
        wall_seconds=wall,
        events_processed=simulation.env.processed,
        cpu_seconds=cpu,
        peak_rss_mib=_peak_rss_mib(),
    )
    if out is not None:
        _write_json(out / "summary.json", summary)
        run_info: dict[str, Any] = {
            "scenario": scenario.name,
            "seed": seed,
            "calibration": simulation.calibration.source,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "peak_rss_mib": round(result.peak_rss_mib, 1),
            "events_processed": simulation.env.processed,
            "events_per_second": round(result.events_per_second),
            "trace": None,
        }
        if writer is not None:
            run_info["trace"] = {
                "file": trace_file_name(compress=compress),
                "compressed": compress,
                "requests_kept_one_in": sample_requests,
                "events_written": writer.written,
            }
        _write_json(out / "run.json", run_info)
        if plots:
            from corral.sim.plots import write_plots

            write_plots(summariser, out, title=f"{scenario.name}, seed {seed}")
    return result


@dataclass(frozen=True, slots=True)
class SeedsResult:
    """Runs of one scenario at several seeds, and the summary of their spread."""

    runs: dict[int, RunResult]
    summary: dict[str, Any]


def run_seeds(
    scenario: Scenario,
    *,
    seeds: Sequence[int],
    out: Path | None = None,
    on_done: Callable[[int, RunResult], None] | None = None,
    **options: Any,
) -> SeedsResult:
    """Run `scenario` once per seed (each into ``out/seed-<n>/``) and summarise the spread.

    `options` go to `run_scenario`; `on_done(seed, result)` is called after each run.
    """
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    runs: dict[int, RunResult] = {}
    for seed in seeds:
        folder = out / f"seed-{seed}" if out is not None else None
        runs[seed] = run_scenario(scenario, seed=seed, out=folder, **options)
        if on_done is not None:
            on_done(seed, runs[seed])
    summaries = [run.summary for run in runs.values()]
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seeds": list(seeds),
        "seed_count": len(seeds),
        "spread": seed_spread(summaries),
        "per_seed": {str(seed): _headline(run.summary) for seed, run in runs.items()},
    }
    if out is not None:
        _write_json(out / "summary.json", summary)
        _write_json(
            out / "run.json",
            {
                "scenario": scenario.name,
                "seeds": list(seeds),
                "wall_seconds": round(sum(run.wall_seconds for run in runs.values()), 3),
                "cpu_seconds": round(sum(run.cpu_seconds for run in runs.values()), 3),
                "peak_rss_mib": round(max(run.peak_rss_mib for run in runs.values()), 1),
            },
        )
    return SeedsResult(runs=runs, summary=summary)


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    """One seed's figures in a multi-seed summary: per path requests, availability and p95."""
    paths = {
        name: {
            "requests": entry["requests"],
            "availability": entry["availability"],
            "p95": entry.get("latency_seconds", {}).get("p95"),
        }
        for name, entry in summary["paths"].items()
    }
    return {"paths": paths, "failovers": summary["failovers"]["count"]}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

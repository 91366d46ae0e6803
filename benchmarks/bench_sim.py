"""Benchmark of the SimPy model: simulated events per second, and the wall time of the fleets.

Speeds are reported next to a baseline measured in the same run (bare SimPy processes doing
nothing but timeouts), so a slow or busy machine shows as a slow baseline, not as a regression;
the ratio is what to compare between runs. The fleets (fleet-2000, fleet-10000) run as
``corral sim run`` in a process of their own, with the trace streamed as a user would write it
(fleet-10000: gzip-compressed, one request in ten), so their peak memory is their own; their CPU
time is reported next to the wall time, since on a shared machine the wall time says as much
about the neighbours, and so is the host's load average. SimPy's event count depends on how the
model is written (a shortcut that saves events makes each remaining one dearer), so the fleets
also report requests simulated per second. Results go to ``reports/bench/sim.json`` and a
Markdown table on stdout.

    python benchmarks/bench_sim.py [--skip-fleet] [--profile [SCENARIO]]

``--profile`` runs a fleet (default fleet-2000) under cProfile and writes the top functions, and
the share of time per part of the model, to ``reports/bench/sim-profile.txt``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import simpy

from corral.model import Scenario
from corral.sim.run import run_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "fixtures" / "scenarios"
OUT = ROOT / "reports" / "bench"
FLEET_TARGET_SECONDS = 60.0
FLEETS: dict[str, list[str]] = {
    "fleet-2000": [],
    "fleet-10000": ["--compress", "--sample-requests", "10"],
}
"""Fleet scenarios and how their trace is written."""
BASELINE_PROCESSES = 1_000
BASELINE_EVENTS = 300_000


def simpy_baseline() -> dict[str, float]:
    """Events per second of bare SimPy: processes that only wait."""
    env = simpy.Environment()
    per_process = BASELINE_EVENTS // BASELINE_PROCESSES

    def idle(delay: float) -> Generator[simpy.Event, Any, None]:
        for _ in range(per_process):
            yield env.timeout(delay)

    for index in range(BASELINE_PROCESSES):
        env.process(idle(1.0 + index / BASELINE_PROCESSES))
    started = time.perf_counter()
    env.run()
    wall = time.perf_counter() - started
    return {
        "events": float(BASELINE_EVENTS),
        "wall_seconds": wall,
        "events_per_second": BASELINE_EVENTS / wall,
    }


def bench_scenario(name: str, *, trace_dir: Path | None) -> dict[str, Any]:
    scenario = Scenario.load(SCENARIOS / f"{name}.yaml")
    out = trace_dir / name if trace_dir else None
    result = run_scenario(scenario, seed=1, out=out, plots=False)
    return {
        "events": result.events_processed,
        "trace_events": result.summary["trace_events"],
        "simulated_seconds": result.summary["simulated_seconds"],
        "wall_seconds": round(result.wall_seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "events_per_second": round(result.events_per_second),
    }


def bench_fleet(name: str, *, trace_dir: Path) -> dict[str, Any]:
    """Run a fleet in its own process (its peak RSS is then its own) and read its run.json."""
    out = trace_dir / name
    command = [sys.executable, "-m", "corral.sim", "run", str(SCENARIOS / f"{name}.yaml")]
    command += ["--seed", "1", "--out", str(out), "--no-plots", "--no-progress", *FLEETS[name]]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    run_info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    trace = run_info["trace"]
    requests = sum(entry["requests"] for entry in summary["paths"].values())
    return {
        "events": run_info["events_processed"],
        "trace_events": summary["trace_events"],
        "requests": requests,
        "simulated_seconds": summary["simulated_seconds"],
        "wall_seconds": run_info["wall_seconds"],
        "cpu_seconds": run_info["cpu_seconds"],
        "events_per_second": run_info["events_per_second"],
        "requests_per_second": round(requests / run_info["wall_seconds"]),
        "peak_rss_mib": run_info["peak_rss_mib"],
        "trace": trace | {"bytes": (out / trace["file"]).stat().st_size},
        "target_wall_seconds": FLEET_TARGET_SECONDS,
        "wall_over_target": round(run_info["wall_seconds"] / FLEET_TARGET_SECONDS, 3),
    }


def profile_fleet(path: Path, name: str) -> None:
    scenario = Scenario.load(SCENARIOS / f"{name}.yaml")
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        profiler.runcall(
            run_scenario, scenario, seed=1, out=Path(tmp), plots=False, compress=True, sample_requests=10
        )
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    for (filename, _, _), entry in stats.stats.items():  # type: ignore[attr-defined]
        part = _part_of(filename)
        parts[part] = parts.get(part, 0.0) + entry[2]
    buffer = io.StringIO()
    buffer.write(
        f"{name}: own time per part (cProfile inflates Python-level calls; shares, not seconds, matter):\n"
    )
    for part, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        buffer.write(f"  {part:<28} {100 * seconds / total:5.1f} %\n")
    buffer.write("\n")
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(25)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    print(buffer.getvalue().split("\n\n")[0])


_PARTS = (
    ("/simpy/", "simpy kernel"),
    ("/corral/sim/", "model"),
    ("corral/model/trace", "trace writing (json)"),
    ("corral/model/stats", "summary (running counts)"),
    ("json", "trace writing (json)"),
    ("gzip", "trace compression"),
    ("dataclasses", "trace writing (json)"),
    ("random", "random draws"),
    ("numpy", "summary (numpy)"),
)


def _part_of(filename: str) -> str:
    if filename == "~":
        return "builtins (heap, generator resume)"
    for marker, part in _PARTS:
        if marker in filename:
            return f"model: {Path(filename).stem}" if part == "model" else part
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fleet", action="store_true", help="only the small scenarios")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="fleet-2000",
        default=None,
        choices=sorted(FLEETS),
        help="profile a fleet (default fleet-2000; slow: about 3x)",
    )
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)

    baseline = simpy_baseline()
    results: dict[str, Any] = {
        "load_average_before": [round(load, 2) for load in os.getloadavg()],
        "baseline_simpy": {k: round(v, 3) for k, v in baseline.items()},
        "scenarios": {},
    }
    names = ["alice-au", "agent-loss-rke2", "server-outage"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results["scenarios"][name] = bench_scenario(name, trace_dir=Path(tmp))
        for name in [] if args.skip_fleet else sorted(FLEETS):
            results["scenarios"][name] = bench_fleet(name, trace_dir=Path(tmp))
    for entry in results["scenarios"].values():
        entry["ratio_to_simpy_baseline"] = round(
            entry["events_per_second"] / baseline["events_per_second"], 3
        )
    results["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    (OUT / "sim.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    print("| run | events | wall (s) | CPU (s) | events/s | vs bare SimPy | requests/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| bare SimPy baseline | {BASELINE_EVENTS:,} | {baseline['wall_seconds']:.2f} | | "
        f"{baseline['events_per_second']:,.0f} | 1.000 | | |"
    )
    for name, entry in results["scenarios"].items():
        cpu = f"{entry['cpu_seconds']:.2f}" if "cpu_seconds" in entry else ""
        requests = f"{entry['requests_per_second']:,}" if "requests_per_second" in entry else ""
        print(
            f"| {name} | {entry['events']:,} | {entry['wall_seconds']:.2f} | {cpu} | "
            f"{entry['events_per_second']:,} | {entry['ratio_to_simpy_baseline']:.3f} | {requests} | "
            f"{entry.get('peak_rss_mib', '')} |"
        )
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"\nhost load average (1, 5, 15 min): {before} before, {after} after, on {os.cpu_count()} CPUs")
    if args.profile and not args.skip_fleet:
        profile_fleet(OUT / "sim-profile.txt", args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())

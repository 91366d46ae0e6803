"""Command line of the SimPy model: ``corral sim run|sweep`` (or ``python -m corral.sim run|sweep``).

    corral sim run fixtures/scenarios/alice-au.yaml --seed 1 --out reports/alice-au/sim-1
    corral sim run fixtures/scenarios/smoke.yaml --seeds 10 --out reports/smoke/seeds-1-10
    corral sim run fixtures/scenarios/fleet-10000.yaml --compress --sample-requests 10 --out reports/fleet
    corral sim sweep fixtures/scenarios/alice-au.yaml --grid rtt_ms=50,150,300 --out reports/sweep

A thin layer: it validates its flags and calls `corral.sim.run.run_scenario` /
`corral.sim.sweep.run_sweep`. Importing it loads neither SimPy nor the plotting stack, so
``corral --help`` works without the ``sim`` extra; a command run without it says what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from corral.model import Calibration, ConfigError, Scenario

SIM_EXTRA_MODULES = ("simpy", "numpy", "matplotlib", "tqdm", "dask", "distributed")


def _require_extra() -> None:
    """Fail with one sentence when a package of the ``sim`` extra is not installed."""
    missing = [name for name in SIM_EXTRA_MODULES if not _installed(name)]
    if missing:
        raise click.ClickException(
            "the SimPy model needs the 'sim' extra (pip install 'corral[sim]'); "
            f"missing: {', '.join(missing)}"
        )


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def _load(scenario: Path, calibration: Path | None) -> tuple[Scenario, Calibration]:
    try:
        return Scenario.load(scenario), (Calibration.load(calibration) if calibration else Calibration())
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


_calibration_option = click.option(
    "--calibration",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="service times and protocol constants (default: built-in, as fixtures/calibration/default.yaml)",
)


@click.group("sim")
def main() -> None:
    """corral's SimPy model of Rancher-style multi-cluster management."""


@main.command()
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="random seed (same seed, same trace); with --seeds, the first one",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="run this many seeds (--seed, --seed + 1, ...) into seed-<n>/ and summarise their spread",
)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="output folder")
@_calibration_option
@click.option("--plots/--no-plots", default=True, show_default=True, help="write PNG plots")
@click.option("--trace/--no-trace", default=True, show_default=True, help="write the trace")
@click.option(
    "--compress/--no-compress", default=False, show_default=True, help="gzip the trace (trace.jsonl.gz)"
)
@click.option(
    "--sample-requests",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="keep one request in N in the trace (other events all; the summary counts every request)",
)
@click.option(
    "--progress/--no-progress", default=None, help="progress bar (default: when stderr is a terminal)"
)
def run(
    *,
    scenario: Path,
    seed: int,
    seeds: int,
    out: Path,
    calibration: Path | None,
    plots: bool,
    trace: bool,
    compress: bool,
    sample_requests: int,
    progress: bool | None,
) -> None:
    """Simulate SCENARIO; write the trace, summary.json, run.json and plots to --out."""
    _require_extra()
    from corral.sim.run import RunResult, run_scenario, run_seeds

    loaded, calib = _load(scenario, calibration)
    show = sys.stderr.isatty() if progress is None else progress
    options: dict[str, Any] = {
        "calibration": calib,
        "progress": show,
        "plots": plots,
        "trace": trace,
        "compress": compress,
        "sample_requests": sample_requests,
    }
    if seeds > 1:

        def done(number: int, result: RunResult) -> None:
            click.echo(f"seed {number}: {result.wall_seconds:.2f} s", err=True)

        combined = run_seeds(loaded, seeds=range(seed, seed + seeds), out=out, on_done=done, **options)
        click.echo(
            json.dumps({"seeds": combined.summary["seeds"], "spread": combined.summary["spread"]}, indent=2)
        )
        click.echo(f"{seeds} seeds; files in {out}", err=True)
        return
    result = run_scenario(loaded, seed=seed, out=out, **options)
    paths = {
        name: {k: v for k, v in stats.items() if k != "statuses"}
        for name, stats in result.summary["paths"].items()
    }
    click.echo(json.dumps({"paths": paths, "failovers": result.summary["failovers"]["count"]}, indent=2))
    click.echo(
        f"{result.events_processed} events in {result.wall_seconds:.2f} s "
        f"({result.events_per_second:,.0f} events/s); files in {out}",
        err=True,
    )


@main.command()
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--grid", "grids", multiple=True, required=True, help="NAME=v1,v2,... (repeatable)")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="output folder")
@_calibration_option
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="local processes (default: CPU count)"
)
@click.option(
    "--scheduler", default=None, help="Dask scheduler address (tcp://host:port) instead of local processes"
)
def sweep(
    *,
    scenario: Path,
    grids: tuple[str, ...],
    seed: int,
    out: Path,
    calibration: Path | None,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Run SCENARIO at every point of the grid; write sweep.csv and sweep.png to --out."""
    _require_extra()
    from tqdm import tqdm

    from corral.sim.sweep import parse_grid, points, run_sweep

    loaded, calib = _load(scenario, calibration)
    try:
        grid = parse_grid(grids)
        with tqdm(total=len(points(grid)), unit="run", disable=not sys.stderr.isatty()) as bar:
            rows = run_sweep(
                loaded,
                grid,
                seed=seed,
                out=out,
                calibration=calib,
                workers=workers,
                scheduler=scheduler,
                on_done=lambda n: bar.update(n - bar.n),
            )
    except ConfigError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{len(rows)} runs; {out / 'sweep.csv'}, {out / 'sweep.png'}")

"""`corral load run`: one bounded load run of a scenario on a running topology, gated on its SLOs.

Exit status: 0 when the SLOs are met and nothing was lost, 1 when not, 2 on bad input or a
failure to run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from corral.errors import CorralError
from corral.load.plan import Bounds, read_topology, topology_from_cluster_dir
from corral.load.runner import LoadSettings, run_load
from corral.model import Scenario

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def main() -> None:
    """Load runs with locust over WAN links."""


@main.command("run")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--topology", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="RUN/topology.json."
)
@click.option("--clusters-dir", type=_DIR, help="A `corral cluster up` folder instead (direct path only).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Default reports/<scenario>/load."
)
@click.option("--paths", default="", help="Comma-separated access paths (default: all the topology carries).")
@click.option(
    "--workers", type=int, default=0, show_default=True, help="0: one locust process; N: master + N."
)
@click.option("--users", type=int, default=8, show_default=True, help="Greenlets over all locust processes.")
@click.option(
    "--time-scale", type=float, default=1.0, show_default=True, help="Wall seconds per scenario second."
)
@click.option("--max-seconds", type=float, default=600.0, show_default=True, help="Longest traffic window.")
@click.option("--max-requests", type=int, default=100_000, show_default=True)
@click.option("--request-timeout", type=float, default=10.0, show_default=True, help="Seconds per request.")
@click.option(
    "--retries", type=int, default=2, show_default=True, help="Idempotent retries of a failed write."
)
@click.option(
    "--wan/--no-wan", default=True, show_default=True, help="Route every path over toxiproxy links."
)
@click.option("--jitter-ms", type=int, default=0, show_default=True)
@click.option("--bandwidth-kbps", type=int, default=None, help="Cap each link direction (KB/s).")
@click.option("--fault-dir", type=_DIR, help="Run folder `corral fault` acts on (process faults).")
@click.option("--skip-unsupported-faults", is_flag=True, help="Run without faults nothing here can apply.")
def run(
    *,
    scenario: Path,
    topology: Path | None,
    clusters_dir: Path | None,
    out: Path | None,
    paths: str,
    workers: int,
    users: int,
    time_scale: float,
    max_seconds: float,
    max_requests: int,
    request_timeout: float,
    retries: int,
    wan: bool,
    jitter_ms: int,
    bandwidth_kbps: int | None,
    fault_dir: Path | None,
    skip_unsupported_faults: bool,
) -> None:
    """Drive SCENARIO's workload and faults on a running topology; report into --out."""
    if (topology is None) == (clusters_dir is None):
        raise click.UsageError("give exactly one of --topology and --clusters-dir")
    try:
        loaded = Scenario.load(scenario)
        topo = read_topology(topology) if topology else topology_from_cluster_dir(loaded, clusters_dir)  # type: ignore[arg-type]
        settings = LoadSettings(
            scenario_file=scenario,
            topology=topo,
            out_dir=out or Path("reports") / loaded.name / "load",
            bounds=Bounds(
                max_seconds=max_seconds,
                max_requests=max_requests,
                time_scale=time_scale,
                users=users,
                request_timeout_seconds=request_timeout,
                retries=retries,
            ),
            paths=[p.strip() for p in paths.split(",") if p.strip()] or None,
            wan=wan,
            jitter_ms=jitter_ms,
            bandwidth_kbps=bandwidth_kbps,
            workers=workers,
            fault_dir=fault_dir,
            skip_unsupported_faults=skip_unsupported_faults,
        )
        result = run_load(settings)
    except CorralError as e:
        click.echo(f"corral load: {e}", err=True)
        sys.exit(2)
    click.echo((result.out_dir / "report.md").read_text(encoding="utf-8"), err=True)
    sys.exit(result.exit_code)

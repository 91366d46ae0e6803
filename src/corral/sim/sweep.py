"""Parameter sweeps: one run per point of a grid (RTT x clusters x users ...), a CSV and a plot.

A grid is given as ``NAME=v1,v2,...`` strings. Each point rewrites the scenario (a validated
`Scenario`, so a point is as valid as the file) and runs it; points run in parallel local
processes by default, or on a Dask cluster when a scheduler address is given.

Parameters: ``rtt_ms`` (every link between two different regions), ``rtt_ms.A.B`` (one link),
``clusters`` and ``users`` (scale by cloning the existing ones, round-robin; clones join the
workload entries and faults that name their originals' workload), ``rate_per_second`` (every
workload entry), ``server_region``, ``server_workers`` and ``seed``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from corral.model import ACCESS_PATHS, Calibration, Cluster, ConfigError, Node, Scenario, Server, User

Grid = list[tuple[str, list[str]]]
PARAMETERS = (
    "rtt_ms",
    "rtt_ms.A.B",
    "clusters",
    "users",
    "rate_per_second",
    "server_region",
    "server_workers",
    "seed",
)


def parse_grid(specs: Sequence[str]) -> Grid:
    """``["rtt_ms=50,150", "clusters=10,100"]`` -> ``[("rtt_ms", ["50", "150"]), ...]``."""
    grid: Grid = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not items:
            raise ConfigError(f"--grid {spec!r}: expected NAME=v1,v2,...")
        if name not in PARAMETERS and not (name.startswith("rtt_ms.") and name.count(".") == 2):
            raise ConfigError(f"--grid {spec!r}: unknown parameter {name!r} (known: {', '.join(PARAMETERS)})")
        if any(existing == name for existing, _ in grid):
            raise ConfigError(f"--grid {spec!r}: parameter {name!r} given twice")
        grid.append((name, items))
    return grid


def points(grid: Grid) -> list[dict[str, str]]:
    names = [name for name, _ in grid]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values for _, values in grid))
    ]


def apply_point(scenario: Scenario, point: dict[str, str]) -> tuple[Scenario, int | None]:
    """The scenario rewritten for one grid point, and the seed the point asks for (if any)."""
    seed = None
    for name, value in point.items():
        where = f"--grid {name}={value}"
        if name == "seed":
            seed = _int(value, where, minimum=0)
        elif name == "rtt_ms":
            ms = _float(value, where)
            rtt = {pair: (old if pair[0] == pair[1] else ms) for pair, old in scenario.rtt_ms.items()}
            scenario = dataclasses.replace(scenario, rtt_ms=rtt)
        elif name.startswith("rtt_ms."):
            _, a, b = name.split(".")
            if (a, b) not in scenario.rtt_ms:
                raise ConfigError(f"{where}: no link between {a!r} and {b!r} in {scenario.source}")
            rtt = dict(scenario.rtt_ms)
            rtt[(a, b)] = rtt[(b, a)] = _float(value, where)
            scenario = dataclasses.replace(scenario, rtt_ms=rtt)
        elif name == "clusters":
            scenario = _scale_clusters(scenario, _int(value, where, minimum=1))
        elif name == "users":
            scenario = _scale_users(scenario, _int(value, where, minimum=1))
        elif name == "rate_per_second":
            rate = _float(value, where, positive=True)
            workload = tuple(dataclasses.replace(e, rate_per_second=rate) for e in scenario.workload)
            scenario = dataclasses.replace(scenario, workload=workload)
        elif name == "server_region":
            if value not in scenario.regions:
                raise ConfigError(f"{where}: unknown region (regions: {', '.join(scenario.regions)})")
            scenario = dataclasses.replace(
                scenario, server=dataclasses.replace(scenario.server, region=value)
            )
        elif name == "server_workers":
            server: Server = dataclasses.replace(scenario.server, workers=_int(value, where, minimum=1))
            scenario = dataclasses.replace(scenario, server=server)
    return scenario, seed


def _int(value: str, where: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{where}: must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {number}")
    return number


def _float(value: str, where: str, *, positive: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: must be a number, got {value!r}") from None
    if number < 0 or (positive and number == 0):
        raise ConfigError(f"{where}: must be {'> 0' if positive else '>= 0'}, got {value}")
    return number


def _scale_clusters(scenario: Scenario, count: int) -> Scenario:
    base = scenario.clusters
    clusters = list(base[:count])
    clones: dict[str, list[str]] = {}
    for index in range(len(base), count):
        template = base[index % len(base)]
        suffix = f"-x{index}"
        nodes = tuple(Node(name=node.name + suffix, roles=node.roles) for node in template.nodes)
        clusters.append(
            Cluster(
                name=template.name + suffix,
                region=template.region,
                agent=template.agent,
                nodes=nodes,
                agent_replicas=template.agent_replicas,
                ace_fqdn=template.ace_fqdn,
                ace=template.ace,
            )
        )
        clones.setdefault(template.name, []).append(template.name + suffix)
    kept = {cluster.name for cluster in clusters}
    workload = tuple(
        dataclasses.replace(e, clusters=_grow(e.clusters, clones, kept)) if e.clusters else e
        for e in scenario.workload
    )
    # An entry whose named clusters were all cut away would otherwise mean "every cluster".
    workload = tuple(
        e for e, old in zip(workload, scenario.workload, strict=True) if e.clusters or not old.clusters
    )
    faults = tuple(
        f for f in scenario.faults if f.target.split("/")[0] in kept or f.kind not in _CLUSTER_FAULTS
    )
    return dataclasses.replace(scenario, clusters=tuple(clusters), workload=workload, faults=faults)


_CLUSTER_FAULTS = ("kill-cluster-agent", "kill-node-agent")


def _scale_users(scenario: Scenario, count: int) -> Scenario:
    base = scenario.users
    if not base:
        raise ConfigError(f"--grid users: {scenario.source} has no users to clone")
    users = list(base[:count])
    clones: dict[str, list[str]] = {}
    for index in range(len(base), count):
        template = base[index % len(base)]
        name = f"{template.name}-x{index}"
        users.append(User(name=name, region=template.region, groups=template.groups))
        clones.setdefault(template.name, []).append(name)
    kept = {user.name for user in users}
    workload = tuple(
        dataclasses.replace(e, user_names=_grow(e.user_names, clones, kept)) if e.user_names else e
        for e in scenario.workload
    )
    workload = tuple(e for e in workload if e.select_users(users))
    return dataclasses.replace(scenario, users=tuple(users), workload=workload)


def _grow(names: tuple[str, ...], clones: dict[str, list[str]], kept: set[str]) -> tuple[str, ...]:
    grown = [name for name in names if name in kept]
    for name in names:
        grown += clones.get(name, [])
    return tuple(grown)


# -- running ------------------------------------------------------------------------------------


def run_point(
    scenario: Scenario, point: dict[str, str], seed: int, calibration: Calibration | None
) -> dict[str, Any]:
    """Run one grid point and flatten its summary into a CSV row."""
    from corral.sim.run import run_scenario

    changed, point_seed = apply_point(scenario, point)
    result = run_scenario(changed, seed=seed if point_seed is None else point_seed, calibration=calibration)
    summary = result.summary
    row: dict[str, Any] = dict(point)
    row["seed"] = summary["seed"]
    for path in ACCESS_PATHS:
        stats = summary["paths"].get(path)
        row[f"{path}_requests"] = stats["requests"] if stats else 0
        row[f"{path}_availability"] = stats["availability"] if stats else ""
        latency = stats.get("latency_seconds", {}) if stats else {}
        for quantile in ("p50", "p95", "p99"):
            row[f"{path}_{quantile}_seconds"] = latency.get(quantile, "")
    row["failover_max_seconds"] = summary["failovers"]["max_seconds"] or ""
    row["events_processed"] = result.events_processed
    row["wall_seconds"] = round(result.wall_seconds, 3)
    return row


def run_sweep(
    scenario: Scenario,
    grid: Grid,
    *,
    seed: int,
    out: Path,
    calibration: Calibration | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    on_done: Callable[[int], Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point; write ``sweep.csv`` and ``sweep.png`` into `out`; rows in grid order."""
    todo = points(grid)
    for point in todo:
        apply_point(scenario, point)  # reject a bad value before starting anything
    if scheduler is not None:
        rows = _on_dask(scheduler, scenario, todo, seed, calibration)
    elif (workers or os.cpu_count() or 1) == 1 or len(todo) == 1:
        rows = []
        for point in todo:
            rows.append(run_point(scenario, point, seed, calibration))
            if on_done:
                on_done(len(rows))
    else:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            futures = [pool.submit(run_point, scenario, point, seed, calibration) for point in todo]
            rows = []
            for future in futures:
                rows.append(future.result())
                if on_done:
                    on_done(len(rows))
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, out / "sweep.csv")
    from corral.sim.sweep_plot import plot_sweep

    plot_sweep(rows, [name for name, _ in grid], out / "sweep.png", title=f"{scenario.name} sweep")
    return rows


def _on_dask(
    address: str, scenario: Scenario, todo: list[dict[str, str]], seed: int, calibration: Calibration | None
) -> list[dict[str, Any]]:
    from distributed import Client

    with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        futures = client.map(
            run_point,
            [scenario] * len(todo),
            todo,
            [seed] * len(todo),
            [calibration] * len(todo),
            pure=False,
        )
        rows: list[dict[str, Any]] = client.gather(futures)
    return rows


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

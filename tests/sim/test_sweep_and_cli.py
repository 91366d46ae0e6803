"""Sweeps (local processes, inline, Dask) and the `corral sim` command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.errors import ConfigError
from corral.model import Scenario
from corral.sim.cli import main
from corral.sim.sweep import apply_point, parse_grid, run_sweep

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"


@pytest.fixture
def smoke() -> Scenario:
    return Scenario.load(SCENARIOS / "smoke.yaml")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_a_sweep_writes_one_row_per_grid_point_in_grid_order(smoke: Scenario, tmp_path: Path) -> None:
    grid = parse_grid(["rtt_ms=50,300", "clusters=1,3", "users=1"])
    rows = run_sweep(smoke, grid, seed=1, out=tmp_path, workers=2)
    written = _rows(tmp_path / "sweep.csv")
    assert [(r["rtt_ms"], r["clusters"], r["users"]) for r in written] == [
        ("50", "1", "1"),
        ("50", "3", "1"),
        ("300", "1", "1"),
        ("300", "3", "1"),
    ]
    assert len(rows) == 4
    assert (tmp_path / "sweep.png").stat().st_size > 0
    # alice (au) alone, with the server and c-us in the US: farther away, slower.
    by_point = {(r["rtt_ms"], r["clusters"]): float(r["proxy_p50_seconds"]) for r in written}
    assert by_point[("300", "1")] > by_point[("50", "1")]


def test_a_sweep_runs_inline_with_one_worker_and_matches_the_parallel_run(
    smoke: Scenario, tmp_path: Path
) -> None:
    grid = parse_grid(["rate_per_second=0.5,2"])
    inline = run_sweep(smoke, grid, seed=4, out=tmp_path / "inline", workers=1)
    parallel = run_sweep(smoke, grid, seed=4, out=tmp_path / "parallel", workers=2)
    strip = [{k: v for k, v in row.items() if k != "wall_seconds"} for row in inline]
    assert strip == [{k: v for k, v in row.items() if k != "wall_seconds"} for row in parallel]


def test_a_sweep_runs_on_a_dask_cluster(smoke: Scenario, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        rows = run_sweep(
            smoke, parse_grid(["seed=1,2,3"]), seed=0, out=tmp_path, scheduler=cluster.scheduler_address
        )
    assert [row["seed"] for row in rows] == [1, 2, 3]
    assert len(_rows(tmp_path / "sweep.csv")) == 3


def test_scaling_clusters_and_users_clones_them_into_the_workload(smoke: Scenario) -> None:
    scaled, seed = apply_point(smoke, {"clusters": "5", "users": "4", "rtt_ms": "80"})
    assert seed is None
    assert [c.name for c in scaled.clusters] == ["c-us", "c-au", "c-us-x2", "c-au-x3", "c-us-x4"]
    assert [u.name for u in scaled.users] == ["alice", "bob", "alice-x2", "bob-x3"]
    ace = scaled.workload[1]
    assert ace.clusters == ("c-au", "c-au-x3")
    assert [u.name for u in ace.select_users(scaled.users)] == ["alice", "alice-x2"]
    assert scaled.rtt_seconds("us", "au") == 0.08
    assert scaled.rtt_seconds("us", "us") == smoke.rtt_seconds("us", "us")


def test_cutting_the_fleet_drops_workload_and_faults_of_the_clusters_cut_away(smoke: Scenario) -> None:
    cut, _ = apply_point(smoke, {"clusters": "1"})
    assert [c.name for c in cut.clusters] == ["c-us"]
    assert all("c-au" not in entry.clusters for entry in cut.workload)
    assert [e.path for e in cut.workload] == ["proxy", "proxy", "direct"]  # the ACE entry named only c-au


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["rtt_ms"], "--grid 'rtt_ms': expected NAME=v1,v2,..."),
        (["speed=1"], "--grid 'speed=1': unknown parameter 'speed'"),
        (["users=1", "users=2"], "--grid 'users=2': parameter 'users' given twice"),
    ],
)
def test_a_bad_grid_is_rejected_with_its_text(specs: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_grid(specs)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"clusters": "0"}, "--grid clusters=0: must be >= 1, got 0"),
        ({"rtt_ms": "far"}, "--grid rtt_ms=far: must be a number, got 'far'"),
        ({"rtt_ms.us.eu": "5"}, "--grid rtt_ms.us.eu=5: no link between 'us' and 'eu'"),
        ({"server_region": "mars"}, "--grid server_region=mars: unknown region"),
    ],
)
def test_a_bad_grid_value_is_rejected_before_anything_runs(
    smoke: Scenario, point: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        apply_point(smoke, point)
    assert str(info.value).startswith(message)


def test_the_run_command_writes_trace_summary_and_plots(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", str(SCENARIOS / "agent-loss-rke1.yaml"), "--seed", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "availability.png",
        "clusters.png",
        "failover.png",
        "latency_cdf.png",
        "regions.png",
        "run.json",
        "summary.json",
        "trace.jsonl",
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["seed"], summary["seed_count"]) == (2, 1)
    assert summary["events"]["RequestCompleted"] == summary["paths"]["proxy"]["requests"]
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert len(lines) == summary["trace_events"]
    # SimPy's own bookkeeping is how the run went, not what the model says: run.json only.
    run_info = json.loads((tmp_path / "run.json").read_text())
    assert run_info["events_processed"] > len(lines)
    assert {"wall_seconds", "events_per_second"} <= set(run_info)
    assert not {"events_processed", "wall_seconds", "events_per_second"} & set(summary)


def test_the_run_command_reports_an_invalid_scenario_in_one_located_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (SCENARIOS / "alice-au.yaml").read_text().replace("rate_per_second: 2", "rate_per_second: -1", 1)
    bad.write_text(text)
    result = CliRunner().invoke(main, ["run", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "bad.yaml: workload[0].rate_per_second: must be > 0, got -1" in result.output
    assert not (tmp_path / "out").exists()


def test_the_run_command_takes_a_calibration_file_and_rejects_a_bad_one(tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text("apiserver:\n  verbs:\n    get: {median_seconds: 2.0}\n")
    scenario = str(SCENARIOS / "agent-loss-rke1.yaml")
    result = CliRunner().invoke(
        main, ["run", scenario, "--out", str(tmp_path / "a"), "--calibration", str(slow)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / "run.json").read_text())["calibration"] == "slow.yaml"
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["paths"]["proxy"]["latency_seconds"]["p50"] > 2.0
    slow.write_text("apiserver:\n  verbs:\n    get: {median_seconds: -1}\n")
    result = CliRunner().invoke(
        main, ["run", scenario, "--out", str(tmp_path / "b"), "--calibration", str(slow)]
    )
    assert result.exit_code == 1
    assert "slow.yaml: apiserver.verbs.get.median_seconds: must be > 0, got -1" in result.output


def test_the_sweep_command_writes_the_csv(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(SCENARIOS / "smoke.yaml"),
            "--grid",
            "rtt_ms=20,200",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "sweep.csv")) == 2


def test_corral_sim_runs_the_same_commands_as_python_m_corral_sim(tmp_path: Path) -> None:
    from corral.cli import main as corral_main

    args = [str(SCENARIOS / "smoke.yaml"), "--seed", "3", "--no-plots", "--no-trace"]
    first = CliRunner().invoke(corral_main, ["sim", "run", *args, "--out", str(tmp_path / "a")])
    second = subprocess.run(
        [sys.executable, "-m", "corral.sim", "run", *args, "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.exit_code == 0, first.output
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["run.json", "summary.json"]
    summaries = [(tmp_path / name / "summary.json").read_text() for name in ("a", "b")]
    assert summaries[0] == summaries[1]
    assert json.loads(summaries[0])["seed"] == 3


_WITHOUT_SIM_EXTRA = """
import importlib.abc, sys
BLOCKED = {"simpy", "numpy", "matplotlib", "dask", "distributed", "tqdm"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import corral, corral.model, corral.checks
from corral.cli import main
main(sys.argv[1:], prog_name="corral")
"""


def test_corral_its_checks_and_its_help_work_without_the_sim_extra_and_sim_says_what_is_missing(
    tmp_path: Path,
) -> None:
    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _WITHOUT_SIM_EXTRA, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    helped = corral("--help")
    assert helped.returncode == 0, helped.stderr
    assert "sim " in helped.stdout
    assert "build " in helped.stdout
    listed = corral("sim", "--help")
    assert listed.returncode == 0, listed.stderr
    assert "run " in listed.stdout
    assert "sweep " in listed.stdout
    refused = corral("sim", "run", str(SCENARIOS / "smoke.yaml"), "--out", str(tmp_path / "out"))
    assert refused.returncode == 1
    assert "needs the 'sim' extra (pip install 'corral[sim]'); missing: simpy, numpy" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "out").exists()

"""A sweep on a real Dask cluster: scheduler and worker started by the `dask` command line, each its own
process on loopback, the worker importing corral.sim from the installed package (not from this checkout).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main as corral_main

pytest.importorskip("distributed")

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
START_SECONDS = 60.0
STOP_SECONDS = 15.0


def _dask(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = (cwd / f"{args[0]}.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one worker, separate processes started in an empty folder; yields the address."""
    from distributed import Client

    home = tmp_path / "dask"
    home.mkdir()
    scheduler_file = home / "scheduler.json"
    processes = [
        _dask(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",  # the kernel picks a free port; the scheduler file says which
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
            cwd=home,
        )
    ]
    try:
        deadline = time.monotonic() + START_SECONDS
        while not scheduler_file.is_file() or not scheduler_file.read_text():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dask scheduler did not start:\n{(home / 'scheduler.log').read_text()}")
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        processes.append(
            _dask(
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--death-timeout",
                str(int(START_SECONDS)),
                "--local-directory",
                str(home),
                cwd=home,
            )
        )
        with Client(address, timeout=START_SECONDS, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            try:
                client.wait_for_workers(1, timeout=START_SECONDS)
            except TimeoutError:
                pytest.fail(f"dask worker did not join:\n{(home / 'worker.log').read_text()}")
            # The one worker is the `dask worker` process itself (no nanny), not this one.
            assert list(client.run(os.getpid).values()) == [processes[1].pid]
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(stream)]


def test_a_sweep_on_separate_scheduler_and_worker_processes_equals_the_inline_run(
    dask_cluster: str, tmp_path: Path
) -> None:
    scenario = str(SCENARIOS / "smoke.yaml")
    grid = ["--grid", "rtt_ms=40,250", "--grid", "seed=1,2"]
    remote = CliRunner().invoke(
        corral_main,
        ["sim", "sweep", scenario, *grid, "--out", str(tmp_path / "remote"), "--scheduler", dask_cluster],
    )
    assert remote.exit_code == 0, remote.output
    inline = CliRunner().invoke(
        corral_main, ["sim", "sweep", scenario, *grid, "--out", str(tmp_path / "inline"), "--workers", "1"]
    )
    assert inline.exit_code == 0, inline.output
    rows = _rows(tmp_path / "remote" / "sweep.csv")
    assert [(row["rtt_ms"], row["seed"]) for row in rows] == [
        ("40", "1"),
        ("40", "2"),
        ("250", "1"),
        ("250", "2"),
    ]
    assert rows == _rows(tmp_path / "inline" / "sweep.csv")
    assert all(row["proxy_requests"] != "0" for row in rows)

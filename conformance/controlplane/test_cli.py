"""`corral cluster up` leaves clusters running after it exits; `down` and the next `up` stop them.

These run the local provider's processes whatever the session's provider is: `local_only`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.bundled import scenario_path
from corral.controlplane import build
from corral.controlplane.processes import ProcessRecord, is_same_process, read_state
from corral.k8s import KubeClient, KubeConfig

SMOKE = scenario_path("smoke")

pytestmark = [pytest.mark.local_only, pytest.mark.requirement("CP-010")]


def corral(*args: str) -> list[str]:
    env_bin = Path(sys.executable).parent / "corral"
    command = (
        [str(env_bin)] if env_bin.exists() else [sys.executable, "-c", "from corral.cli import main; main()"]
    )
    return [*command, *args]


def run_corral(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    command = corral(*args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def environment(bin_dir: Path) -> dict[str, str]:
    """Point the CLI at the session's binaries so it never builds anything itself."""
    env = {**os.environ, "CORRAL_BIN_DIR": str(bin_dir)}
    env.pop("CORRAL_PROVIDER", None)
    return env


def test_cluster_up_leaves_working_clusters_and_down_stops_every_process(
    corral_binaries: build.Built, tmp_path: Path
) -> None:
    bin_dir = _single_bin_dir(corral_binaries, tmp_path)
    env = environment(bin_dir)
    run_dir = tmp_path / "run"
    up = run_corral(env, "cluster", "up", "--scenario", str(SMOKE), "--dir", str(run_dir), timeout=180)
    assert up.returncode == 0, up.stderr
    records = read_state(run_dir)
    assert {r.role for r in records} == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert all(is_same_process(r) for r in records)
    assert f"kubectl --kubeconfig {run_dir.resolve()}/kube_config_c-us.yml get nodes" in up.stdout
    with KubeClient(KubeConfig.load(run_dir / "kube_config_c-au.yml")) as client:
        assert len(client.get("/api/v1/nodes")["items"]) == 3

    down = run_corral(env, "cluster", "down", "--dir", str(run_dir), timeout=120)
    assert down.returncode == 0, down.stderr
    assert not [r.name for r in records if is_same_process(r)]


def test_the_next_up_reaps_the_processes_of_a_killed_up_in_the_same_folder(
    corral_binaries: build.Built, tmp_path: Path
) -> None:
    bin_dir = _single_bin_dir(corral_binaries, tmp_path)
    env = environment(bin_dir)
    run_dir = tmp_path / "run"
    up = ("cluster", "up", "--scenario", str(SMOKE), "--dir", str(run_dir))
    first = subprocess.Popen(corral(*up), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left: list[ProcessRecord] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(left) < 3 and first.poll() is None:
        time.sleep(0.05)
        left = read_state(run_dir)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    left = read_state(run_dir)
    assert left, "the killed up recorded no process"
    try:
        second = run_corral(env, *up, timeout=180)
        assert second.returncode == 0, second.stderr
        assert not [r.name for r in left if is_same_process(r)]
        now = read_state(run_dir)
        assert now
        assert all(is_same_process(r) for r in now)
        assert {r.pid for r in now}.isdisjoint(r.pid for r in left)
    finally:
        run_corral(env, "cluster", "down", "--dir", str(run_dir), timeout=120)
    assert not [r.name for r in [*left, *read_state(run_dir)] if is_same_process(r)]
    assert json.loads((run_dir / "processes.json").read_text())["processes"] == []


def _single_bin_dir(binaries: build.Built, tmp_path: Path) -> Path:
    """One folder with links to every control-plane binary (they live in per-module cache folders)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in build.CONTROL_PLANE:
        (folder / name).symlink_to(binaries[name])
    return folder

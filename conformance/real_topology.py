"""The real-nodes topology (``corral up`` with real downstream nodes), brought up once per session.

Shared by every module that drives it (the proxy's streams, the agents as Pods): bringing it up
costs the most of any fixture, so it is session-scoped and registered by the conformance conftest.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from corral.controlplane import build, nodes
from corral.errors import CorralError
from corral.k8s import KubeClient, KubeConfig
from corral.run.up import down, up

__all__ = ["CLUSTER", "SCENARIO", "USER", "RealTopology", "real_topology", "wait_until"]

SCENARIO = Path(__file__).parents[1] / "fixtures" / "scenarios" / "real-nodes-topology.yaml"
USER = "dana"
CLUSTER = "c-real"

T = TypeVar("T")


@dataclass(frozen=True)
class RealTopology:
    doc: dict[str, Any]
    kubectl: Path

    def as_user(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv(), *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def argv(self) -> list[str]:
        return [str(self.kubectl), "--kubeconfig", self.doc["users"][USER]["kubeconfig"]]

    def admin(self) -> KubeClient:
        return KubeClient(KubeConfig.load(self.doc["clusters"][CLUSTER]["admin_kubeconfig"]))


@pytest.fixture(scope="session")
def real_topology(
    pytestconfig: pytest.Config, corral_binaries: build.Built, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealTopology]:
    try:
        nodes.check_host()
        binaries = build.ensure_built((*build.CONTROL_PLANE, *build.NODES))
    except CorralError as e:
        pytest.fail(f"real nodes cannot run here: {e}", pytrace=False)
    run_dir = tmp_path_factory.mktemp("real-topology")
    try:
        doc = up(SCENARIO, run_dir, binaries=binaries, detached=False)
    except CorralError as e:
        down(run_dir)
        pytest.fail(f"cannot bring up the real-nodes topology: {e}", pytrace=False)
    try:
        yield RealTopology(doc=doc, kubectl=binaries["kubectl"])
    finally:
        down(run_dir)


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """``predicate``'s first true answer, asked every half second; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.5)

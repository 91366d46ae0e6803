"""The real-nodes scenario brought up once per session, and helpers to run workloads on it.

These tests run with ``--with-clusters`` like every conformance test; where real nodes cannot work
(not root, no cgroup v1, no network namespaces) they fail with the reason, they never skip.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.controlplane import build, images, nodes
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.controlplane.local import LocalProvider
from corral.errors import CorralError
from corral.k8s import KubeClient
from corral.model import Scenario

SCENARIO = Path(__file__).parents[2] / "fixtures" / "scenarios" / "real-nodes.yaml"
IMAGE = images.CORRAL_IMAGE


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_nodes: needs real nodes (root, cgroup v1, network namespaces)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.real_nodes)
            item.add_marker(pytest.mark.local_only)


@pytest.fixture(scope="session")
def node_binaries(pytestconfig: pytest.Config) -> build.Built:
    if not pytestconfig.getoption("with_clusters"):
        pytest.fail("real nodes need --with-clusters", pytrace=False)
    try:
        nodes.check_host()
        return build.ensure_built((*build.CONTROL_PLANE, *build.NODES))
    except CorralError as e:
        pytest.fail(f"real nodes cannot run here: {e}", pytrace=False)


@pytest.fixture(scope="session")
def real_scenario() -> Scenario:
    return Scenario.load(SCENARIO)


@pytest.fixture(scope="session")
def real_clusters(
    node_binaries: build.Built, real_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterSet]:
    run_dir = tmp_path_factory.mktemp("real-nodes")
    provider = LocalProvider(binaries=node_binaries, node_mode="real")
    try:
        clusters = provider.up(real_scenario, run_dir)
    except CorralError as e:
        provider.down(run_dir)
        pytest.fail(f"cannot bring up real nodes: {e}", pytrace=False)
    try:
        yield clusters
    finally:
        provider.down(run_dir)


@pytest.fixture(scope="session")
def real_cluster(real_clusters: ClusterSet) -> ClusterHandle:
    return next(iter(real_clusters))


@pytest.fixture
def real_admin(real_cluster: ClusterHandle) -> Iterator[KubeClient]:
    with real_cluster.client() as client:
        yield client


@pytest.fixture
def ns(real_admin: KubeClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    real_admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    real_admin.delete(f"/api/v1/namespaces/{name}")


class Kubectl:
    """corral's kubectl with the admin kubeconfig of the real-nodes cluster."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.argv = [str(binary), f"--kubeconfig={kubeconfig}"]
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(kubeconfig.parent)}

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )


@pytest.fixture
def kubectl(node_binaries: build.Built, real_cluster: ClusterHandle) -> Kubectl:
    return Kubectl(node_binaries["kubectl"], real_cluster.kubeconfig)


def container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "imagePullPolicy": "Never", "command": command, **extra}


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def running_pods(client: KubeClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = client.get(f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})["items"]
    return [
        pod
        for pod in pods
        if pod.get("status", {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
    ]

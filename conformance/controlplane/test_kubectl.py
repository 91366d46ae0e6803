"""The kubectl that corral builds works with the kubeconfigs that corral writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from corral.controlplane import build
from corral.controlplane.clusters import ClusterSet
from corral.k8s import KubeClient

pytestmark = pytest.mark.requirement("CP-001")


def kubectl(binaries: build.Built, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(kubeconfig.parent)}
    return subprocess.run(
        [str(binaries["kubectl"]), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_kubectl_lists_namespaces_and_the_nodes_the_api_reports_with_the_admin_kubeconfig(
    corral_binaries: build.Built, cluster_set: ClusterSet
) -> None:
    for handle in cluster_set:
        with handle.client() as client:
            api_nodes = [node["metadata"]["name"] for node in client.get("/api/v1/nodes")["items"]]
        namespaces = kubectl(corral_binaries, handle.kubeconfig, "get", "ns", "-o", "name")
        assert namespaces.returncode == 0, namespaces.stderr
        assert "namespace/kube-system" in namespaces.stdout.split()
        nodes = kubectl(corral_binaries, handle.kubeconfig, "get", "nodes", "-o", "name")
        assert nodes.returncode == 0, nodes.stderr
        assert sorted(nodes.stdout.split()) == sorted(f"node/{name}" for name in api_nodes)


def test_kubectl_auth_can_i_answers_for_a_minted_user_kubeconfig(
    corral_binaries: build.Built,
    cluster_set: ClusterSet,
    cluster_name: str,
    admin: KubeClient,
    tmp_path: Path,
) -> None:
    handle = cluster_set[cluster_name]
    path = handle.credentials("frank", ("qa",)).write(tmp_path / "frank.yml")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert (
        kubectl(corral_binaries, handle.kubeconfig, "auth", "can-i", "delete", "nodes").stdout.strip()
        == "yes"
    )
    denied = kubectl(corral_binaries, path, "auth", "can-i", "delete", "nodes")
    assert denied.stdout.strip() == "no"
    assert denied.returncode == 1

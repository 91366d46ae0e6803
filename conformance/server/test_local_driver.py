"""``driver: local`` clusters: the server provisions a control plane and removes it with the cluster.

One ``corral server --provision-dir`` on the session's first cluster as upstream. A cluster created
through the v3 API gets its own etcd, kube-apiserver and controller manager and a cluster agent,
registers and becomes Ready; the real kubectl reaches it through the proxy with a generated
kubeconfig; deleting the cluster stops its control plane and removes its folder.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conformance.server._servers import ADMIN_PASSWORD, Pki, ServerProcess, start_server
from corral.controlplane import build
from corral.controlplane.clusters import ClusterSet
from corral.k8s import KubeClient, wait_for
from corral.server.registration import condition_true

MGMT = "/apis/management.cattle.io/v3"


@pytest.fixture(scope="module")
def provisioning(
    cluster_set: ClusterSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, KubeClient, Path]]:
    folder = tmp_path_factory.mktemp("provisioning")
    password_file = folder / "admin.password"
    password_file.write_text(ADMIN_PASSWORD)
    password_file.chmod(0o600)
    handle = next(iter(cluster_set))
    provision_dir = folder / "provisioned"
    server = start_server(
        "p",
        kubeconfig=handle.kubeconfig,
        pki=Pki.create(folder / "pki"),
        folder=folder,
        password_file=password_file,
        extra_args=("--provision-dir", str(provision_dir)),
    )
    try:
        with handle.client() as upstream:
            yield server, upstream, provision_dir
    finally:
        server.stop()
        for leftover in provision_dir.glob("*") if provision_dir.is_dir() else ():
            from corral.controlplane.local import LocalProvider

            LocalProvider().down(leftover)


def _refuses(address: str) -> bool:
    url = urlsplit(address)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=2):
            return False
    except OSError:
        return True


@pytest.mark.requirement("SRV-028", "SRV-029")
def test_a_local_cluster_is_provisioned_reached_through_the_proxy_and_removed(
    provisioning: tuple[ServerProcess, KubeClient, Path], corral_binaries: build.Built
) -> None:
    server, upstream, provision_dir = provisioning
    admin = server.admin_token()
    name = f"prov-{uuid.uuid4().hex[:6]}"
    created = server.request(
        "POST", "/v3/clusters", body={"type": "cluster", "name": name, "driver": "local"}, token=admin
    )
    assert created.status == 201, created.raw
    assert created.body["driver"] == "local"
    cluster_id = str(created.body["id"])

    def ready() -> dict[str, Any] | None:
        cluster = upstream.get(f"{MGMT}/clusters/{cluster_id}")
        return cluster if condition_true(cluster, "Ready") else None

    cluster = wait_for(
        ready,
        timeout_seconds=180,
        what=f"cluster {cluster_id} to be Ready",
    )
    status = cluster["status"]
    assert condition_true(cluster, "Provisioned")
    assert status["driver"] == "local"
    endpoint = str(status["apiEndpoint"])
    assert base64.b64decode(status["caCert"]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert (provision_dir / cluster_id).is_dir()

    answer = server.request("POST", f"/v3/clusters/{cluster_id}?action=generateKubeconfig", token=admin)
    assert answer.status == 200, answer.raw
    kubeconfig = provision_dir.parent / f"{cluster_id}.kubeconfig"
    kubeconfig.write_text(answer.body["config"])
    kubeconfig.chmod(0o600)
    listed = subprocess.run(
        [str(corral_binaries["kubectl"]), "--kubeconfig", str(kubeconfig), "get", "namespaces", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "namespace/default" in listed.stdout.split()
    assert "namespace/cattle-system" in listed.stdout.split()  # the cattle account's, as an agent installs

    deleted = server.request("DELETE", f"/v3/clusters/{cluster_id}", token=admin)
    assert deleted.status == 200, deleted.raw
    wait_for(
        lambda: not (provision_dir / cluster_id).exists() and _refuses(endpoint),
        timeout_seconds=60,
        what=f"the control plane of {cluster_id} to stop",
    )
    gone = server.request("GET", f"/v3/clusters/{cluster_id}", token=admin)
    assert gone.status == 404, gone.raw


@pytest.mark.requirement("SRV-028")
def test_an_unknown_driver_is_refused_and_nothing_is_provisioned(
    provisioning: tuple[ServerProcess, KubeClient, Path],
) -> None:
    server, _, provision_dir = provisioning
    admin = server.admin_token()
    before = sorted(provision_dir.glob("*")) if provision_dir.is_dir() else []
    answer = server.request(
        "POST", "/v3/clusters", body={"type": "cluster", "name": "prov-rke", "driver": "rke"}, token=admin
    )
    assert answer.status == 422, answer.raw
    assert answer.body["code"] == "InvalidOption"
    assert (sorted(provision_dir.glob("*")) if provision_dir.is_dir() else []) == before

"""A downstream cluster on the Authorized Cluster Endpoint, for a server a conformance module started itself.

Its kube-apiserver's token webhook is a real `corral kube-api-auth` process (port chosen before the
apiserver starts, as ``corral up`` does); the cluster is registered with the server as an agent would
register it and has ``spec.localClusterAuthEndpoint.enabled``, so the server's cluster controller copies
its scoped tokens down and the apiserver learns who a token belongs to from kube-api-auth alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.local import LocalProvider
from corral.controlplane.processes import free_port
from corral.errors import NotFoundError
from corral.k8s import KubeConfig
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth import objects, sync, testing
from corral.model import Scenario
from corral.server.cattle import ensure_cattle_credential
from corral.server.registration import register_cluster

MGMT = "/apis/management.cattle.io/v3"


@dataclass(frozen=True)
class AceCluster:
    cluster_id: str
    handle: ClusterHandle
    auth_url: str
    log: Path
    trace: Path
    folder: Path

    def kubeconfig(self, token: str, *, name: str) -> Path:
        """A kubeconfig straight to the cluster's kube-apiserver (the ACE path) with ``token``."""
        assert self.handle.ca_pem is not None
        ca = self.folder / "cluster-ca.crt"
        ca.write_bytes(self.handle.ca_pem)
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "ace", "cluster": {"server": self.handle.server, "certificate-authority": str(ca)}}
            ],
            "users": [{"name": "ace", "user": {"token": token}}],
            "contexts": [{"name": "ace", "context": {"cluster": "ace", "user": "ace"}}],
            "current-context": "ace",
        }
        path = self.folder / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        path.chmod(0o600)
        return path

    def cluster_user_attribute(self, user_id: str) -> dict[str, Any] | None:
        """The user's ClusterUserAttribute in the cluster (None when there is none)."""
        with self.handle.client() as admin:
            try:
                return dict(admin.get(f"{objects.paths()[objects.CLUSTER_USER_ATTRIBUTES]}/{user_id}"))
            except NotFoundError:
                return None


async def _register(upstream: KubeConfig, cluster_id: str, handle: ClusterHandle, sa_token: str) -> None:
    async with AsyncKubeClient(upstream) as client:
        await client.patch(
            f"{MGMT}/clusters/{cluster_id}", {"spec": {"localClusterAuthEndpoint": {"enabled": True}}}
        )
        await register_cluster(
            client,
            cluster_id,
            address=handle.server.removeprefix("https://"),
            sa_token=sa_token,
            ca_cert_pem=handle.ca_pem or b"",
        )


@contextmanager
def ace_cluster(
    *, cluster_id: str, upstream: ClusterHandle, binaries: build.Built, folder: Path
) -> Iterator[AceCluster]:
    """Bring the cluster up (one control-plane node), start its kube-api-auth, register it as ``cluster_id``.

    The Cluster object ``cluster_id`` must exist upstream; deleting it is the caller's (before this exits).
    """
    name = "ace-" + cluster_id
    scenario = Scenario.from_dict(
        {
            "name": name,
            "regions": ["us"],
            "clusters": [
                {"name": name, "region": "us", "nodes": [{"name": f"{name}-cp", "roles": ["controlplane"]}]}
            ],
        }
    )
    hook = testing.webhook(folder, port=free_port())
    provider = LocalProvider(binaries=binaries, webhooks={name: hook.config}, webhook_version=None)
    run_dir = folder / "run"
    handle = provider.up(scenario, run_dir)[name]
    log, trace = folder / "kube-api-auth.log", folder / "trace.jsonl"
    try:

        async def crds() -> None:
            async with AsyncKubeClient(handle.admin_config()) as client:
                await sync.ensure_crds(client)

        asyncio.run(crds())
        with testing.running(
            port=hook.port, kubeconfig=handle.kubeconfig, cluster_id=cluster_id, trace=trace, log=log
        ):
            with handle.client() as admin:
                sa_token = ensure_cattle_credential(admin)
            asyncio.run(_register(upstream.admin_config(), cluster_id, handle, sa_token))
            yield AceCluster(
                cluster_id=cluster_id, handle=handle, auth_url=hook.url, log=log, trace=trace, folder=folder
            )
    finally:
        provider.down(run_dir)

"""The local provider as the server's `Provisioner`: ``driver: local`` clusters as processes on this machine.

Each cluster gets ``DIR/<cluster id>/``: its etcd, kube-apiserver and controller manager (the local
provider, detached so they outlive a server restart), the ``cattle`` account Rancher's agent would
install, and one cluster agent connected to the server with the cluster's registration token.
Deprovisioning stops everything recorded there and removes the folder.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

from corral.controlplane import build
from corral.controlplane.local import LocalProvider
from corral.errors import ConfigError, CorralError
from corral.model import Scenario
from corral.server.cattle import ensure_cattle_credential
from corral.server.provisioning import ProvisionedControlPlane, ProvisioningError, ProvisionRequest

logger = logging.getLogger(__name__)

__all__ = ["LocalProvisioner"]

_ROLES = ("controlplane", "etcd", "worker")
_CLUSTER_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class LocalProvisioner:
    """Implements `corral.server.provisioning.Provisioner` with the local provider under one folder."""

    def __init__(self, folder: Path, *, binaries: build.Built | None = None) -> None:
        self.folder = folder.resolve()
        self.binaries = binaries

    def _cluster_dir(self, cluster_id: str) -> Path:
        if not _CLUSTER_ID.fullmatch(cluster_id):
            raise ProvisioningError(f"{cluster_id!r} is not a cluster id")
        return self.folder / cluster_id

    async def provision(self, request: ProvisionRequest) -> ProvisionedControlPlane:
        return await asyncio.to_thread(self._provision, request)

    async def deprovision(self, cluster_id: str) -> None:
        await asyncio.to_thread(self._deprovision, cluster_id)

    def _provision(self, request: ProvisionRequest) -> ProvisionedControlPlane:
        from corral.agent.config import ca_checksum
        from corral.agent.fleet import start_cluster_agents

        if not request.server_url:
            raise ProvisioningError(
                "the server-url setting is empty: the cluster's agent has nowhere to connect"
            )
        cluster_id = request.cluster_id
        run_dir = self._cluster_dir(cluster_id)
        scenario = Scenario.from_dict(
            {
                "name": cluster_id,
                "regions": ["local"],
                "clusters": [
                    {
                        "name": cluster_id,
                        "region": "local",
                        "nodes": [
                            {"name": f"{cluster_id}-node", "roles": ["controlplane", "etcd", "worker"]}
                        ],
                    }
                ],
            },
            source=f"cluster {cluster_id}",
        )
        try:
            binaries = self.binaries or build.ensure_built(build.CONTROL_PLANE)
            provider = LocalProvider(detached=True, binaries=binaries)
            clusters = provider.up(
                scenario, run_dir, progress=lambda line: logger.info("%s: %s", cluster_id, line)
            )
            handle = clusters[cluster_id]
            with handle.client() as admin:
                sa_token = ensure_cattle_credential(admin)
            start_cluster_agents(
                run_dir,
                cluster=cluster_id,
                profile="rke2",
                replicas=1,
                nodes=[node.name for node in scenario.clusters[0].nodes],
                server=request.server_url,
                token=request.registration_token,
                ca_checksum=ca_checksum(request.cacerts),
                kubeconfig=handle.kubeconfig,
            )
        except ConfigError as exc:
            self._deprovision(cluster_id)
            raise ProvisioningError(f"cluster {cluster_id}: {exc}") from None
        except CorralError:
            self._deprovision(cluster_id)
            raise
        return ProvisionedControlPlane(
            address=handle.server.removeprefix("https://"), ca_pem=handle.ca_pem or b"", sa_token=sa_token
        )

    def _deprovision(self, cluster_id: str) -> None:
        run_dir = self._cluster_dir(cluster_id)
        if not run_dir.is_dir():
            return
        LocalProvider().down(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)

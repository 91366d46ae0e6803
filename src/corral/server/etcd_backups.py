"""etcd snapshots of downstream clusters, taken and restored by a node agent over its tunnel.

The server picks a node agent that holds a session and offers ``etcd-snapshot`` (an etcd node
first, then a control-plane node), dials the agent's operations address through that session
(`corral.agent.ops`) and asks it to snapshot or restore the cluster's keys. `EtcdBackups` records
each snapshot as Rancher does, as an ``EtcdBackup`` in the cluster's namespace upstream (name
``<cluster>-ml-<random>``: manual, local; the node that holds the file in an annotation), and
serves the v3 actions ``backupEtcd`` and ``restoreFromEtcdBackup`` (``etcdBackupId``
``<cluster>:<name>``).
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import string
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from corral.agent.ops import OPS_HOST
from corral.errors import CorralError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.server.connect import TunnelEndpoints
from corral.server.state import STORED
from corral.tunnel import TunnelConnector

logger = logging.getLogger(__name__)

__all__ = ["ETCD_SNAPSHOT", "NODE_ANNOTATION", "EtcdBackupError", "EtcdBackups", "NodeEtcd"]

ETCD_SNAPSHOT: Final = "etcd-snapshot"
NODE_ANNOTATION: Final = "etcdbackup.corral.io/node"
_ALPHABET: Final = string.ascii_lowercase + string.digits


class EtcdBackupError(CorralError):
    """No node agent can do it, or the agent refused or failed; the message says which."""

    def __init__(self, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class NodeEtcd:
    """Calls the etcd operations of a cluster's node agents through their tunnel sessions."""

    def __init__(self, endpoints: TunnelEndpoints, *, timeout_seconds: float = 300.0) -> None:
        self.endpoints = endpoints
        self.timeout_seconds = timeout_seconds

    def node_for(self, cluster: str) -> str:
        """The node whose agent should do it: an etcd node first, then a control-plane node."""
        reported = self.endpoints.nodes.get(cluster, {})
        able = [
            params
            for node, params in reported.items()
            if ETCD_SNAPSHOT in params.operations and self.endpoints.manager.has_session(f"{cluster}:{node}")
        ]
        able.sort(key=lambda params: (not params.etcd, not params.control_plane))
        if not able:
            raise EtcdBackupError(
                f"no node agent of cluster {cluster} that can snapshot etcd is connected", status=503
            )
        return able[0].hostname

    async def _call(
        self, cluster: str, node: str, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        key = f"{cluster}:{node}"
        if not self.endpoints.manager.has_session(key):
            raise EtcdBackupError(f"the node agent of {cluster}/{node} is not connected", status=503)
        connector = TunnelConnector(self.endpoints.manager, key)
        timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
                http.request(method, f"http://{OPS_HOST}{path}", json=body) as response,
            ):
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, CorralError, OSError) as exc:
            raise EtcdBackupError(f"node agent {cluster}/{node}: {exc or 'timed out'}", status=503) from None
        if status >= 300:
            raise EtcdBackupError(f"node agent {cluster}/{node}: {text.strip()[:300]}", status=status)
        try:
            answer: dict[str, Any] = json.loads(text)
        except ValueError:
            raise EtcdBackupError(
                f"node agent {cluster}/{node} answered something that is not JSON"
            ) from None
        return answer

    async def snapshot(
        self, cluster: str, name: str, *, node: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """``(node, what the snapshot holds)``."""
        node = node or self.node_for(cluster)
        return node, await self._call(cluster, node, "POST", "/v1/etcd/snapshots", {"name": name})

    async def restore(self, cluster: str, name: str, *, node: str) -> dict[str, Any]:
        """What the restore changed: ``put``, ``deleted``, ``unchanged`` key counts."""
        return await self._call(cluster, node, "POST", f"/v1/etcd/snapshots/{name}/restore")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EtcdBackups:
    """The ``EtcdBackup`` records upstream and the v3 actions on them."""

    def __init__(self, upstream: AsyncKubeClient, etcd: NodeEtcd) -> None:
        self.upstream = upstream
        self.etcd = etcd

    async def backup(self, cluster: str) -> dict[str, Any]:
        """Snapshot now and record it; returns the stored ``EtcdBackup``."""
        name = f"{cluster}-ml-" + "".join(secrets.choice(_ALPHABET) for _ in range(5))
        node, info = await self.etcd.snapshot(cluster, name)
        body = {
            "apiVersion": "management.cattle.io/v3",
            "kind": "EtcdBackup",
            "metadata": {
                "name": name,
                "namespace": cluster,
                "annotations": {NODE_ANNOTATION: node},
                "labels": {"cattle.io/cluster": cluster},
            },
            "spec": {"clusterId": cluster, "manual": True, "filename": f"{name}.jsonl.gz"},
            "status": {
                "conditions": [
                    {"type": "Created", "status": "True", "lastUpdateTime": _now()},
                    {"type": "Completed", "status": "True", "lastUpdateTime": _now()},
                ],
                "keys": info.get("keys"),
                "revision": info.get("revision"),
                "size": info.get("size"),
            },
        }
        return await self.upstream.create(STORED["etcdbackups"].path(namespace=cluster), body)

    async def restore(self, cluster: str, backup_id: str) -> dict[str, Any]:
        """Restore backup ``<cluster>:<name>`` (or ``<name>``) of ``cluster`` on the node that holds it."""
        namespace, _, name = backup_id.rpartition(":")
        if namespace and namespace != cluster:
            raise EtcdBackupError(f"etcd backup {backup_id} is not of cluster {cluster}", status=422)
        try:
            backup = await self.upstream.get(STORED["etcdbackups"].path(name, cluster))
        except NotFoundError:
            raise EtcdBackupError(f"no etcd backup {backup_id}", status=404) from None
        node = ((backup.get("metadata") or {}).get("annotations") or {}).get(NODE_ANNOTATION)
        if not node:
            raise EtcdBackupError(f"etcd backup {backup_id} names no node that holds it", status=422)
        return await self.etcd.restore(cluster, name, node=str(node))

"""The agents of clusters whose nodes are real: deployed into the cluster as Rancher deploys them.

``corral up --nodes real`` applies `corral.agent.manifests` to each downstream cluster instead of
starting agent processes: the Pods reach the server at the host end of their cluster's veth (where
the server also listens), and their in-cluster credentials point at the kube-apiserver's own address
there, which the server's cluster controllers dial directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from corral.agent.manifests import CLUSTER_AGENT, NAMESPACE, NODE_AGENT, AgentDeployment, agent_manifests
from corral.controlplane.clusters import ClusterHandle
from corral.errors import ControlPlaneError

logger = logging.getLogger(__name__)

__all__ = ["api_host", "collection_of", "deploy_agents", "wait_agents"]

_COLLECTIONS: Final = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets",
}


def api_host(handle: ClusterHandle) -> str:
    """The address the cluster's kube-apiserver listens on (the host end of its veth, for real nodes)."""
    host = urlsplit(handle.server).hostname
    if not host:
        raise ControlPlaneError(f"cluster {handle.name}: no host in its API server URL {handle.server!r}")
    return host


def collection_of(manifest: Mapping[str, Any]) -> str:
    """Where ``manifest`` is applied."""
    kind = str(manifest.get("kind"))
    if kind not in _COLLECTIONS:
        raise ControlPlaneError(f"no collection known for kind {kind!r}")
    return _COLLECTIONS[kind].format(ns=(manifest.get("metadata") or {}).get("namespace", ""))


def deploy_agents(handle: ClusterHandle, deployment: AgentDeployment) -> None:
    """Apply the agents' objects to ``handle``'s cluster (server-side apply, so a second run updates)."""
    with handle.client() as admin:
        for manifest in agent_manifests(deployment):
            admin.apply(collection_of(manifest), manifest, force=True)


def wait_agents(handle: ClusterHandle, deployment: AgentDeployment, *, timeout_seconds: float) -> None:
    """Wait until the cluster agent's replicas and every node agent run."""
    deadline = time.monotonic() + timeout_seconds
    apps = f"/apis/apps/v1/namespaces/{NAMESPACE}"
    with handle.client() as admin:
        while True:
            status = admin.get(f"{apps}/deployments/{CLUSTER_AGENT}").get("status") or {}
            done = int(status.get("readyReplicas") or 0) >= deployment.replicas
            if deployment.node_agents:
                nodes = admin.get(f"{apps}/daemonsets/{NODE_AGENT}").get("status") or {}
                wanted = int(nodes.get("desiredNumberScheduled") or 0)
                done = done and wanted > 0 and int(nodes.get("numberReady") or 0) >= wanted
            if done:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"cluster {handle.name}: the agents' Pods not ready after {timeout_seconds:g}s "
                    f"(see kubectl -n {NAMESPACE} get pods)"
                )
            time.sleep(0.5)

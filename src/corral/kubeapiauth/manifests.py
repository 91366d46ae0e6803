"""kube-api-auth as Rancher deploys it into a cluster whose nodes are real: a host-network DaemonSet.

``cattle-system/kube-api-auth`` runs on the control-plane nodes only (node affinity on either role
label, every taint tolerated) and listens on its node's address, port 6440, where that node's
kube-apiserver reaches it. It runs ``corral kube-api-auth`` from corral's own image with in-cluster
credentials of its own ServiceAccount, whose Role reads and updates only the ACE objects of
``cattle-system`` (Rancher runs it as the all-powerful ``cattle`` account instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from corral.errors import ConfigError
from corral.kubeapiauth.objects import CLUSTER_AUTH_TOKENS, CLUSTER_USER_ATTRIBUTES, GROUP, NAMESPACE

logger = logging.getLogger(__name__)

__all__ = ["APP", "PORT", "SERVICE_ACCOUNT", "KubeApiAuthDeployment", "kube_api_auth_manifests"]

APP: Final = "kube-api-auth"
SERVICE_ACCOUNT: Final = "kube-api-auth"
PORT: Final = 6440
"""Rancher's port; the address is the node's own (Rancher: the node's loopback)."""
TRACE_MOUNT: Final = "/var/log/corral/trace.jsonl"
CONTROL_PLANE_LABELS: Final = (
    "node-role.kubernetes.io/controlplane",
    "node-role.kubernetes.io/control-plane",
)
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeApiAuthDeployment:
    """What the DaemonSet needs to know about the cluster and the run."""

    cluster: str
    """The cluster's name in trace events."""
    image: str
    api_address: str
    """``HOST:PORT`` of the kube-apiserver the Pods' in-cluster credentials point at."""
    trace_file: str = ""
    """A file on the host every Pod appends its ``TokenReviewed`` events to (empty: none)."""
    trace_epoch: float | None = None
    port: int = PORT

    def __post_init__(self) -> None:
        if not self.cluster:
            raise ConfigError("kube-api-auth's DaemonSet needs the cluster's name")
        if not self.image:
            raise ConfigError("kube-api-auth's DaemonSet needs an image")
        host, _, port = self.api_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"the API address must be HOST:PORT, got {self.api_address!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"kube-api-auth's port must be 1-65535, got {self.port}")
        if self.trace_file and not self.trace_file.startswith("/"):
            raise ConfigError(f"the trace file must be an absolute path on the host, got {self.trace_file!r}")


def _role() -> JSON:
    read = ["get", "list", "watch"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": APP, "namespace": NAMESPACE},
        "rules": [
            # lastUsedAt on the tokens, needsRefresh on the user attributes.
            {
                "apiGroups": [GROUP],
                "resources": [CLUSTER_AUTH_TOKENS, CLUSTER_USER_ATTRIBUTES],
                "verbs": [*read, "update", "patch"],
            },
            # The hash Secrets, and a legacy hash migrated into one.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": [*read, "create", "update", "patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": read},
        ],
    }


def _pod_spec(deployment: KubeApiAuthDeployment) -> JSON:
    host, _, port = deployment.api_address.rpartition(":")
    command = [
        "python3", "-m", "corral", "kube-api-auth",
        "--listen", f"$(NODE_IP):{deployment.port}",
        "--namespace", NAMESPACE,
        "--cluster", deployment.cluster,
    ]  # fmt: skip
    mounts: list[JSON] = []
    volumes: list[JSON] = []
    if deployment.trace_file:
        command += ["--trace", TRACE_MOUNT]
        if deployment.trace_epoch is not None:
            command += ["--trace-epoch", f"{deployment.trace_epoch:.6f}"]
        mounts.append({"name": "trace", "mountPath": TRACE_MOUNT})
        volumes.append({"name": "trace", "hostPath": {"path": deployment.trace_file, "type": "File"}})
    terms = [
        {"matchExpressions": [{"key": key, "operator": "In", "values": ["true"]}]}
        for key in CONTROL_PLANE_LABELS
    ]
    return {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        },
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "serviceAccountName": SERVICE_ACCOUNT,
        "tolerations": [{"operator": "Exists"}],
        "containers": [
            {
                "name": APP,
                "image": deployment.image,
                "imagePullPolicy": "Never",
                "command": command,
                "env": [
                    {"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    # Where the Pods and the host both reach the apiserver (not the Service's ClusterIP).
                    {"name": "KUBERNETES_SERVICE_HOST", "value": host.strip("[]")},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": port},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/healthcheck", "port": deployment.port},
                    "periodSeconds": 2,
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }


def kube_api_auth_manifests(deployment: KubeApiAuthDeployment) -> list[JSON]:
    """The objects to apply, in order (the account and its rights before the DaemonSet)."""
    binding: JSON = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": APP, "namespace": NAMESPACE},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": APP},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        _role(),
        binding,
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": APP, "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"app": APP}},
                "template": {"metadata": {"labels": {"app": APP}}, "spec": _pod_spec(deployment)},
                "updateStrategy": {"type": "RollingUpdate"},
            },
        },
    ]

"""The agents as Rancher deploys them into a downstream cluster whose nodes are real.

The objects of Rancher's import manifest: the ``cattle-system`` Namespace, the ``cattle`` ServiceAccount
bound to the all-powerful ``cattle-admin`` ClusterRole by ``cattle-admin-binding``, the
``cattle-credentials-<key>`` Secret (``url``, ``token``, ``namespace``) mounted at ``/cattle-credentials``,
the ``cattle-cluster-agent`` Deployment (in-cluster credentials, ``CATTLE_SERVER`` and
``CATTLE_CA_CHECKSUM``; two replicas on clusters of two or more nodes) and, for ``rke1`` clusters, the
``cattle-node-agent`` DaemonSet on the host network. The containers run ``corral agent`` from corral's
own image, which no registry serves (``imagePullPolicy: Never``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from corral.agent.config import AgentConfigError

__all__ = ["AgentDeployment", "agent_manifests"]

NAMESPACE: Final = "cattle-system"
SERVICE_ACCOUNT: Final = "cattle"
CLUSTER_AGENT: Final = "cattle-cluster-agent"
NODE_AGENT: Final = "cattle-node-agent"
CREDENTIALS_MOUNT: Final = "/cattle-credentials"
STATE_MOUNT: Final = "/var/lib/cattle"
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDeployment:
    """What the manifest needs to know about the server and the cluster."""

    server: str
    """The server's URL as the cluster's nodes reach it (``CATTLE_SERVER``)."""
    token: str
    """The cluster's registration token (goes only into the Secret)."""
    ca_checksum: str
    nodes: int
    image: str
    node_agents: bool
    """Deploy the ``cattle-node-agent`` DaemonSet (agent profile ``rke1``)."""
    api_address: str = ""
    """``HOST:PORT`` of the kube-apiserver as the server reaches it directly; when given, the agents'
    in-cluster credentials point there instead of the ``kubernetes`` Service's ClusterIP, so the address
    they report is one the server's cluster controllers can dial (Rancher's server dials the ClusterIP
    through the tunnel instead)."""

    def __post_init__(self) -> None:
        if not self.server.startswith("https://"):
            raise AgentConfigError(f"the agents' server must be an https URL, got {self.server!r}")
        if not self.token:
            raise AgentConfigError("the agents need a registration token")
        if len(self.ca_checksum) != 64:
            raise AgentConfigError("CATTLE_CA_CHECKSUM must be a sha256 in hex (64 characters)")
        if self.nodes < 1:
            raise AgentConfigError(f"a cluster has at least one node, got {self.nodes}")
        if self.api_address:
            host, _, port = self.api_address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise AgentConfigError(f"the API address must be HOST:PORT, got {self.api_address!r}")

    @property
    def replicas(self) -> int:
        return 2 if self.nodes >= 2 else 1

    @property
    def token_key(self) -> str:
        """Rancher names the credentials Secret by a hash of the token, never the token itself."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:7]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _env(deployment: AgentDeployment, *, cluster: bool) -> list[JSON]:
    api: list[JSON] = []
    if deployment.api_address:
        host, _, port = deployment.api_address.rpartition(":")
        api = [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host.strip("[]")},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        ]
    return [
        *api,
        {"name": "CATTLE_SERVER", "value": deployment.server},
        {"name": "CATTLE_CA_CHECKSUM", "value": deployment.ca_checksum},
        {"name": "CATTLE_CLUSTER", "value": "true" if cluster else "false"},
        {"name": "CATTLE_K8S_MANAGED", "value": "true"},
        {"name": "CATTLE_CREDENTIAL_NAME", "value": f"cattle-credentials-{deployment.token_key}"},
    ]


def _pod_spec(deployment: AgentDeployment, *, cluster: bool) -> JSON:
    args = ["--cluster"] if cluster else ["--node", "$(CATTLE_NODE_NAME)", "--no-heartbeat"]
    env = _env(deployment, cluster=cluster)
    if not cluster:
        env.append({"name": "CATTLE_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
        env.append({"name": "CATTLE_AGENT_CONNECT", "value": "true"})
    spec: JSON = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "tolerations": (
            [{"operator": "Exists"}]
            if not cluster
            else [
                {"effect": "NoSchedule", "key": "node-role.kubernetes.io/controlplane", "value": "true"},
                {
                    "effect": "NoSchedule",
                    "key": "node-role.kubernetes.io/control-plane",
                    "operator": "Exists",
                },
            ]
        ),
        "containers": [
            {
                "name": "cluster-register" if cluster else "agent",
                "image": deployment.image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-m", "corral", "agent", *args, "--state-dir", STATE_MOUNT],
                "env": env,
                "volumeMounts": [
                    {"name": "cattle-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True},
                    {"name": "agent-state", "mountPath": STATE_MOUNT},
                ],
            }
        ],
        "volumes": [
            {"name": "agent-state", "emptyDir": {}},
            {
                "name": "cattle-credentials",
                "secret": {"secretName": f"cattle-credentials-{deployment.token_key}", "defaultMode": 0o500},
            },
        ],
    }
    if not cluster:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return spec


def agent_manifests(deployment: AgentDeployment) -> list[JSON]:
    """The objects to apply, in order (namespace and credentials before the workloads)."""
    labels = {"cattle.io/creator": "norman"}
    objects: list[JSON] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "cattle-admin", "labels": labels},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "cattle-admin-binding", "labels": labels},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cattle-admin",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"cattle-credentials-{deployment.token_key}", "namespace": NAMESPACE},
            "type": "Opaque",
            "data": {
                "url": _b64(deployment.server),
                "token": _b64(deployment.token),
                "namespace": _b64(""),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": CLUSTER_AGENT,
                "namespace": NAMESPACE,
                "annotations": {"management.cattle.io/scale-available": "2"},
            },
            "spec": {
                "replicas": deployment.replicas,
                "selector": {"matchLabels": {"app": CLUSTER_AGENT}},
                "template": {
                    "metadata": {"labels": {"app": CLUSTER_AGENT}},
                    "spec": _pod_spec(deployment, cluster=True),
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            },
        },
    ]
    if deployment.node_agents:
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": NODE_AGENT, "namespace": NAMESPACE},
                "spec": {
                    "selector": {"matchLabels": {"app": NODE_AGENT}},
                    "template": {
                        "metadata": {"labels": {"app": NODE_AGENT}},
                        "spec": _pod_spec(deployment, cluster=False),
                    },
                    "updateStrategy": {"type": "RollingUpdate"},
                },
            }
        )
    return objects

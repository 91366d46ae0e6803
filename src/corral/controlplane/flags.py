"""Command lines of etcd, kube-apiserver and kube-controller-manager for a local cluster.

Pure functions from paths and ports to argument lists, so the exact flags are unit-tested and
visible in one place. They follow the envtest/StartTestServer recipe: RBAC, everything bound to
127.0.0.1, service-account issuer and keys, no endpoint reconciler (there is no node to point the
``kubernetes`` Service at), the aggregation layer (request-header authentication from the
front-proxy CA, the front-proxy client certificate), and a KCM limited to the controllers tests observe.
With real nodes (`RealNodeFlags`) the apiserver listens on the cluster's host address instead, runs
the Node authorizer and NodeRestriction, reconciles the ``kubernetes`` Service's endpoints and
reaches kubelets by InternalIP; the KCM adds what Pods need, and the scheduler joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.controlplane.pki import FRONT_PROXY_CLIENT, ClusterPKI

SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: Request headers that carry the user to aggregated API servers (the names kubeadm configures).
USER_HEADER = "X-Remote-User"
GROUP_HEADER = "X-Remote-Group"
EXTRA_HEADER_PREFIX = "X-Remote-Extra-"

#: The KCM controllers corral runs: token Secrets, `default` ServiceAccounts, namespace deletion,
#: ownerReference GC, aggregated admin/edit/view ClusterRoles and the kube-root-ca.crt ConfigMap.
KCM_CONTROLLERS = (
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
)


#: What virtual nodes add: their agents keep Leases and Ready conditions, and this controller marks a
#: node NotReady (Unknown) when its agent stops renewing them, on Kubernetes' own schedule.
VIRTUAL_NODE_CONTROLLERS = (*KCM_CONTROLLERS, "node-lifecycle-controller")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMonitor:
    """The node lifecycle controller's timing: how long a silent node stays Ready, how often it looks."""

    grace: str
    period: str


#: What real nodes add to the KCM: workloads, node lifecycle with taint-based eviction, endpoints.
REAL_NODE_CONTROLLERS = (
    *KCM_CONTROLLERS,
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "pod-garbage-collector-controller",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealNodeFlags:
    """What the control plane of a cluster with real nodes needs beyond the virtual one."""

    bind_address: str
    """An address of a run-owned host interface that the nodes' namespace routes to."""
    kubelet_client_cert: Path
    kubelet_client_key: Path
    toleration_seconds: int
    node_monitor_grace: str
    node_monitor_period: str


def etcd_args(binary: Path, *, name: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    """A single-member etcd on loopback; fsync off because test data is disposable."""
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(
    binary: Path,
    *,
    pki: ClusterPKI,
    port: int,
    etcd_url: str,
    etcd_prefix: str,
    webhook_config: Path | None = None,
    webhook_cache_ttl: str = "1s",
    webhook_version: str | None = "v1",
    real_nodes: RealNodeFlags | None = None,
) -> list[str]:
    """kube-apiserver serving TLS on 127.0.0.1:``port`` (or the real nodes' host address), storing
    under ``etcd_prefix``.

    ``webhook_version`` None leaves the TokenReview version to the apiserver's default (v1beta1),
    as Rancher wires kube-api-auth, which answers in v1beta1.
    """
    address = real_nodes.bind_address if real_nodes else "127.0.0.1"
    args = [
        str(binary),
        f"--etcd-servers={etcd_url}",
        f"--etcd-prefix={etcd_prefix}",
        f"--bind-address={address}",
        f"--advertise-address={address}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.client_ca}",
        "--authorization-mode=" + ("Node,RBAC" if real_nodes else "RBAC"),
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=" + ("lease" if real_nodes else "none"),
        "--profiling=false",
        "--allow-privileged=true",
        *aggregation_args(pki),
    ]
    if real_nodes is not None:
        args += [
            "--enable-admission-plugins=NodeRestriction",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={real_nodes.kubelet_client_cert}",
            f"--kubelet-client-key={real_nodes.kubelet_client_key}",
            f"--default-not-ready-toleration-seconds={real_nodes.toleration_seconds}",
            f"--default-unreachable-toleration-seconds={real_nodes.toleration_seconds}",
        ]
    if webhook_config is not None:
        args += [
            f"--authentication-token-webhook-config-file={webhook_config}",
            f"--authentication-token-webhook-cache-ttl={webhook_cache_ttl}",
        ]
        if webhook_version is not None:
            args.append(f"--authentication-token-webhook-version={webhook_version}")
    return args


def aggregation_args(pki: ClusterPKI) -> list[str]:
    """The aggregation layer: who may assert users in headers, and the certificate sent to extensions.

    Aggregator routing stays off: with it the apiserver dials an address from the backing Service's
    EndpointSlices, which refuse loopback addresses and which it only reads for ClusterIP Services,
    while no Service IP is routable here (there is no kube-proxy). Off, it dials the ClusterIP, or for
    an ``ExternalName`` Service that name and the APIService's port, so an extension on this machine
    is reached through an ``ExternalName`` Service pointing at ``localhost``.
    """
    return [
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        f"--requestheader-username-headers={USER_HEADER}",
        f"--requestheader-group-headers={GROUP_HEADER}",
        f"--requestheader-extra-headers-prefix={EXTRA_HEADER_PREFIX}",
        f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
        "--enable-aggregator-routing=false",
    ]


def kcm_args(
    binary: Path,
    *,
    pki: ClusterPKI,
    kubeconfig: Path,
    real_nodes: RealNodeFlags | None = None,
    node_monitor: NodeMonitor | None = None,
) -> list[str]:
    """kube-controller-manager with only `KCM_CONTROLLERS` (`REAL_NODE_CONTROLLERS` with real nodes,
    `VIRTUAL_NODE_CONTROLLERS` with a ``node_monitor`` for virtual ones), no serving port, no leader
    election."""
    controllers: tuple[str, ...]
    if real_nodes is not None:
        controllers = REAL_NODE_CONTROLLERS
        lifecycle = [
            f"--node-monitor-grace-period={real_nodes.node_monitor_grace}",
            f"--node-monitor-period={real_nodes.node_monitor_period}",
            "--concurrent-deployment-syncs=5",
        ]
    elif node_monitor is not None:
        controllers = VIRTUAL_NODE_CONTROLLERS
        lifecycle = [
            f"--node-monitor-grace-period={node_monitor.grace}",
            f"--node-monitor-period={node_monitor.period}",
        ]
    else:
        controllers, lifecycle = KCM_CONTROLLERS, []
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--controllers={','.join(controllers)}",
        *lifecycle,
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.serving_ca}",
        "--use-service-account-credentials=false",
        "--leader-elect=false",
        "--secure-port=0",
        "--concurrent-namespace-syncs=2",
        "--concurrent-gc-syncs=5",
        # Client-go's default 20 QPS makes the token controller fill a burst of fifty new token
        # Secrets in seconds; a cluster's first requests wait on it.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def scheduler_args(binary: Path, *, kubeconfig: Path) -> list[str]:
    """kube-scheduler with its own credentials, no leader election, no serving port."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",
    ]


def kube_proxy_args(binary: Path, *, config: Path) -> list[str]:
    return [str(binary), f"--config={config}", "--v=1"]

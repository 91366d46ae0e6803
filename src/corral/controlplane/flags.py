"""Command lines of etcd, kube-apiserver and kube-controller-manager for a local cluster.

Pure functions from paths and ports to argument lists, so the exact flags are unit-tested and
visible in one place. They follow the envtest/StartTestServer recipe: RBAC, everything bound to
127.0.0.1, service-account issuer and keys, no endpoint reconciler (there is no node to point the
``kubernetes`` Service at), the aggregation layer (request-header authentication from the
front-proxy CA, the front-proxy client certificate), and a KCM limited to the controllers tests observe.
"""

from __future__ import annotations

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
) -> list[str]:
    """kube-apiserver serving TLS on 127.0.0.1:``port``, storing under ``etcd_prefix``.

    ``webhook_version`` None leaves the TokenReview version to the apiserver's default (v1beta1),
    as Rancher wires kube-api-auth, which answers in v1beta1.
    """
    args = [
        str(binary),
        f"--etcd-servers={etcd_url}",
        f"--etcd-prefix={etcd_prefix}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.client_ca}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--allow-privileged=true",
        *aggregation_args(pki),
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


def kcm_args(binary: Path, *, pki: ClusterPKI, kubeconfig: Path) -> list[str]:
    """kube-controller-manager with only `KCM_CONTROLLERS`, no serving port, no leader election."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--controllers={','.join(KCM_CONTROLLERS)}",
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

"""Command lines of the local control plane: the flags the recipe needs, and only when asked."""

from __future__ import annotations

from pathlib import Path

from corral.controlplane import flags
from corral.controlplane.pki import ClusterPKI

PKI = ClusterPKI(folder=Path("/run/c1/pki"))


def as_dict(args: list[str]) -> dict[str, str]:
    return dict(
        arg.removeprefix("--").split("=", 1) if "=" in arg else (arg.removeprefix("--"), "")
        for arg in args[1:]
    )


def test_the_apiserver_binds_loopback_uses_rbac_and_the_cluster_pki() -> None:
    args = as_dict(
        flags.apiserver_args(
            Path("/bin/kube-apiserver"),
            pki=PKI,
            port=6443,
            etcd_url="http://127.0.0.1:2379",
            etcd_prefix="/corral/c1",
        )
    )
    assert args["bind-address"] == args["advertise-address"] == "127.0.0.1"
    assert args["secure-port"] == "6443"
    assert args["authorization-mode"] == "RBAC"
    assert args["etcd-prefix"] == "/corral/c1"
    assert args["client-ca-file"] == "/run/c1/pki/client-ca.crt"
    assert args["service-account-signing-key-file"] == "/run/c1/pki/sa.key"
    assert args["service-account-key-file"] == "/run/c1/pki/sa.pub"
    assert args["service-account-issuer"] == flags.SA_ISSUER
    assert args["endpoint-reconciler-type"] == "none"
    assert not any(name.startswith("authentication-token-webhook") for name in args)


def test_the_apiserver_configures_the_aggregation_layer_from_the_front_proxy_pki() -> None:
    args = as_dict(
        flags.apiserver_args(
            Path("/bin/kube-apiserver"), pki=PKI, port=1, etcd_url="http://127.0.0.1:2", etcd_prefix="/p"
        )
    )
    assert args["requestheader-client-ca-file"] == "/run/c1/pki/front-proxy-ca.crt"
    assert args["requestheader-client-ca-file"] != args["client-ca-file"]
    assert args["requestheader-allowed-names"] == "front-proxy-client"
    assert args["requestheader-username-headers"] == "X-Remote-User"
    assert args["requestheader-group-headers"] == "X-Remote-Group"
    assert args["requestheader-extra-headers-prefix"] == "X-Remote-Extra-"
    assert args["proxy-client-cert-file"] == "/run/c1/pki/front-proxy-client.crt"
    assert args["proxy-client-key-file"] == "/run/c1/pki/front-proxy-client.key"
    # Extensions on this machine are reached through ExternalName Services, which only cluster
    # routing resolves.
    assert args["enable-aggregator-routing"] == "false"


def test_a_webhook_config_adds_the_v1_token_webhook_with_its_cache_ttl() -> None:
    args = as_dict(
        flags.apiserver_args(
            Path("/bin/kube-apiserver"),
            pki=PKI,
            port=1,
            etcd_url="http://127.0.0.1:2",
            etcd_prefix="/p",
            webhook_config=Path("/run/webhook.yml"),
            webhook_cache_ttl="2s",
        )
    )
    assert args["authentication-token-webhook-config-file"] == "/run/webhook.yml"
    assert args["authentication-token-webhook-version"] == "v1"
    assert args["authentication-token-webhook-cache-ttl"] == "2s"


def test_without_a_webhook_version_the_apiserver_keeps_its_default_as_rancher_wires_kube_api_auth() -> None:
    args = as_dict(
        flags.apiserver_args(
            Path("/bin/kube-apiserver"),
            pki=PKI,
            port=1,
            etcd_url="http://127.0.0.1:2",
            etcd_prefix="/p",
            webhook_config=Path("/run/webhook.yml"),
            webhook_version=None,
        )
    )
    assert args["authentication-token-webhook-config-file"] == "/run/webhook.yml"
    assert "authentication-token-webhook-version" not in args


def test_the_controller_manager_runs_only_the_six_controllers_without_a_serving_port() -> None:
    args = as_dict(flags.kcm_args(Path("/bin/kcm"), pki=PKI, kubeconfig=Path("/run/kube_config_c1.yml")))
    assert args["controllers"].split(",") == list(flags.KCM_CONTROLLERS)
    assert len(flags.KCM_CONTROLLERS) == 6
    assert args["secure-port"] == "0"
    assert args["leader-elect"] == "false"
    assert args["service-account-private-key-file"] == "/run/c1/pki/sa.key"
    assert args["root-ca-file"] == "/run/c1/pki/serving-ca.crt"
    assert int(args["kube-api-qps"]) > 20  # above client-go's default, so token Secrets fill quickly


def test_etcd_listens_on_loopback_only_as_a_single_member() -> None:
    args = as_dict(
        flags.etcd_args(Path("/bin/etcd"), name="m", data_dir=Path("/d"), client_port=1, peer_port=2)
    )
    urls = [v for k, v in args.items() if k.endswith("-urls")]
    assert urls
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    assert args["initial-cluster"] == "m=http://127.0.0.1:2"


def test_virtual_nodes_get_the_node_lifecycle_controller_with_the_given_timing() -> None:
    monitor = flags.NodeMonitor(grace="12s", period="2s")
    args = as_dict(
        flags.kcm_args(Path("/bin/kcm"), pki=PKI, kubeconfig=Path("/run/k.yml"), node_monitor=monitor)
    )
    assert args["controllers"].split(",") == [*flags.KCM_CONTROLLERS, "node-lifecycle-controller"]
    assert args["node-monitor-grace-period"] == "12s"
    assert args["node-monitor-period"] == "2s"

"""Real nodes' configuration as rendered: containerd, CNI, kubelet, kube-proxy, the address plan,
and the control-plane flags they need; no root, no processes."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from corral.controlplane import flags, nodeconf
from corral.controlplane.pki import ClusterPKI

RUN = Path("/var/tmp/run-a")


def _net(index: int = 0, octet: int = 201) -> nodeconf.ClusterNet:
    return nodeconf.cluster_net(RUN, cluster="c1", index=index, second_octet=octet)


def _node(index: int = 1, net: nodeconf.ClusterNet | None = None) -> nodeconf.NodeLayout:
    return nodeconf.node_layout(
        RUN, cluster="c1", name=f"c1-n{index}", index=index, net=net or _net(), kubelet_port=12250
    )


def test_the_address_plan_gives_each_node_its_own_pod_cidr_inside_the_cluster_network() -> None:
    net = _net()
    supernet = ipaddress.IPv4Network(net.supernet)
    cidrs = [ipaddress.IPv4Network(net.pod_cidr(i)) for i in range(3)]
    assert all(cidr.subnet_of(supernet) for cidr in cidrs)
    assert len(set(cidrs)) == 3
    for i, cidr in enumerate(cidrs):
        assert ipaddress.IPv4Address(net.node_ip(i)) in cidr
    link = ipaddress.IPv4Network(f"{net.host_ip}/{net.link_prefix}", strict=False)
    assert ipaddress.IPv4Address(net.ns_ip) in link
    assert not any(link.overlaps(cidr) for cidr in cidrs)


def test_names_fit_the_kernel_limits_and_differ_between_runs_and_clusters() -> None:
    first, second = _net(0), _net(1)
    other_run = nodeconf.cluster_net(Path("/var/tmp/run-b"), cluster="c1", index=0, second_octet=201)
    for net in (first, second, other_run):
        assert len(net.host_if) <= 15  # IFNAMSIZ - 1
    assert len({first.host_if, second.host_if, other_run.host_if}) == 3
    assert len({first.netns, second.netns, other_run.netns}) == 3
    node = _node()
    assert node.cgroup == f"/corral-{nodeconf.run_id(RUN)}/c1-n1"
    assert node.runtime_cgroup != node.cgroup
    assert not node.runtime_cgroup.startswith(node.cgroup + "/")  # killing Pods spares the runtime
    assert len(str(node.kubelet_dir / "pod-resources" / "1234567890")) < 108


def test_free_supernets_skip_every_network_a_host_route_overlaps() -> None:
    routes = ["10.200.0.0/16", "10.201.3.0/24", "10.0.0.0/8x", "0.0.0.0/0", "192.168.1.0/24"]
    assert nodeconf.free_supernets(routes, count=2) == [202, 203]
    with pytest.raises(ValueError, match="no 3 free"):
        nodeconf.free_supernets(["10.0.0.0/8"], count=3)


def test_containerd_config_keeps_everything_in_the_nodes_folders_and_restricts_oom_score_adj() -> None:
    node = _node()
    config = tomllib.loads(nodeconf.containerd_config(node, sandbox_image="corral.local/pause:3.10"))
    assert config["version"] == 3
    assert config["root"].startswith(str(node.folder))
    assert config["state"] == str(node.containerd_state)
    assert config["grpc"]["address"] == str(node.socket)
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    assert runc["BinaryName"] == str(nodeconf.RUNC)
    assert runc["Root"].startswith(str(node.short))
    assert runtime["cni"]["conf_dir"] == str(node.cni_dir)
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "corral.local/pause:3.10"
    assert plugins["io.containerd.nri.v1.nri"]["disable"] is True


def test_the_cni_config_bridges_the_pod_cidr_without_masquerade() -> None:
    node = _node(2)
    config = json.loads(nodeconf.cni_conflist(node))
    (bridge,) = config["plugins"]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == node.bridge
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.pod_cidr, "gateway": node.node_ip}]]
    assert bridge["ipam"]["dataDir"].startswith(str(node.folder))


def test_the_kubelet_config_is_cgroupfs_under_the_nodes_cgroup_on_its_own_address_and_port() -> None:
    node = _node()
    config = yaml.safe_load(nodeconf.kubelet_config(node, client_ca=Path("/pki/client-ca.crt")))
    assert config["kind"] == "KubeletConfiguration"
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == node.cgroup
    assert config["failCgroupV1"] is False
    assert config["failSwapOn"] is False
    assert (config["address"], config["port"]) == (node.node_ip, 12250)
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["x509"]["clientCAFile"] == "/pki/client-ca.crt"
    assert config["authorization"]["mode"] == "Webhook"
    assert config["containerRuntimeEndpoint"] == f"unix://{node.socket}"
    assert config["nodeLeaseDurationSeconds"] == nodeconf.NODE_LEASE_SECONDS
    args = nodeconf.kubelet_args(Path("/bin/kubelet"), node)
    assert f"--hostname-override={node.name}" in args
    assert f"--node-ip={node.node_ip}" in args
    assert f"--root-dir={node.kubelet_dir}" in args


def test_kube_proxy_runs_iptables_mode_and_leaves_host_sysctls_alone() -> None:
    config = yaml.safe_load(nodeconf.kube_proxy_config(kubeconfig=Path("/k"), hostname="c1-n0"))
    assert config["mode"] == "iptables"
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["iptables"]["masqueradeAll"] is False
    assert "clusterCIDR" not in config  # no masquerade of traffic from outside a cluster CIDR


def test_a_node_process_joins_its_cgroups_then_the_namespace() -> None:
    argv = nodeconf.in_cgroups_and_netns(
        ["/bin/kubelet", "--v=1"],
        procs_files=[Path("/cg/a/cgroup.procs"), Path("/cg/b/cgroup.procs")],
        netns="ns1",
    )
    assert argv[0] == "/bin/sh"
    assert "/cg/a/cgroup.procs /cg/b/cgroup.procs" in argv[2]
    assert argv[-5:] == ["nsenter", "--net=/run/netns/ns1", "--", "/bin/kubelet", "--v=1"]


def test_the_apiserver_with_real_nodes_binds_the_host_address_and_authorizes_nodes() -> None:
    pki = ClusterPKI(folder=Path("/run/c1/pki"))
    real = flags.RealNodeFlags(
        bind_address="10.201.255.1",
        kubelet_client_cert=Path("/k.crt"),
        kubelet_client_key=Path("/k.key"),
        toleration_seconds=10,
        node_monitor_grace="12s",
        node_monitor_period="2s",
    )
    args = flags.apiserver_args(
        Path("/bin/kube-apiserver"),
        pki=pki,
        port=6443,
        etcd_url="http://127.0.0.1:2379",
        etcd_prefix="/c1",
        real_nodes=real,
    )
    assert "--bind-address=10.201.255.1" in args
    assert "--advertise-address=10.201.255.1" in args
    assert "--authorization-mode=Node,RBAC" in args
    assert "--enable-admission-plugins=NodeRestriction" in args
    assert "--kubelet-preferred-address-types=InternalIP" in args
    assert "--endpoint-reconciler-type=lease" in args
    kcm = flags.kcm_args(Path("/bin/kcm"), pki=pki, kubeconfig=Path("/k"), real_nodes=real)
    controllers = next(a for a in kcm if a.startswith("--controllers=")).split("=", 1)[1].split(",")
    for needed in (
        "deployment-controller",
        "daemonset-controller",
        "node-lifecycle-controller",
        "taint-eviction-controller",
        "endpointslice-controller",
    ):
        assert needed in controllers
    assert "--node-monitor-grace-period=12s" in kcm
    virtual = flags.kcm_args(Path("/bin/kcm"), pki=pki, kubeconfig=Path("/k"))
    assert f"--controllers={','.join(flags.KCM_CONTROLLERS)}" in virtual

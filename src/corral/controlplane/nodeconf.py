"""The layout and configuration files of real nodes, as pure functions (unit-tested, no side effects).

Each cluster with real nodes gets a network namespace of its own and a /16 of 10.0.0.0/8 that no
route of the host uses: a veth pair joins the namespace to the host (``10.B.255.1`` on the host,
where the cluster's kube-apiserver listens, ``10.B.255.2`` inside), and node ``i`` owns the bridge
``cbr<i>`` with ``10.B.i.1/24``, which is its InternalIP and its Pod CIDR's gateway. Nodes of one
cluster reach each other's Pods through the namespace's own routing; nothing is masqueraded and no
default route exists, so no Pod traffic leaves the machine. A node writes into its folder of the
run, except what holds unix sockets (the kubelet's root folder, containerd's state and socket),
whose paths must stay under 108 bytes: that lives in ``/run/corral/<run id>/<number>``. Its cgroups
are ``/corral-<run id>/<node>`` (Pods: the kubelet's cgroupRoot) and ``/corral-<run id>/<node>.runtime``
(kubelet, containerd and the shims).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from corral.controlplane.flags import SERVICE_CIDR

#: Timings of the node lifecycle, shorter than Kubernetes' defaults so that faults show in seconds:
#: a kubelet renews its Lease every 2 s (a quarter of 8 s), the node lifecycle controller marks a
#: node NotReady/Unknown 12 s after its last renewal and Pods tolerate that for 10 s before eviction.
NODE_LEASE_SECONDS = 8
NODE_STATUS_UPDATE = "4s"
NODE_MONITOR_GRACE = "12s"
NODE_MONITOR_PERIOD = "2s"
TOLERATION_SECONDS = 10

CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")


#: Short folders for unix sockets, one per run: ``/run/corral/<run id>``.
SHORT_ROOT = Path("/run/corral")


def run_id(run_dir: Path) -> str:
    """Eight hex digits naming the host objects of one run folder (netns, interfaces, cgroups)."""
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterNet:
    """The network of one cluster's real nodes: its namespace, veth pair and /16."""

    cluster: str
    netns: str
    host_if: str
    ns_if: str
    supernet: str  # 10.B.0.0/16

    @property
    def _base(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.supernet)

    def _address(self, third: int, fourth: int) -> str:
        octets = str(self._base.network_address).split(".")
        return f"{octets[0]}.{octets[1]}.{third}.{fourth}"

    @property
    def host_ip(self) -> str:
        """The host end of the veth: the cluster's kube-apiserver listens here."""
        return self._address(255, 1)

    @property
    def ns_ip(self) -> str:
        return self._address(255, 2)

    @property
    def link_prefix(self) -> int:
        return 24

    def node_ip(self, index: int) -> str:
        return self._address(index, 1)

    def pod_cidr(self, index: int) -> str:
        return self._address(index, 0) + "/24"


def cluster_net(run_dir: Path, *, cluster: str, index: int, second_octet: int) -> ClusterNet:
    """Names and addresses of cluster number ``index`` of a run, in ``10.<second_octet>.0.0/16``."""
    if not 0 <= second_octet <= 255:
        raise ValueError(f"second octet out of range: {second_octet}")
    rid = run_id(run_dir)
    return ClusterNet(
        cluster=cluster,
        netns=f"corral-{rid}-{index}",
        host_if=f"crl{rid}{index:02d}",
        ns_if="uplink",
        supernet=f"10.{second_octet}.0.0/16",
    )


def free_supernets(used_routes: list[str], *, count: int, low: int = 200, high: int = 254) -> list[int]:
    """Second octets B in [low, high] whose 10.B.0.0/16 overlaps none of the host's routes."""
    networks = []
    for route in used_routes:
        try:
            network = ipaddress.IPv4Network(route, strict=False)
        except ValueError:
            continue
        if network.prefixlen > 0:  # a default route overlaps everything and says nothing
            networks.append(network)
    chosen: list[int] = []
    for octet in range(low, high + 1):
        candidate = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if not any(candidate.overlaps(net) for net in networks):
            chosen.append(octet)
            if len(chosen) == count:
                return chosen
    raise ValueError(f"no {count} free /16 networks in 10.{low}-{high}.0.0 beside the host's routes")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLayout:
    """Where one real node keeps everything, and how it is named and addressed."""

    name: str
    cluster: str
    index: int
    folder: Path
    short: Path
    """A short folder for what holds unix sockets (kubelet root folder, containerd state)."""
    net: ClusterNet
    cgroup: str  # /corral-<run id>/<node>
    kubelet_port: int
    roles: tuple[str, ...] = ()

    @property
    def node_ip(self) -> str:
        return self.net.node_ip(self.index)

    @property
    def pod_cidr(self) -> str:
        return self.net.pod_cidr(self.index)

    @property
    def bridge(self) -> str:
        return f"cbr{self.index}"

    @property
    def runtime_cgroup(self) -> str:
        return f"{self.cgroup}.runtime"

    @property
    def socket(self) -> Path:
        return self.short / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.short / "kubelet"

    @property
    def containerd_state(self) -> Path:
        return self.short / "containerd"

    @property
    def containerd_config_path(self) -> Path:
        return self.folder / "containerd.toml"

    @property
    def kubelet_config_path(self) -> Path:
        return self.folder / "kubelet.yaml"

    @property
    def kubeconfig_path(self) -> Path:
        return self.folder / "kubeconfig"

    @property
    def cni_dir(self) -> Path:
        return self.folder / "cni"


def node_layout(
    run_dir: Path,
    *,
    cluster: str,
    name: str,
    index: int,
    net: ClusterNet,
    kubelet_port: int,
    roles: tuple[str, ...] = (),
) -> NodeLayout:
    return NodeLayout(
        name=name,
        cluster=cluster,
        index=index,
        folder=run_dir / "nodes" / name,
        short=SHORT_ROOT / run_id(run_dir) / str(net_index(net) * 100 + index),
        net=net,
        cgroup=f"/corral-{run_id(run_dir)}/{name}",
        kubelet_port=kubelet_port,
        roles=roles,
    )


def net_index(net: ClusterNet) -> int:
    """The cluster's number within its run, from its namespace's name."""
    return int(net.netns.rsplit("-", 1)[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _toml(tables: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]", *(f"  {key} = {_toml_value(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def containerd_config(node: NodeLayout, *, sandbox_image: str) -> str:
    """containerd 2.x (config version 3): its own root, state and socket; CRI with this node's CNI.

    ``restrict_oom_score_adj``: the Pod sandbox asks for oom_score_adj -998, which needs
    CAP_SYS_RESOURCE; where the machine withholds it, runc fails without this setting.
    """
    state = node.containerd_state
    cri_runtime = 'plugins."io.containerd.cri.v1.runtime"'
    return _toml(
        {
            "grpc": {"address": str(node.socket)},
            "ttrpc": {"address": str(node.socket) + ".ttrpc"},
            "metrics": {"address": ""},
            'plugins."io.containerd.cri.v1.images"': {"snapshotter": "overlayfs"},
            'plugins."io.containerd.cri.v1.images".pinned_images': {"sandbox": sandbox_image},
            cri_runtime: {
                "restrict_oom_score_adj": True,
                "netns_mounts_under_state_dir": True,
                "enable_cdi": False,
            },
            f"{cri_runtime}.containerd": {"default_runtime_name": "runc"},
            f"{cri_runtime}.containerd.runtimes.runc": {"runtime_type": "io.containerd.runc.v2"},
            f"{cri_runtime}.containerd.runtimes.runc.options": {
                "SystemdCgroup": False,
                "BinaryName": str(RUNC),
                "Root": str(state / "runc"),
            },
            f"{cri_runtime}.cni": {"bin_dirs": [str(CNI_BIN_DIR)], "conf_dir": str(node.cni_dir)},
            'plugins."io.containerd.grpc.v1.cri"': {"disable_tcp_service": True},
            'plugins."io.containerd.internal.v1.opt"': {"path": str(node.folder / "containerd" / "opt")},
            'plugins."io.containerd.nri.v1.nri"': {"disable": True},
        },
        {
            "version": 3,
            "root": str(node.folder / "containerd" / "root"),
            "state": str(state),
            "disabled_plugins": [
                "io.containerd.tracing.processor.v1.otlp",
                "io.containerd.internal.v1.tracing",
            ],
        },
    )


def cni_conflist(node: NodeLayout) -> str:
    """The node's bridge with its Pod CIDR; no masquerade, one route (the default via the gateway)."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": f"corral-{node.name}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": node.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.pod_cidr, "gateway": node.node_ip}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(node.folder / "cni-ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_config(node: NodeLayout, *, client_ca: Path) -> str:
    """KubeletConfiguration for a node that shares the machine with others.

    cgroupfs under the node's own cgroupRoot (cgroup v1 is accepted: ``failCgroupV1: false``),
    swap tolerated, its own port on its own address, no read-only or healthz port, client
    certificates from the cluster's client CA and authorization by the apiserver; image garbage
    collection off (the images are imported, never pulled) and eviction thresholds at their floor.
    """
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.node_ip,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup,
        "cgroupsPerQOS": True,
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "podLogsDir": str(node.folder / "pod-logs"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "nodeLeaseDurationSeconds": NODE_LEASE_SECONDS,
        "nodeStatusUpdateFrequency": NODE_STATUS_UPDATE,
        "serializeImagePulls": False,
        "maxPods": 110,
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
    }
    return yaml.safe_dump(config, sort_keys=True)


def kubelet_args(kubelet: Path, node: NodeLayout) -> list[str]:
    return [
        str(kubelet),
        f"--config={node.kubelet_config_path}",
        f"--kubeconfig={node.kubeconfig_path}",
        f"--root-dir={node.kubelet_dir}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.node_ip}",
        "--v=1",
    ]


def kube_proxy_config(*, kubeconfig: Path, hostname: str) -> str:
    """kube-proxy in iptables mode inside the cluster's namespace; it leaves host-wide sysctls alone."""
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "hostnameOverride": hostname,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "healthzBindAddress": "",
        "metricsBindAddress": "",
        "iptables": {"masqueradeAll": False},
    }
    return yaml.safe_dump(config, sort_keys=True)


def in_cgroups_and_netns(argv: list[str], *, procs_files: list[Path], netns: str) -> list[str]:
    """``argv`` run from a shell that first joins the given cgroups, then the network namespace."""
    script = 'for f in $CORRAL_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"'
    joined = " ".join(str(path) for path in procs_files)
    return [
        "/bin/sh",
        "-c",
        f"CORRAL_CGROUP_PROCS='{joined}'; {script}",
        "corral-node",
        "nsenter",
        f"--net=/run/netns/{netns}",
        "--",
        *argv,
    ]


__all__ = [
    "NODE_MONITOR_GRACE",
    "NODE_MONITOR_PERIOD",
    "SERVICE_CIDR",
    "TOLERATION_SECONDS",
    "ClusterNet",
    "NodeLayout",
]

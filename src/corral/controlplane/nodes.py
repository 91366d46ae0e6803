"""Real nodes: per scenario node a containerd and a kubelet, their network, and faults on them.

`check_host` says in one sentence why real nodes cannot run here (not root, no cgroup v1
hierarchies, no overlayfs, no network namespaces, veth or bridges). `RealNodes` sets up each
cluster's network namespace (`corral.controlplane.nodeconf` has the plan), starts every node's
containerd and kubelet inside it, each in its own cgroups, imports the locally built images, and
runs one kube-proxy per cluster there. Everything it adds to the host goes through
`corral.controlplane.hostnet`, which records it first and removes it on ``down``.

`stop_node`, `kill_node` and `start_node` are the node faults, usable from any process that knows
the run folder (the CLI's ``corral fault node``, tests, load runs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import filelock

from corral.controlplane import build, hostnet, images, nodeconf
from corral.controlplane.nodeconf import ClusterNet, NodeLayout
from corral.controlplane.pki import ClusterPKI
from corral.controlplane.processes import ProcessGroup, free_port, is_same_process, read_state, tail
from corral.errors import ConfigError, ControlPlaneError, KubeAPIError
from corral.k8s import KubeClient, KubeConfig
from corral.k8s.kubeconfig import write_private
from corral.model.scenario import Cluster

logger = logging.getLogger(__name__)

Report = Callable[[str], None]
NodeMode = Literal["virtual", "real"]
NODE_MODES: tuple[NodeMode, ...] = ("virtual", "real")
_NET_LOCK = Path("/run/corral-net.lock")
_REQUIRED_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer")


# -- can real nodes run here? --------------------------------------------------------------------


def check_host() -> None:
    """Raise `ControlPlaneError` in one sentence when real nodes cannot run on this machine."""
    if os.uname().sysname != "Linux":
        raise ControlPlaneError("real nodes need Linux (network namespaces, cgroups, overlayfs)")
    if os.geteuid() != 0:
        raise ControlPlaneError("real nodes need root: run as root, or use --nodes virtual")
    names = {path.name for path in hostnet.v1_hierarchies()}
    missing = [c for c in _REQUIRED_CONTROLLERS if c not in names]
    if missing:
        raise ControlPlaneError(
            "real nodes need the cgroup v1 hierarchies under /sys/fs/cgroup (this machine lacks "
            f"{', '.join(missing)}); pure cgroup v2 machines are not supported yet"
        )
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems.split():
        raise ControlPlaneError("real nodes need overlayfs in the kernel (containerd's snapshotter)")
    probe = f"corral-probe-{os.getpid()}"
    try:
        hostnet.ip("netns", "add", probe)
        hostnet.ip("link", "add", "probe0", "type", "veth", "peer", "name", "probe1", netns=probe)
        hostnet.ip("link", "add", "probebr", "type", "bridge", netns=probe)
    except ControlPlaneError as e:
        raise ControlPlaneError(f"real nodes need network namespaces, veth pairs and bridges: {e}") from e
    finally:
        hostnet.ip("netns", "del", probe, check=False)


# -- bring-up ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterNodes:
    """The real nodes of one cluster as brought up: its network and each node's layout."""

    net: ClusterNet
    nodes: tuple[NodeLayout, ...]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _client_kubeconfig(pki: ClusterPKI, *, server: str, user: str, groups: Sequence[str], path: Path) -> Path:
    pair = pki.issue_client(user, tuple(groups))
    config = KubeConfig(
        server=server,
        ca_pem=pki.serving_ca.read_bytes(),
        cert_pem=pair.cert_pem,
        key_pem=pair.key_pem,
        cluster_name="corral",
        user_name=user,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return config.write(path, context="corral")


def kubelet_client_pair(pki: ClusterPKI) -> tuple[Path, Path]:
    """The certificate the apiserver shows kubelets (logs, exec, port-forward), in the cluster's PKI."""
    cert, key = pki.folder / "apiserver-kubelet-client.crt", pki.folder / "apiserver-kubelet-client.key"
    if not cert.is_file():
        pair = pki.issue_client("kube-apiserver-kubelet-client", ("system:masters",))
        cert.write_bytes(pair.cert_pem)
        write_private(key, pair.key_pem)
    return cert, key


class RealNodes:
    """Brings up and tracks the real nodes of one run folder."""

    def __init__(self, run_dir: Path, *, binaries: build.Built, report: Report) -> None:
        self.run_dir = run_dir
        self.binaries = binaries
        self.report = report
        self.host = hostnet.HostState(run_dir)

    def prepare_networks(self, clusters: Sequence[Cluster]) -> dict[str, ClusterNet]:
        """A namespace, veth pair and /16 per cluster, chosen and made under a machine-wide lock."""
        self.host.add_mount_root(self.run_dir)
        nets: dict[str, ClusterNet] = {}
        with filelock.FileLock(str(_NET_LOCK)):
            try:
                octets = nodeconf.free_supernets(hostnet.host_routes(), count=len(clusters))
            except ValueError as e:
                raise ControlPlaneError(f"real nodes need free addresses: {e}") from e
            for index, (cluster, octet) in enumerate(zip(clusters, octets, strict=True)):
                net = nodeconf.cluster_net(
                    self.run_dir, cluster=cluster.name, index=index, second_octet=octet
                )
                self._make_network(net)
                nets[cluster.name] = net
        return nets

    def _make_network(self, net: ClusterNet) -> None:
        self.host.add_netns(net.netns)
        self.host.add_veth(net.host_if, peer=net.ns_if, netns=net.netns)
        hostnet.ip("addr", "add", f"{net.host_ip}/{net.link_prefix}", "dev", net.host_if)
        hostnet.ip("link", "set", net.host_if, "up")
        hostnet.ip("link", "set", "lo", "up", netns=net.netns)
        hostnet.ip("addr", "add", f"{net.ns_ip}/{net.link_prefix}", "dev", net.ns_if, netns=net.netns)
        hostnet.ip("link", "set", net.ns_if, "up", netns=net.netns)
        # The host reaches node and Pod addresses through the namespace; the namespace sends only
        # Service addresses (rewritten by kube-proxy before they leave) towards the host.
        hostnet.ip("route", "add", net.supernet, "via", net.ns_ip, "dev", net.host_if)
        hostnet.ip("route", "add", nodeconf.SERVICE_CIDR, "dev", net.ns_if, netns=net.netns)
        hostnet.in_netns(net.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def layouts(self, cluster: Cluster, net: ClusterNet) -> tuple[NodeLayout, ...]:
        return tuple(
            nodeconf.node_layout(
                self.run_dir,
                cluster=cluster.name,
                name=node.name,
                index=index,
                net=net,
                kubelet_port=free_port(),
                roles=node.roles,
            )
            for index, node in enumerate(cluster.nodes)
        )

    def start_cluster_nodes(
        self,
        group: ProcessGroup,
        *,
        cluster: Cluster,
        net: ClusterNet,
        pki: ClusterPKI,
        server: str,
        archives: Sequence[images.ImageArchive],
    ) -> ClusterNodes:
        layouts = self.layouts(cluster, net)
        for layout in layouts:
            self._prepare_node(layout, pki=pki, server=server)
            launch = _launch_spec(layout, self.binaries, self.host)
            _write(layout.folder / "launch.json", json.dumps(launch, indent=2))
            _start_containerd(group, layout, launch)
            started = time.monotonic()
            for archive in archives:
                import_image(self.binaries["ctr"], layout.socket, archive)
            self.report(f"{layout.name}: containerd up, images imported in {time.monotonic() - started:.1f}s")
            _start_kubelet(group, layout, launch)
        self._start_kube_proxy(
            group, cluster=cluster, net=net, pki=pki, server=server, hostname=layouts[0].name
        )
        return ClusterNodes(net=net, nodes=layouts)

    def _prepare_node(self, layout: NodeLayout, *, pki: ClusterPKI, server: str) -> None:
        self.host.add_cgroup(layout.cgroup)
        self.host.add_cgroup(layout.runtime_cgroup)
        self.host.add_folder(layout.short.parent)
        self.host.add_folder(layout.short)
        ns = layout.net.netns
        if not hostnet.ip("link", "show", layout.bridge, netns=ns, check=False):
            hostnet.ip("link", "add", layout.bridge, "type", "bridge", netns=ns)
            hostnet.ip("addr", "add", f"{layout.node_ip}/24", "dev", layout.bridge, netns=ns)
            hostnet.ip("link", "set", layout.bridge, "up", netns=ns)
        for folder in ("containerd", "kubelet", "pod-logs", "cni-ipam"):
            (layout.folder / folder).mkdir(parents=True, exist_ok=True)
        _write(
            layout.containerd_config_path,
            nodeconf.containerd_config(layout, sandbox_image=images.PAUSE_IMAGE),
        )
        _write(layout.cni_dir / "10-corral.conflist", nodeconf.cni_conflist(layout))
        _write(layout.kubelet_config_path, nodeconf.kubelet_config(layout, client_ca=pki.client_ca))
        _client_kubeconfig(
            pki,
            server=server,
            user=f"system:node:{layout.name}",
            groups=("system:nodes",),
            path=layout.kubeconfig_path,
        )

    def _start_kube_proxy(
        self,
        group: ProcessGroup,
        *,
        cluster: Cluster,
        net: ClusterNet,
        pki: ClusterPKI,
        server: str,
        hostname: str,
    ) -> None:
        folder = self.run_dir / cluster.name / "kube-proxy"
        kubeconfig = _client_kubeconfig(
            pki, server=server, user="system:kube-proxy", groups=(), path=folder / "kubeconfig"
        )
        config = _write(
            folder / "config.yaml", nodeconf.kube_proxy_config(kubeconfig=kubeconfig, hostname=hostname)
        )
        cgroup = f"/corral-{nodeconf.run_id(self.run_dir)}/kube-proxy-{cluster.name}"
        self.host.add_cgroup(cgroup)
        argv = nodeconf.in_cgroups_and_netns(
            [str(self.binaries["kube-proxy"]), f"--config={config}", "--v=1"],
            procs_files=self.host.procs_files(cgroup),
            netns=net.netns,
        )
        group.start(f"kube-proxy-{cluster.name}", argv, role="kube-proxy", env=_node_env(self.binaries))


def scheduler_kubeconfig(pki: ClusterPKI, *, server: str, folder: Path) -> Path:
    return _client_kubeconfig(
        pki, server=server, user="system:kube-scheduler", groups=(), path=folder / "kube-scheduler.kubeconfig"
    )


def _node_env(binaries: build.Built) -> dict[str, str]:
    # containerd finds its own shim first, runc and the CNI tools from the distribution after it.
    shim_dir = str(binaries["containerd-shim-runc-v2"].parent)
    path = ":".join([shim_dir, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return {**os.environ, "PATH": path}


def _launch_spec(layout: NodeLayout, binaries: build.Built, host: hostnet.HostState) -> dict[str, Any]:
    """How to start a node's processes again later (a restart after a fault), saved in its folder."""

    def wrap(argv: list[str]) -> list[str]:
        return nodeconf.in_cgroups_and_netns(
            argv, procs_files=host.procs_files(layout.runtime_cgroup), netns=layout.net.netns
        )

    return {
        "node": layout.name,
        "cluster": layout.cluster,
        "cgroup": layout.cgroup,
        "runtime_cgroup": layout.runtime_cgroup,
        "socket": str(layout.socket),
        "env_path": _node_env(binaries)["PATH"],
        "containerd": wrap([str(binaries["containerd"]), f"--config={layout.containerd_config_path}"]),
        "kubelet": wrap(nodeconf.kubelet_args(binaries["kubelet"], layout)),
    }


def _start_containerd(group: ProcessGroup, layout: NodeLayout | None, launch: Mapping[str, Any]) -> None:
    node = str(launch["node"])
    name = f"containerd-{node}"
    socket = Path(str(launch["socket"]))
    env = {**os.environ, "PATH": str(launch["env_path"])}
    group.start(name, list(launch["containerd"]), role="containerd", env=env, node=node)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        group.check_alive(name)
        if socket.exists():
            return
        time.sleep(0.1)
    raise ControlPlaneError(
        f"containerd of {node} opened no socket in 30s; last lines:\n{tail(group.log_path(name))}"
    )


def _start_kubelet(group: ProcessGroup, layout: NodeLayout | None, launch: Mapping[str, Any]) -> None:
    node = str(launch["node"])
    env = {**os.environ, "PATH": str(launch["env_path"])}
    group.start(f"kubelet-{node}", list(launch["kubelet"]), role="kubelet", env=env, node=node)


def import_image(ctr: Path, socket: Path, archive: images.ImageArchive) -> None:
    argv = [
        str(ctr),
        "-a",
        str(socket),
        "-n",
        "k8s.io",
        "images",
        "import",
        "--base-name",
        archive.base_name,
        str(archive.archive),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise ControlPlaneError(f"cannot import {archive.reference} into {socket}: {result.stderr.strip()}")


def wait_nodes_ready(
    client: KubeClient, names: Sequence[str], *, timeout_seconds: float, group: ProcessGroup
) -> None:
    """Wait until every named Node reports Ready; a kubelet that exits meanwhile fails at once."""
    deadline = time.monotonic() + timeout_seconds
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            group.check_alive(f"kubelet-{name}")
            if node_ready(client, name):
                pending.discard(name)
        if pending:
            time.sleep(0.3)
    if pending:
        first = sorted(pending)[0]
        raise ControlPlaneError(
            f"node(s) {', '.join(sorted(pending))} not Ready after {timeout_seconds:g}s; last lines of "
            f"kubelet-{first}:\n{tail(group.log_path(f'kubelet-{first}'))}"
        )


def node_ready(client: KubeClient, name: str) -> bool:
    """True when the Node exists and its Ready condition is True."""
    try:
        node = client.get(f"/api/v1/nodes/{name}")
    except KubeAPIError:
        return False
    for condition in node.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def label_roles(client: KubeClient, cluster: Cluster) -> None:
    """Role labels the kubelet may not set on itself (NodeRestriction), set by the admin."""
    for node in cluster.nodes:
        labels = {f"node-role.kubernetes.io/{role}": "true" for role in node.roles}
        client.request("PATCH", f"/api/v1/nodes/{node.name}", body={"metadata": {"labels": labels}})


# -- faults --------------------------------------------------------------------------------------


def _launch(run_dir: Path, node: str) -> dict[str, Any]:
    path = run_dir.resolve() / "nodes" / node / "launch.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        names = ", ".join(_known_nodes(run_dir)) or "none"
        raise ConfigError(f"no real node {node!r} in {run_dir} (real nodes: {names})") from None
    except (OSError, ValueError) as e:
        raise ControlPlaneError(f"cannot read {path}: {e}") from e
    return dict(data)


def _known_nodes(run_dir: Path) -> list[str]:
    folder = run_dir / "nodes"
    return sorted(p.parent.name for p in folder.glob("*/launch.json")) if folder.is_dir() else []


def _node_records(run_dir: Path, node: str) -> list[str]:
    return [r.name for r in read_state(run_dir) if r.node == node]


def node_running(run_dir: Path, node: str) -> bool:
    """True while the node's kubelet recorded in the run folder is alive."""
    return any(r.node == node and r.role == "kubelet" and is_same_process(r) for r in read_state(run_dir))


def stop_node(run_dir: Path, node: str, *, timeout_seconds: float = 20.0) -> None:
    """Stop a node cleanly: its kubelet, then its containers (SIGTERM, then SIGKILL), then containerd."""
    run_dir = run_dir.resolve()
    launch = _launch(run_dir, node)
    _signal_role(run_dir, node, "kubelet", signal.SIGTERM, timeout_seconds=timeout_seconds)
    pods = str(launch["cgroup"])
    hostnet.kill_cgroup(pods, sig=signal.SIGTERM, timeout_seconds=timeout_seconds / 2)
    hostnet.kill_cgroup(pods, sig=signal.SIGKILL, timeout_seconds=5)
    _signal_role(run_dir, node, "containerd", signal.SIGTERM, timeout_seconds=timeout_seconds)
    hostnet.kill_cgroup(str(launch["runtime_cgroup"]), sig=signal.SIGKILL, timeout_seconds=5)
    ProcessGroup.resume(run_dir).forget(_node_records(run_dir, node))
    logger.info("stopped node %s", node)


def kill_node(run_dir: Path, node: str) -> None:
    """Kill a node hard, as a power loss would: SIGKILL to every process of it at once."""
    run_dir = run_dir.resolve()
    launch = _launch(run_dir, node)
    for cgroup in (str(launch["runtime_cgroup"]), str(launch["cgroup"])):
        for pid in hostnet.cgroup_pids(cgroup):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for cgroup in (str(launch["runtime_cgroup"]), str(launch["cgroup"])):
        hostnet.kill_cgroup(cgroup, sig=signal.SIGKILL, timeout_seconds=10)
    ProcessGroup.resume(run_dir).forget(_node_records(run_dir, node))
    logger.info("killed node %s", node)


def start_node(run_dir: Path, node: str) -> None:
    """Start a stopped or killed node again with its saved settings (its images are still imported)."""
    run_dir = run_dir.resolve()
    launch = _launch(run_dir, node)
    if node_running(run_dir, node):
        raise ControlPlaneError(f"node {node} is running; stop or kill it first")
    state = read_state_detached(run_dir)
    group = ProcessGroup.resume(run_dir, detached=state)
    group.forget(_node_records(run_dir, node))
    Path(str(launch["socket"])).unlink(missing_ok=True)
    _start_containerd(group, None, launch)
    _start_kubelet(group, None, launch)
    logger.info("started node %s", node)


def read_state_detached(run_dir: Path) -> bool:
    """Whether the run's processes outlive the interpreter that started them (``corral cluster up``)."""
    from corral.controlplane.processes import read_state_document

    return bool(read_state_document(run_dir).get("detached", True))


def _signal_role(run_dir: Path, node: str, role: str, sig: signal.Signals, *, timeout_seconds: float) -> None:
    records = [r for r in read_state(run_dir) if r.node == node and r.role == role and is_same_process(r)]
    for record in records:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and any(is_same_process(r) for r in records):
        time.sleep(0.1)
    for record in records:
        if is_same_process(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)

"""The ``local`` provider: real control planes as processes on this machine, one per cluster.

``up`` reaps whatever a crashed run left in the run folder, generates each cluster's PKI,
starts etcd (one shared by all clusters under distinct ``--etcd-prefix``es, or one per cluster),
one kube-apiserver and one trimmed kube-controller-manager per cluster, waits for ``/readyz``
as admin, writes ``kube_config_<cluster>.yml`` (0600), creates the Node objects of the cluster's
virtual nodes and waits for the ``default`` ServiceAccount (proof that the KCM works). A failed
step stops everything it started and raises `ControlPlaneError` with the failing log's tail.
A file lock keeps two ``up``/``down`` of the same folder apart; different folders run at once.

A cluster given per-node webhooks (``node_webhooks``, the Authorized Cluster Endpoint) runs one
kube-apiserver per control-plane node instead, all on the cluster's etcd prefix, each with its own
token webhook config (kube-api-auth of that node), as Rancher provisions such a cluster.

With real nodes (``node_mode="real"``, or the scenario's ``node_mode``) the control plane also runs
kube-scheduler, and each scenario node becomes a containerd and a kubelet (`corral.controlplane.nodes`);
``up`` then waits until every node is Ready, and ``down`` removes what they added to the host.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import filelock

from corral.controlplane import build, flags, hostnet, images, nodeconf
from corral.controlplane.clusters import ClusterHandle, ClusterSet, Progress, kubeconfig_name
from corral.controlplane.pki import ClusterPKI, create_cluster_pki
from corral.controlplane.processes import (
    ProcessGroup,
    free_port,
    read_state_document,
    reap_stale,
    stop_attached,
    tail,
    write_state,
)
from corral.errors import ConfigError, ControlPlaneError, KubeAPIError
from corral.k8s import KubeClient, KubeConfig
from corral.model import Scenario
from corral.model.scenario import Cluster

logger = logging.getLogger(__name__)

EtcdMode = Literal["shared", "per-cluster"]
ETCD_MODES: tuple[EtcdMode, ...] = ("shared", "per-cluster")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalProvider:
    """Settings of local control planes."""

    etcd_mode: EtcdMode = "shared"
    """One etcd for all clusters (distinct prefixes) or one etcd per cluster."""
    ready_timeout_seconds: float = 60.0
    """Budget for each process to become ready (etcd health, apiserver /readyz, KCM effects)."""
    detached: bool = False
    """Leave the processes running when this interpreter exits (``corral cluster up``)."""
    webhooks: Mapping[str, Path] = field(default_factory=dict)
    """Per cluster, a kubeconfig-format token webhook config for its apiserver."""
    node_webhooks: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    """Per cluster, per control-plane node, the webhook config of that node's own kube-apiserver."""
    on_node_addresses: Callable[[Mapping[str, Mapping[str, str]]], None] | None = None
    """Called with the InternalIP of every real node (cluster -> node -> address) once the networks
    exist, before any kube-apiserver starts: per-node webhook configs that name a node's address are
    written then."""
    webhook_cache_ttl: str = "1s"
    webhook_version: str | None = "v1"
    """TokenReview version spoken to the webhooks; None: the apiserver's default (v1beta1)."""
    binaries: build.Built | None = None
    node_mode: str | None = None
    """``virtual`` (Node objects only) or ``real`` (kubelet and containerd); None: the scenario's."""
    virtual_clusters: frozenset[str] = frozenset()
    """Clusters whose nodes stay Node objects only with real nodes (``corral up``'s upstream)."""
    name: str = "local"

    def __post_init__(self) -> None:
        if self.etcd_mode not in ETCD_MODES:
            raise ConfigError(f"etcd mode must be one of {', '.join(ETCD_MODES)}, got {self.etcd_mode!r}")
        if self.node_mode is not None and self.node_mode not in ("virtual", "real"):
            raise ConfigError(f"node mode must be virtual or real, got {self.node_mode!r}")

    def up(self, scenario: Scenario, run_dir: Path, *, progress: Progress | None = None) -> ClusterSet:
        report = progress or (lambda line: logger.info("%s", line))
        unknown = sorted((set(self.webhooks) | set(self.node_webhooks)) - {c.name for c in scenario.clusters})
        if unknown:
            raise ConfigError(f"webhook configs name clusters not in {scenario.source}: {', '.join(unknown)}")
        both = sorted(set(self.webhooks) & set(self.node_webhooks))
        if both:
            raise ConfigError(f"clusters given both one webhook and per-node webhooks: {', '.join(both)}")
        for cluster in scenario.clusters:
            given = self.node_webhooks.get(cluster.name)
            wanted = {n.name for n in cluster.control_plane_nodes}
            if given is not None and set(given) != wanted:
                raise ConfigError(
                    f"per-node webhooks of cluster {cluster.name} must name its control-plane nodes "
                    f"{', '.join(sorted(wanted))}, got {', '.join(sorted(given)) or 'none'}"
                )
        run_dir = run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        real = (self.node_mode or scenario.node_mode) == "real"
        if real:
            from corral.controlplane import hostpkgs, nodes

            nodes.check_host()
            hostpkgs.ensure_packages(report=report, log_dir=run_dir / "logs")
        with _locked(run_dir):
            hostnet.stop_processes(run_dir)  # a crashed run's nodes first, then its control plane
            stale = reap_stale(run_dir)
            if stale:
                report(f"reaped {len(stale)} process(es) left by an earlier run in {run_dir}")
            removed = hostnet.cleanup(run_dir) + (hostnet.sweep_orphans() if real else [])
            if removed:
                report(f"removed {len(removed)} host object(s) left by earlier runs")
            names = (*build.CONTROL_PLANE, *build.NODES) if real else build.CONTROL_PLANE
            binaries = self.binaries or build.ensure_built(names)
            missing = [name for name in names if name not in binaries.paths]
            if missing:  # binaries given for virtual nodes (the pytest plugin's) lack the node components
                binaries = build.Built({**binaries.paths, **build.ensure_built(missing).paths})
            archives = images.ensure_images(report=report) if real else ()
            group = ProcessGroup(run_dir, detached=self.detached)
            try:
                return self._up(scenario, run_dir, binaries, group, report, real=real, archives=archives)
            except BaseException:
                hostnet.stop_processes(run_dir)
                group.stop()
                hostnet.cleanup(run_dir)
                raise

    def down(self, run_dir: Path) -> None:
        run_dir = run_dir.resolve()
        if not run_dir.is_dir():
            raise ConfigError(f"no run folder at {str(run_dir)!r}")
        with _locked(run_dir):
            hostnet.stop_processes(run_dir)  # nodes first: their kubelets talk to the apiservers
            stop_attached(run_dir)
            reap_stale(run_dir)
            hostnet.cleanup(run_dir)

    # -- the steps --------------------------------------------------------------------------------

    def _up(
        self,
        scenario: Scenario,
        run_dir: Path,
        binaries: build.Built,
        group: ProcessGroup,
        report: Progress,
        *,
        real: bool = False,
        archives: Sequence[images.ImageArchive] = (),
    ) -> ClusterSet:
        started = time.monotonic()
        names = [c.name for c in scenario.clusters]
        runner = None
        nets: dict[str, nodeconf.ClusterNet] = {}
        real_clusters = [c for c in scenario.clusters if real and c.name not in self.virtual_clusters]
        if real_clusters:
            from corral.controlplane.nodes import RealNodes

            runner = RealNodes(run_dir, binaries=binaries, report=report)
            nets = runner.prepare_networks(real_clusters)
            report("network namespaces ready: " + ", ".join(f"{c} {n.supernet}" for c, n in nets.items()))
            if self.on_node_addresses is not None:
                self.on_node_addresses(
                    {
                        c.name: {n.name: nets[c.name].node_ip(i) for i, n in enumerate(c.nodes)}
                        for c in real_clusters
                    }
                )
        hosts = {name: nets[name].host_ip if name in nets else "127.0.0.1" for name in names}
        pkis = {
            name: create_cluster_pki(
                run_dir / name / "pki", cluster=name, extra_hosts=(hosts[name],) if name in nets else ()
            )
            for name in names
        }
        real_flags = {name: _real_flags(pkis[name], hosts[name]) for name in nets}
        report(f"generated certificates for {len(names)} cluster(s)")

        etcd_urls = self._start_etcd(names, run_dir, binaries, group)
        report(f"etcd ready ({self.etcd_mode}: {len(set(etcd_urls.values()))} process(es))")

        configs, node_servers = self._start_apiservers(
            scenario,
            binaries,
            group,
            report,
            pkis=pkis,
            hosts=hosts,
            etcd_urls=etcd_urls,
            real_flags=real_flags,
        )

        handles: dict[str, ClusterHandle] = {}
        for cluster in scenario.clusters:
            name = cluster.name
            kubeconfig = configs[name].write(run_dir / kubeconfig_name(name), context=name)
            group.start(
                f"kube-controller-manager-{name}",
                flags.kcm_args(
                    binaries["kube-controller-manager"],
                    pki=pkis[name],
                    kubeconfig=kubeconfig,
                    real_nodes=real_flags.get(name),
                    node_monitor=flags.NodeMonitor(
                        grace=nodeconf.NODE_MONITOR_GRACE, period=nodeconf.NODE_MONITOR_PERIOD
                    ),
                ),
                role="kube-controller-manager",
            )
            if name in nets:
                from corral.controlplane.nodes import scheduler_kubeconfig

                scheduler_config = scheduler_kubeconfig(
                    pkis[name], server=configs[name].server, folder=run_dir / name
                )
                group.start(
                    f"kube-scheduler-{name}",
                    flags.scheduler_args(binaries["kube-scheduler"], kubeconfig=scheduler_config),
                    role="kube-scheduler",
                )
            handles[name] = _handle(
                cluster, configs[name], kubeconfig, pkis[name], apiservers=node_servers.get(name, {})
            )
        report("kube-controller-managers started" + (" with kube-schedulers" if nets else ""))

        if runner is not None:
            from corral.controlplane.nodes import label_roles, wait_nodes_ready

            for cluster in real_clusters:
                node_started = time.monotonic()
                runner.start_cluster_nodes(
                    group,
                    cluster=cluster,
                    net=nets[cluster.name],
                    pki=pkis[cluster.name],
                    server=configs[cluster.name].server,
                    archives=archives,
                )
                with KubeClient(configs[cluster.name]) as client:
                    wait_nodes_ready(
                        client,
                        [node.name for node in cluster.nodes],
                        timeout_seconds=self.ready_timeout_seconds,
                        group=group,
                    )
                    label_roles(client, cluster)
                    self._wait_controllers(group, cluster.name, client)
                report(
                    f"{cluster.name}: {len(cluster.nodes)} real node(s) Ready "
                    f"in {time.monotonic() - node_started:.1f}s"
                )
        for cluster in scenario.clusters:
            if cluster.name not in nets:
                with KubeClient(configs[cluster.name]) as client:
                    create_nodes(client, cluster)
                    self._wait_controllers(group, cluster.name, client)
                    report(f"{cluster.name}: {len(cluster.nodes)} node(s) registered, controllers running")

        write_state(
            run_dir,
            group.records,
            extra={
                "provider": "local",
                "scenario": scenario.name,
                "etcd_mode": self.etcd_mode,
                "nodes": "real" if real else "virtual",
                "detached": self.detached,
                "clusters": {
                    name: {
                        "server": configs[name].server,
                        "kubeconfig": str(handles[name].kubeconfig),
                        "etcd": etcd_urls[name],
                        "etcd_prefix": _etcd_prefix(name),
                        **({"apiservers": node_servers[name]} if name in node_servers else {}),
                    }
                    for name in names
                },
            },
        )
        report(f"{len(names)} cluster(s) up in {time.monotonic() - started:.1f}s")
        return ClusterSet(
            provider="local", run_dir=run_dir, clusters=handles, kubectl=binaries.paths.get("kubectl")
        )

    def _start_apiservers(
        self,
        scenario: Scenario,
        binaries: build.Built,
        group: ProcessGroup,
        report: Progress,
        *,
        pkis: Mapping[str, ClusterPKI],
        hosts: Mapping[str, str],
        etcd_urls: Mapping[str, str],
        real_flags: Mapping[str, flags.RealNodeFlags],
    ) -> tuple[dict[str, KubeConfig], dict[str, dict[str, str]]]:
        """Each cluster's kube-apiserver(s), waited for; admin configs (first apiserver) and per-node URLs."""
        names = [c.name for c in scenario.clusters]
        ports = {name: free_port() for name in names}
        # (process name, node, port, webhook config) of each kube-apiserver, the cluster's first first.
        apiservers: dict[str, list[tuple[str, str, int, Path | None]]] = {}
        for cluster in scenario.clusters:
            name = cluster.name
            per_node = self.node_webhooks.get(name)
            if per_node is None:
                apiservers[name] = [(f"kube-apiserver-{name}", "", ports[name], self.webhooks.get(name))]
                continue
            apiservers[name] = [
                (
                    f"kube-apiserver-{name}" if index == 0 else f"kube-apiserver-{name}-{node.name}",
                    node.name,
                    ports[name] if index == 0 else free_port(),
                    per_node[node.name],
                )
                for index, node in enumerate(cluster.control_plane_nodes)
            ]
        for name in names:
            for process, node, port, webhook in apiservers[name]:
                args = flags.apiserver_args(
                    binaries["kube-apiserver"],
                    pki=pkis[name],
                    port=port,
                    etcd_url=etcd_urls[name],
                    etcd_prefix=_etcd_prefix(name),
                    webhook_config=webhook,
                    webhook_cache_ttl=self.webhook_cache_ttl,
                    webhook_version=self.webhook_version,
                    real_nodes=real_flags.get(name),
                )
                group.start(process, args, role="kube-apiserver", node=node)
        configs = {name: _admin_config(name, ports[name], pkis[name], host=hosts[name]) for name in names}
        node_servers: dict[str, dict[str, str]] = {}
        for name in names:
            for process, node, port, _ in apiservers[name]:
                config = _admin_config(name, port, pkis[name], host=hosts[name])
                self._wait_ready(group, process, config)
                if node:
                    node_servers.setdefault(name, {})[node] = config.server
            servers = node_servers.get(name, {}).values() or [configs[name].server]
            report(f"kube-apiserver(s) of {name} ready at {', '.join(servers)}")
        return configs, node_servers

    def _start_etcd(
        self, names: list[str], run_dir: Path, binaries: build.Built, group: ProcessGroup
    ) -> dict[str, str]:
        members = ["shared"] if self.etcd_mode == "shared" else names
        urls: dict[str, str] = {}
        for member in members:
            data_dir = run_dir / "etcd" / member
            shutil.rmtree(data_dir, ignore_errors=True)  # every up starts from an empty store
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            client_port, peer_port = free_port(), free_port()
            group.start(
                f"etcd-{member}",
                role="etcd",
                argv=flags.etcd_args(
                    binaries["etcd"],
                    name=member,
                    data_dir=data_dir,
                    client_port=client_port,
                    peer_port=peer_port,
                ),
            )
            urls[member] = f"http://127.0.0.1:{client_port}"
        for member, url in urls.items():
            self._wait_etcd(group, f"etcd-{member}", url)
        return {name: urls["shared" if self.etcd_mode == "shared" else name] for name in names}

    def _wait_etcd(self, group: ProcessGroup, name: str, url: str) -> None:
        port = int(url.rsplit(":", 1)[1])
        deadline = time.monotonic() + self.ready_timeout_seconds
        while time.monotonic() < deadline:
            group.check_alive(name)
            if _etcd_healthy(port):
                return
            time.sleep(0.1)
        raise _not_ready(group, name, f"{url}/health", self.ready_timeout_seconds)

    def _wait_ready(self, group: ProcessGroup, name: str, config: KubeConfig) -> None:
        deadline = time.monotonic() + self.ready_timeout_seconds
        with KubeClient(config, timeout_seconds=5) as client:
            while time.monotonic() < deadline:
                group.check_alive(name)
                with contextlib.suppress(KubeAPIError):
                    if client.request("GET", "/readyz", check=False).status == 200:
                        return
                time.sleep(0.2)
        raise _not_ready(group, name, f"{config.server}/readyz", self.ready_timeout_seconds)

    def _wait_controllers(self, group: ProcessGroup, cluster: str, client: KubeClient) -> None:
        name = f"kube-controller-manager-{cluster}"
        deadline = time.monotonic() + self.ready_timeout_seconds
        while time.monotonic() < deadline:
            group.check_alive(name)
            if client.exists("/api/v1/namespaces/default/serviceaccounts/default"):
                return
            time.sleep(0.2)
        raise _not_ready(group, name, "ServiceAccount default/default", self.ready_timeout_seconds)


def _etcd_prefix(cluster: str) -> str:
    return f"/corral/{cluster}/registry"


def etcd_of(run_dir: Path, cluster: str) -> tuple[str, str]:
    """``(etcd URL, key prefix)`` of a cluster of a local run folder (for its node agents' snapshots)."""
    path = run_dir / "processes.json"
    try:
        entry = read_state_document(run_dir)["clusters"][cluster]
        return str(entry["etcd"]), str(entry["etcd_prefix"])
    except (KeyError, TypeError):
        raise ConfigError(f"{path} names no etcd for cluster {cluster!r} (not a local run folder?)") from None


def create_nodes(client: KubeClient, cluster: Cluster) -> None:
    """Create (or update) the Node objects of a cluster's virtual nodes, labelled by role."""
    for node in cluster.nodes:
        labels = {f"node-role.kubernetes.io/{role}": "true" for role in node.roles}
        labels["kubernetes.io/hostname"] = node.name
        client.apply(
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name, "labels": labels}},
        )


def _real_flags(pki: ClusterPKI, host: str) -> flags.RealNodeFlags:
    from corral.controlplane.nodes import kubelet_client_pair

    cert, key = kubelet_client_pair(pki)
    return flags.RealNodeFlags(
        bind_address=host,
        kubelet_client_cert=cert,
        kubelet_client_key=key,
        toleration_seconds=nodeconf.TOLERATION_SECONDS,
        node_monitor_grace=nodeconf.NODE_MONITOR_GRACE,
        node_monitor_period=nodeconf.NODE_MONITOR_PERIOD,
    )


def _admin_config(cluster: str, port: int, pki: ClusterPKI, *, host: str = "127.0.0.1") -> KubeConfig:
    return KubeConfig(
        server=f"https://{host}:{port}",
        ca_pem=pki.serving_ca.read_bytes(),
        cert_pem=pki.admin_cert.read_bytes(),
        key_pem=pki.admin_key.read_bytes(),
        cluster_name=cluster,
        user_name=f"{cluster}-admin",
    )


def _handle(
    cluster: Cluster,
    admin: KubeConfig,
    kubeconfig: Path,
    pki: ClusterPKI,
    *,
    apiservers: Mapping[str, str] | None = None,
) -> ClusterHandle:
    def mint(user: str, groups: tuple[str, ...]) -> KubeConfig:
        pair = pki.issue_client(user, groups)
        return KubeConfig(
            server=admin.server,
            ca_pem=admin.ca_pem,
            cert_pem=pair.cert_pem,
            key_pem=pair.key_pem,
            cluster_name=cluster.name,
            user_name=user,
        )

    return ClusterHandle(
        name=cluster.name,
        server=admin.server,
        ca_pem=admin.ca_pem,
        kubeconfig=kubeconfig,
        nodes=tuple(node.name for node in cluster.nodes),
        mint=mint,
        apiservers=dict(apiservers or {}),
    )


def _etcd_healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status == 200 and b'"true"' in response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _not_ready(group: ProcessGroup, name: str, what: str, timeout: float) -> ControlPlaneError:
    log = group.log_path(name)
    return ControlPlaneError(
        f"{name} not ready after {timeout:g}s ({what}); last lines of {log}:\n{tail(log)}"
    )


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    lock = filelock.FileLock(str(run_dir / ".corral.lock"))
    try:
        lock.acquire(timeout=120)
    except filelock.Timeout as e:
        raise ControlPlaneError(f"another corral holds {run_dir} (lock {lock.lock_file})") from e
    try:
        yield
    finally:
        lock.release()

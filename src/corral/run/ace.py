"""``corral up``'s Authorized Cluster Endpoint: a kube-api-auth per control-plane node, an FQDN's balancer.

For each scenario cluster with ``ace`` on: `plan` picks a loopback port per control-plane node for
its kube-api-auth and writes that node's webhook config (Rancher's ``kube-api-authn-webhook.yaml``)
before the apiservers start (where nodes are real, kube-api-auth is a DaemonSet on port 6440 of each
control-plane node and `place` writes the configs once the nodes' addresses are known); `attach`
notes the clusters' apiservers and CA; `enable` sets the Cluster's ``spec.localClusterAuthEndpoint``
upstream (so kubeconfig tokens are scoped to it) and notes each control-plane node's apiserver on
it, from which the server's ``generateKubeconfig`` renders the ACE contexts; `start` runs the
kube-api-auth processes or deploys the DaemonSet (and HAProxy for ``ace_fqdn``) once the cluster
serves the ACE CRDs; `wait_copied` waits until the server's cluster controllers have copied every
scoped token down (so ACE works when ``up`` returns); `entries` are what
``topology.json`` says.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from corral.controlplane import loadbalancer
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.processes import ProcessGroup, free_port, tail
from corral.errors import ControlPlaneError
from corral.k8s import KubeClient, KubeConfig
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth import objects, sync
from corral.kubeapiauth.manifests import APP as KUBE_API_AUTH_APP
from corral.kubeapiauth.manifests import PORT as KUBE_API_AUTH_PORT
from corral.kubeapiauth.manifests import KubeApiAuthDeployment, kube_api_auth_manifests
from corral.model import Scenario
from corral.server.kubeconfig import ACE_ENDPOINTS_ANNOTATION

logger = logging.getLogger(__name__)

__all__ = [
    "KUBE_API_AUTH_ROLE",
    "WEBHOOK_FILE",
    "ClusterAce",
    "attach",
    "deploy_daemonset",
    "enable",
    "entries",
    "node_webhooks",
    "place",
    "plan",
    "start",
    "wait_copied",
]

KUBE_API_AUTH_ROLE: Final = "kube-api-auth"
WEBHOOK_FILE: Final = "kube-api-authn-webhook.yaml"
LOOPBACK: Final = "127.0.0.1"
FQDN_HOST: Final = "localhost"
"""The name the FQDN context uses: it resolves to the load balancer and is in the apiservers' certificates."""
MGMT: Final = "/apis/management.cattle.io/v3"


@dataclass(slots=True, kw_only=True)
class ClusterAce:
    """One ACE cluster's pieces: per control-plane node a kube-api-auth port and webhook config."""

    cluster: str
    folder: Path
    auth_ports: dict[str, int]
    """Control-plane node -> its kube-api-auth's port on the loopback address."""
    webhooks: dict[str, Path]
    fqdn_port: int | None = None
    """The load balancer's port with ``ace_fqdn``."""
    apiservers: dict[str, str] = field(default_factory=dict)
    """Control-plane node -> its kube-apiserver URL (known once the cluster is up)."""
    ca_pem: bytes | None = None
    daemonset: bool = False
    """The nodes are real: kube-api-auth runs as Rancher's DaemonSet, on each node's address."""
    auth_hosts: dict[str, str] = field(default_factory=dict)
    """Control-plane node -> the address its kube-api-auth listens on (the node's IP where nodes are
    real; the loopback address otherwise)."""

    @property
    def fqdn(self) -> str:
        return f"{FQDN_HOST}:{self.fqdn_port}" if self.fqdn_port is not None else ""

    def auth_urls(self) -> list[str]:
        return [f"http://{self.auth_host(node)}:{port}" for node, port in self.auth_ports.items()]

    def auth_host(self, node: str) -> str:
        return self.auth_hosts.get(node, LOOPBACK)

    def endpoints(self) -> list[str]:
        """Where ACE contexts point: the FQDN, else each node's apiserver."""
        return [f"https://{self.fqdn}"] if self.fqdn else list(self.apiservers.values())


def plan(scenario: Scenario, run_dir: Path, *, real_nodes: bool = False) -> dict[str, ClusterAce]:
    """Ports and webhook configs of every ACE cluster (written now: the apiservers read them at start).

    With ``real_nodes`` each kube-api-auth will listen on port 6440 of its node's address, which the
    nodes' network gets only when the provider makes it: `place` writes those webhook configs then.
    """
    out: dict[str, ClusterAce] = {}
    for cluster in scenario.clusters:
        if not cluster.ace:
            continue
        folder = run_dir / "ace" / cluster.name
        ports: dict[str, int] = {}
        webhooks: dict[str, Path] = {}
        for node in cluster.control_plane_nodes:
            ports[node.name] = port = KUBE_API_AUTH_PORT if real_nodes else free_port()
            webhooks[node.name] = path = folder / node.name / WEBHOOK_FILE
            if not real_nodes:
                _write_webhook(path, host=LOOPBACK, port=port)
        out[cluster.name] = ClusterAce(
            cluster=cluster.name,
            folder=folder,
            auth_ports=ports,
            webhooks=webhooks,
            fqdn_port=free_port() if cluster.ace_fqdn else None,
            daemonset=real_nodes,
        )
    return out


def _write_webhook(path: Path, *, host: str, port: int) -> Path:
    """As Rancher writes it: a kubeconfig whose server is the node's kube-api-auth."""
    return KubeConfig(
        server=f"http://{host}:{port}/v1/authenticate",
        cluster_name="webhook",
        user_name="Default",
        insecure_skip_tls_verify=True,
    ).write(path, context="webhook")


def place(plans: Mapping[str, ClusterAce], addresses: Mapping[str, Mapping[str, str]]) -> None:
    """Real nodes: each control-plane node's webhook config names that node's address (the provider's
    ``on_node_addresses``; the apiservers run on the host, so the node's loopback would not do)."""
    for name, ace in plans.items():
        if not ace.daemonset:
            continue
        known = addresses.get(name, {})
        missing = sorted(set(ace.auth_ports) - set(known))
        if missing:
            raise ControlPlaneError(
                f"cluster {name}: no address for control-plane node(s) {', '.join(missing)}"
            )
        for node, port in ace.auth_ports.items():
            ace.auth_hosts[node] = known[node]
            _write_webhook(ace.webhooks[node], host=known[node], port=port)


def node_webhooks(plans: Mapping[str, ClusterAce]) -> dict[str, dict[str, Path]]:
    """The local provider's ``node_webhooks``."""
    return {name: dict(p.webhooks) for name, p in plans.items()}


def attach(plans: Mapping[str, ClusterAce], handles: Mapping[str, ClusterHandle]) -> None:
    """Note each ACE cluster's apiserver per control-plane node and its CA, once the clusters are up."""
    for name, ace in plans.items():
        handle = handles[name]
        ace.apiservers = dict(handle.apiservers) or {next(iter(ace.auth_ports)): handle.server}
        ace.ca_pem = handle.ca_pem


def enable(upstream: KubeClient, plans: Mapping[str, ClusterAce], cluster_ids: Mapping[str, str]) -> None:
    """``spec.localClusterAuthEndpoint`` of each ACE cluster, as Rancher's cluster spec holds it (``caCerts``
    the PEM), and the `ACE_ENDPOINTS_ANNOTATION`: each control-plane node's apiserver, which is on
    loopback with a port of its own here rather than at the node's address and 6443."""
    for name, ace in plans.items():
        ca = ace.ca_pem.decode() if ace.fqdn and ace.ca_pem else ""
        endpoint = {"enabled": True, "fqdn": ace.fqdn, "caCerts": ca}
        nodes = json.dumps([{"node": node, "server": url} for node, url in ace.apiservers.items()])
        upstream.patch(
            f"{MGMT}/clusters/{cluster_ids[name]}",
            {
                "metadata": {"annotations": {ACE_ENDPOINTS_ANNOTATION: nodes}},
                "spec": {"localClusterAuthEndpoint": endpoint},
            },
        )


async def _crds(config: KubeConfig) -> None:
    async with AsyncKubeClient(config) as client:
        await sync.ensure_crds(client)


def _healthy(port: int, host: str = LOOPBACK) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/healthcheck")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def start(
    plans: Mapping[str, ClusterAce],
    *,
    handles: Mapping[str, ClusterHandle],
    group: ProcessGroup,
    trace_file: Path,
    trace_epoch: float,
    report: Callable[[str], None],
    timeout_seconds: float = 60.0,
) -> None:
    """The ACE CRDs, a kube-api-auth per control-plane node (a process talking to that node's
    apiserver, or the DaemonSet where nodes are real) and HAProxy for an FQDN, each waited for."""
    haproxy = loadbalancer.ensure_haproxy(report=report) if any(p.fqdn for p in plans.values()) else ""
    for name, ace in plans.items():
        admin = handles[name].admin_config()
        if not ace.apiservers:
            attach({name: ace}, handles)
        asyncio.run(_crds(admin))
        if ace.daemonset:
            deploy_daemonset(
                ace,
                handle=handles[name],
                trace_file=trace_file,
                trace_epoch=trace_epoch,
                timeout_seconds=timeout_seconds,
            )
        else:
            _start_processes(
                ace,
                admin=admin,
                group=group,
                trace_file=trace_file,
                trace_epoch=trace_epoch,
                timeout_seconds=timeout_seconds,
            )
        if ace.fqdn_port is not None:
            loadbalancer.start(
                group,
                name=f"{loadbalancer.ROLE}-{name}",
                config_file=ace.folder / "haproxy.cfg",
                listen_host=LOOPBACK,
                listen_port=ace.fqdn_port,
                backends=ace.apiservers,
                haproxy=haproxy,
                cluster=name,
            )
        report(
            f"ACE of {name}: {len(ace.auth_ports)} kube-api-auth"
            + (" (DaemonSet)" if ace.daemonset else "")
            + (f", load balancer at {ace.fqdn}" if ace.fqdn else "")
        )


def _start_processes(
    ace: ClusterAce,
    *,
    admin: KubeConfig,
    group: ProcessGroup,
    trace_file: Path,
    trace_epoch: float,
    timeout_seconds: float,
) -> None:
    """Virtual nodes: a ``corral kube-api-auth`` process per control-plane node on its loopback port."""
    name = ace.cluster
    for node, port in ace.auth_ports.items():
        kubeconfig = replace(admin, server=ace.apiservers[node]).write(
            ace.folder / node / "kubeconfig", context=name
        )
        process = f"{KUBE_API_AUTH_ROLE}-{node}"
        argv = [
            sys.executable, "-m", "corral", "kube-api-auth",
            "--listen", f"{LOOPBACK}:{port}",
            "--kubeconfig", str(kubeconfig),
            "--cluster", name,
            "--trace", str(trace_file),
            "--trace-epoch", f"{trace_epoch:.6f}",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        group.start(process, argv, role=KUBE_API_AUTH_ROLE, env=env, node=node)
    for node, port in ace.auth_ports.items():
        process = f"{KUBE_API_AUTH_ROLE}-{node}"
        deadline = time.monotonic() + timeout_seconds
        while not _healthy(port):
            group.check_alive(process)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{process} not healthy after {timeout_seconds:g}s; last lines of "
                    f"{group.log_path(process)}:\n{tail(group.log_path(process))}"
                )
            time.sleep(0.1)


def deploy_daemonset(
    ace: ClusterAce,
    *,
    handle: ClusterHandle,
    trace_file: Path,
    trace_epoch: float,
    timeout_seconds: float,
) -> None:
    """Real nodes: apply kube-api-auth's DaemonSet and wait until it answers on every control-plane
    node's address, as the host's apiservers reach it."""
    from corral.controlplane.images import CORRAL_IMAGE
    from corral.run.agents import collection_of

    deployment = KubeApiAuthDeployment(
        cluster=ace.cluster,
        image=CORRAL_IMAGE,
        api_address=handle.server.removeprefix("https://"),
        trace_file=str(trace_file.resolve()),
        trace_epoch=trace_epoch,
        port=KUBE_API_AUTH_PORT,
    )
    with handle.client() as admin:
        for manifest in kube_api_auth_manifests(deployment):
            admin.apply(collection_of(manifest), manifest, force=True)
    deadline = time.monotonic() + timeout_seconds
    waiting = dict(ace.auth_ports)
    while waiting:
        waiting = {node: port for node, port in waiting.items() if not _healthy(port, ace.auth_host(node))}
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"cluster {ace.cluster}: kube-api-auth not answering on {', '.join(sorted(waiting))} "
                f"after {timeout_seconds:g}s (see kubectl -n {objects.NAMESPACE} get pods "
                f"-l app={KUBE_API_AUTH_ROLE})"
            )
        time.sleep(0.2)
    # Answering is not yet Ready in the DaemonSet's status (the kubelet's probe and the controller
    # lag): wait for that too, so what `up` hands over reads as rolled out.
    path = f"/apis/apps/v1/namespaces/{objects.NAMESPACE}/daemonsets/{KUBE_API_AUTH_APP}"
    with handle.client() as admin:
        while True:
            status = admin.get(path).get("status") or {}
            desired = int(status.get("desiredNumberScheduled") or 0)
            if desired and int(status.get("numberReady") or 0) == desired:
                break
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"cluster {ace.cluster}: kube-api-auth's DaemonSet not ready after {timeout_seconds:g}s"
                )
            time.sleep(0.2)


def wait_copied(
    plans: Mapping[str, ClusterAce],
    *,
    upstream: KubeClient,
    handles: Mapping[str, ClusterHandle],
    cluster_ids: Mapping[str, str],
    report: Callable[[str], None],
    timeout_seconds: float = 120.0,
) -> None:
    """Wait until each ACE cluster holds a ClusterAuthToken copy of every token scoped to it upstream
    and a ClusterUserAttribute of each of their users (the cluster controllers' queue may lag)."""
    deadline = time.monotonic() + timeout_seconds
    for name in plans:
        cluster_id = cluster_ids[name]
        tokens = [
            t for t in upstream.list(f"{MGMT}/tokens").get("items", []) if t.get("clusterName") == cluster_id
        ]
        wanted = {
            objects.paths()[objects.CLUSTER_AUTH_TOKENS]: {str(t["metadata"]["name"]) for t in tokens},
            objects.paths()[objects.CLUSTER_USER_ATTRIBUTES]: {str(t.get("userId")) for t in tokens},
        }
        with handles[name].client() as downstream:
            while True:
                missing = sorted(
                    f"{path.rsplit('/', 1)[1]}/{item}"
                    for path, names in wanted.items()
                    for item in names
                    if not downstream.exists(f"{path}/{item}")
                )
                if not missing:
                    break
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"the server did not copy {len(missing)} ACE object(s) to {name} within "
                        f"{timeout_seconds:g}s: {', '.join(missing[:5])}"
                    )
                time.sleep(0.2)
        report(f"ACE of {name}: {len(tokens)} scoped token(s) copied to the cluster")


def entries(plans: Mapping[str, ClusterAce], name: str) -> dict[str, Any]:
    """``kube_api_auth`` and ``ace_endpoints`` of a cluster in ``topology.json`` (nothing without ACE)."""
    ace = plans.get(name)
    if ace is None:
        return {}
    return {"kube_api_auth": ace.auth_urls(), "ace_endpoints": ace.endpoints()}

"""One agent process: check the CA, read what to report, then keep the tunnel open until SIGTERM.

SIGTERM (and SIGINT) close the session cleanly, so the server sees the websocket close at once; a
SIGKILL leaves that to the kernel (the socket closes, the server learns at once too), and a SIGSTOP
to the server's read deadline. A wrong ``CATTLE_CA_CHECKSUM`` ends the process before it connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.agent.config import AgentConfig, fetch_verified_ca, server_ssl
from corral.agent.etcd import EtcdStore
from corral.agent.loop import ConnectLoop, RetryPolicy
from corral.agent.node import LEASE_DURATION_SECONDS, NodeHeartbeat
from corral.agent.ops import NodeOperations
from corral.agent.params import api_address, cluster_params, node_params
from corral.agent.podresources import PodResources
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.kubeconfig import KubeConfig
from corral.tunnel import SessionSettings
from corral.tunnel.transport import dial_local

logger = logging.getLogger(__name__)

__all__ = ["AgentOptions", "run_agent"]

TOKEN_HEADER = "X-API-Tunnel-Token"  # noqa: S105 - a header name
PARAMS_HEADER = "X-API-Tunnel-Params"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """How the agent behaves beyond Rancher's configuration."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    settings: SessionSettings | None = None
    heartbeat: bool = True
    """Node agents: keep the virtual node's Lease and Ready condition (off on real nodes)."""
    lease_seconds: int = LEASE_DURATION_SECONDS
    """Node agents: the Lease's duration; it is renewed every quarter of it, as a kubelet does."""
    etcd_endpoint: str = ""
    """Node agents of etcd nodes: the cluster's etcd (``http://host:port``), for snapshots."""
    etcd_prefix: str = ""
    """The cluster's key prefix in that etcd (the apiserver's ``--etcd-prefix``)."""
    pod_resources_seconds: float = 15.0
    """Cluster agents: how often the nodes' pod-requests and pod-limits annotations are refreshed."""


def _kube_config(config: AgentConfig) -> KubeConfig:
    if config.kubeconfig is not None:
        return KubeConfig.load(config.kubeconfig)
    from corral.kubeapiauth.server import in_cluster_config

    return in_cluster_config()


def _encode(document: Mapping[str, object]) -> str:
    import base64
    import json

    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


async def run_agent(config: AgentConfig, options: AgentOptions | None = None) -> None:
    """Run until SIGTERM/SIGINT; raises `CAChecksumError` or `AgentConfigError` before connecting."""
    options = options or AgentOptions()
    ca_pem = await fetch_verified_ca(config.server, config.ca_checksum) if config.ca_checksum else None
    if ca_pem is not None:
        logger.info("the server's CA matches CATTLE_CA_CHECKSUM")
    kube = _kube_config(config)
    address = api_address(kube.server)
    operations = None
    if config.kind == "node":
        store = EtcdStore(options.etcd_endpoint, options.etcd_prefix) if options.etcd_endpoint else None
        operations = NodeOperations(store=store, snapshot_dir=config.state_dir / "etcd-snapshots")
        await operations.start()
    async with AsyncKubeClient(kube) as client:

        async def headers() -> dict[str, str]:
            if config.kind == "cluster":
                document = await cluster_params(client, address=address)
            else:
                document = await node_params(client, node=config.node, api=address)
                if operations is not None and operations.operations:
                    document["node"]["operations"] = operations.operations
            return {TOKEN_HEADER: config.token, PARAMS_HEADER: _encode(document)}

        loop = ConnectLoop(
            websocket_base=config.websocket_base,
            headers=headers,
            marker=config.connected_marker,
            always_connect=config.connect,
            ssl_context=server_ssl(ca_pem) if config.server.startswith("https") else False,
            retry=options.retry,
            settings=options.settings,
            local_dialer=operations.dialer() if operations is not None else dial_local,
        )
        heartbeat = (
            NodeHeartbeat(client, config.node, lease_duration_seconds=options.lease_seconds)
            if config.kind == "node" and options.heartbeat
            else None
        )
        stats = (
            PodResources(client, interval_seconds=options.pod_resources_seconds)
            if config.kind == "cluster"
            else None
        )
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(signum, stop.set)
        if heartbeat is not None:
            await heartbeat.start()
        if stats is not None:
            await stats.start()
        task = asyncio.ensure_future(loop.run())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await loop.stop("agent stopping")
            task.cancel()
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if heartbeat is not None:
                await heartbeat.stop()
            if stats is not None:
                await stats.stop()
            if operations is not None:
                await operations.stop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                running.remove_signal_handler(signum)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

"""Downstream agents: ``corral agent --cluster`` (cattle-cluster-agent) and ``--node`` (cattle-node-agent).

Configured as Rancher's (`corral.agent.config`: ``CATTLE_SERVER``, ``CATTLE_TOKEN`` or the credentials
files, ``CATTLE_CA_CHECKSUM`` checked against the server's ``cacerts`` before anything else), an agent
reports its cluster (or node) in ``X-API-Tunnel-Params`` and serves the server's dials through a
remotedialer session (`corral.tunnel`), reconnecting on Rancher's cadence (`corral.agent.loop`). A node
agent also keeps its virtual node's Lease and Ready condition current (`corral.agent.node`).
`corral.agent.fleet` starts, records and hurts agent processes of a run folder.
"""

from __future__ import annotations

from corral.agent.config import AgentConfig, AgentConfigError, CAChecksumError, load_config
from corral.agent.loop import ConnectLoop, RetryPolicy, rancher_connect_authorizer
from corral.agent.run import run_agent

__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "CAChecksumError",
    "ConnectLoop",
    "RetryPolicy",
    "load_config",
    "rancher_connect_authorizer",
    "run_agent",
]

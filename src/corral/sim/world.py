"""The shared state of one simulation run: clock, scenario, calibration and the parts built from them.

Parts reach each other through the `World` instead of importing each other, which keeps the
modules independent (a part names the others only for type checking) and makes `build.py` the
one place that decides how the topology is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.model import Calibration, Scenario
from corral.sim.kernel import FastEnvironment
from corral.sim.network import Network
from corral.sim.recorder import Recorder
from corral.sim.rng import Streams

if TYPE_CHECKING:
    from corral.sim.apiserver import APIServer
    from corral.sim.server import ManagementServer
    from corral.sim.tokens import TokenSync
    from corral.sim.tunnel import Agent, SessionManager
    from corral.sim.webhook import TokenReviewWebhook


@dataclass(eq=False, kw_only=True)
class World:
    """Everything a part of the model may look at."""

    env: FastEnvironment
    scenario: Scenario
    calibration: Calibration
    network: Network
    streams: Streams
    recorder: Recorder
    server: ManagementServer = field(init=False)
    sessions: SessionManager = field(init=False)
    tokens: TokenSync = field(init=False)
    apiservers: dict[str, APIServer] = field(default_factory=dict)
    webhooks: dict[str, TokenReviewWebhook] = field(default_factory=dict)
    agents: dict[tuple[str, str], Agent] = field(default_factory=dict)
    """(cluster, agent name) -> agent: ``cluster-agent``, ``cluster-agent-<n>``, ``node-agent/<node>``."""
    hosts: dict[tuple[str, str], list[Agent]] = field(default_factory=dict)
    """(cluster, node) -> the agents running on that node (a node's crash takes them all)."""
    downstream_accounts: set[tuple[str, str]] = field(default_factory=set)
    """(user, cluster) pairs whose impersonation account exists downstream (survives restarts)."""

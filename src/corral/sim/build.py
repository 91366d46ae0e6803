"""Assemble and run one simulation: scenario + calibration + seed in, trace events out.

`Simulation` builds the world (network, server, sessions, apiservers, webhooks, agents, health
tick, users, faults) and runs it to the end of the scenario's horizon plus a drain period in
which no new requests start but running ones finish (bounded by the longest wait in the model).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from corral.model import Calibration, Scenario
from corral.sim.ace import ClusterEndpoint
from corral.sim.apiserver import APIServer
from corral.sim.controller import HealthSyncer
from corral.sim.faults import schedule_faults
from corral.sim.kernel import FastEnvironment
from corral.sim.network import Network
from corral.sim.proxy import AuthProxy
from corral.sim.recorder import Recorder
from corral.sim.rng import Streams
from corral.sim.server import ManagementServer
from corral.sim.tokens import TokenSync
from corral.sim.tunnel import Agent, SessionManager
from corral.sim.users import Users
from corral.sim.webhook import TokenReviewWebhook
from corral.sim.world import World

AGENT_START_SPREAD_SECONDS = 2.0
"""Agents start spread over the first seconds, as pods do after an install."""
GC_THRESHOLD = 50_000
"""Allocations between young-generation collections while the model runs (Python's default: 700)."""


class CountingEnvironment(FastEnvironment):
    """A SimPy environment that can tell how many events it has processed (for events per second).

    It reads SimPy's own event-id counter rather than counting in `step`, which would cost a
    Python call per event (about 5 % of a fleet run).
    """

    @property
    def processed(self) -> int:
        counter = self._eid  # itertools.count: every scheduled event took one id
        scheduled = int(repr(counter)[len("count(") : -1])
        return scheduled - len(self._queue)


class Simulation:
    """One run of the model."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int,
        calibration: Calibration | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.calibration = calibration or Calibration()
        self.env = CountingEnvironment()
        self.recorder = recorder or Recorder()
        world = self.world = World(
            env=self.env,
            scenario=scenario,
            calibration=self.calibration,
            network=Network(scenario, bandwidth_mbps=self.calibration.network.bandwidth_mbps),
            streams=Streams(seed),
            recorder=self.recorder,
        )
        world.server = ManagementServer(world)
        world.sessions = SessionManager(world)
        world.tokens = TokenSync(world)
        for cluster in scenario.clusters:
            world.apiservers[cluster.name] = APIServer(self.env, cluster, self.calibration)
            world.webhooks[cluster.name] = TokenReviewWebhook(
                self.env, cluster.name, self.calibration, self.recorder
            )
        starts = world.streams.get("agents")
        for cluster in scenario.clusters:
            agents = [
                Agent(world, cluster, replica=index + 1, host=host)
                for index, host in enumerate(cluster.agent_hosts())
            ]
            if cluster.agent == "rke1":
                agents += [Agent(world, cluster, node.name) for node in cluster.nodes]
            for agent in agents:
                world.agents[(cluster.name, agent.name)] = agent
                world.hosts.setdefault((cluster.name, agent.host), []).append(agent)
                delay = starts.uniform(0.0, AGENT_START_SPREAD_SECONDS)
                self.env.process(agent.run(delay, starts.gauss(0.0, 1.0)))
        self.health = HealthSyncer(world)
        self.env.process(self.health.run())
        Users(world, AuthProxy(world), ClusterEndpoint(world)).start()
        schedule_faults(world)

    @property
    def end_seconds(self) -> float:
        """The scenario's horizon plus a drain long enough for the longest wait to end."""
        protocol = self.calibration.protocol
        longest = max(
            self.calibration.network.client_timeout_seconds,
            protocol.dial_wait_polls * protocol.dial_wait_max_seconds + protocol.read_deadline_seconds,
        )
        return max(self.scenario.horizon_seconds, 1.0) + longest

    def run(self, *, until: float | None = None, progress: Callable[[float], Any] | None = None) -> None:
        """Run to `until` (default: `end_seconds`), calling `progress(now)` about a hundred times.

        While it runs, Python's cyclic garbage collector leaves alone what exists already (the
        world: a fleet's agents, sessions and streams, which live as long as the run) and runs less
        often: the model makes millions of short-lived objects and next to no cycles, and walking
        a fleet's world at every full collection cost several percent of a run. The collector
        gets its settings back afterwards.
        """
        end = self.end_seconds if until is None else until
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
        try:
            if progress is None:
                self.env.run(until=end)
                return
            step = end / 100
            now = 0.0
            while now < end:
                now = min(now + step, end)
                self.env.run(until=now)
                progress(now)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

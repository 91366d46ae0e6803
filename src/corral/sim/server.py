"""The management server's own state: up or down, its workers, and its impersonation cache.

Going down closes every tunnel session at once (the process that held them is gone) and forgets
which impersonation accounts were ensured; coming back starts with empty caches, so each user's
first request to a cluster checks its account again (found, not created).
"""

from __future__ import annotations

import simpy

from corral.sim.world import World


class ManagementServer:
    """The server process(es) of the scenario's `server` section."""

    def __init__(self, world: World) -> None:
        spec = world.scenario.server
        self._world = world
        self.region = spec.region
        self.up = True
        self.epoch = 0
        """Incremented on every outage; a request that saw another epoch lost its connection."""
        self.workers = simpy.Resource(world.env, capacity=spec.capacity)
        self.went_down = world.env.event()
        """Fires at the next outage; waits that an outage cuts short (dial polls) race against it."""
        self.accounts: set[tuple[str, str]] = set()
        self.pending_accounts: dict[tuple[str, str], simpy.Event] = {}

    def go_down(self) -> None:
        self.up = False
        self.epoch += 1
        self.accounts.clear()
        self.pending_accounts.clear()
        self._world.sessions.drop_all("server down")
        self.went_down.succeed()

    def come_up(self) -> None:
        self.up = True
        self.went_down = self._world.env.event()

"""The management server: replicas behind a load balancer, each with workers, CPUs and caches.

A replica that stops closes every tunnel session it holds (agents learn at once); one that
crashes closes nothing: its agents learn from silence at their read deadline, and the load
balancer keeps sending it users for a few seconds. Starting again costs a cache sync before the
replica serves; after the whole server was down, each user's first request to a cluster checks
its impersonation account again (found, not created), and every agent that lost its session comes
back within the same seconds, authorised on the replica's workers (the reconnect storm).
"""

from __future__ import annotations

from collections import deque

import simpy

from corral.sim.world import World


class Slots:
    """Identical slots (CPU cores, worker goroutines) as a FIFO counter: taking a free one schedules
    no SimPy event (the common case), and a freed one passes straight to the first in line.

    It serves waiters in the order they asked, as `simpy.Resource` does, without that resource's
    request and release events (two per use, which nobody else looks at).
    """

    __slots__ = ("_env", "_waiting", "busy", "count")

    def __init__(self, env: simpy.Environment, count: int) -> None:
        self._env = env
        self.count = count
        self.busy = 0
        self._waiting: deque[simpy.Event] = deque()

    def take(self) -> simpy.Event | None:
        """``None``: a slot is ours now; else an event that fires when one is handed to us."""
        if self.busy < self.count:
            self.busy += 1
            return None
        ticket = self._env.event()
        self._waiting.append(ticket)
        return ticket

    def give_back(self) -> None:
        if self._waiting:
            self._waiting.popleft().succeed()  # the slot passes straight to the next in line
        else:
            self.busy -= 1


class Replica:
    """One server process."""

    __slots__ = (
        "cpu",
        "crashed_at",
        "epoch",
        "index",
        "ready",
        "running",
        "went_down",
        "workers",
    )

    def __init__(self, world: World, index: int) -> None:
        spec = world.scenario.server
        self.index = index
        self.running = True
        """The process exists (it may still be syncing its caches)."""
        self.ready = True
        """Caches synced: it serves users and accepts agents."""
        self.crashed_at: float | None = None
        self.epoch = 0
        """Incremented whenever the process ends; a request that saw another epoch lost its connection."""
        self.workers = Slots(world.env, spec.workers)
        self.cpu = Slots(world.env, spec.cpus)
        self.went_down = world.env.event()
        """Fires when the process ends; waits that an outage cuts short (dial polls) race against it."""

    @property
    def name(self) -> str:
        return f"server/{self.index + 1}"


class ManagementServer:
    """The server replicas of the scenario's `server` section and the load balancer in front."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.region = world.scenario.server.region
        self.replicas = [Replica(world, index) for index in range(world.scenario.server.replicas)]
        self._next = 0
        self.accounts: set[tuple[str, str]] = set()
        """(user, cluster) accounts the server knows to exist downstream. Replicas share what
        they learn (each watches the same downstream objects); a whole-server restart forgets it."""
        self.pending_accounts: dict[tuple[str, str], simpy.Event] = {}
        self.revoked: set[str] = set()
        """Users whose token is revoked: the proxy refuses them at once."""

    @property
    def up(self) -> bool:
        """Some replica serves."""
        return any(replica.ready for replica in self.replicas)

    def route(self) -> Replica | None:
        """The replica the load balancer sends the next connection to (round robin).

        It skips replicas that are not ready, except a crashed one it has not noticed yet;
        ``None`` when no replica is in rotation (connection refused).
        """
        replicas = self.replicas
        first = replicas[self._next]
        if first.ready:  # the common case: the next in turn serves
            self._next = (self._next + 1) % len(replicas)
            return first
        if len(replicas) == 1:
            only = replicas[0]
            return only if only.ready or self._unnoticed(only) else None
        count = len(replicas)
        for step in range(count):
            replica = replicas[(self._next + step) % count]
            if replica.ready or self._unnoticed(replica):
                self._next = (self._next + step + 1) % count
                return replica
        return None

    def _unnoticed(self, replica: Replica) -> bool:
        if replica.crashed_at is None:
            return False
        detect = self._world.calibration.protocol.load_balancer_detect_seconds
        return self._world.env.now < replica.crashed_at + detect

    # -- faults ---------------------------------------------------------------------------------

    def stop(self, replica: Replica, *, crash: bool) -> None:
        """The process ends; a stop closes its sessions, a crash leaves its agents to find out."""
        if not replica.running:
            return
        replica.running = False
        replica.ready = False
        replica.epoch += 1
        replica.crashed_at = self._world.env.now if crash else None
        if crash:
            self._world.sessions.wake_parked()  # the load balancer still sends it connections
        if not any(other.running for other in self.replicas):
            self.accounts.clear()
            self.pending_accounts.clear()
        self._world.sessions.drop_replica(replica, crashed=crash)
        went_down, replica.went_down = replica.went_down, self._world.env.event()
        went_down.succeed()

    def start(self, replica: Replica) -> simpy.Event:
        """Start the process again; the returned event fires when its caches are synced."""
        world = self._world
        replica.running = True
        replica.crashed_at = None
        times = world.calibration.server
        sync = times.cache_sync_seconds + times.cache_sync_per_cluster_seconds * len(world.scenario.clusters)
        epoch = replica.epoch
        synced = world.env.timeout(sync)

        def ready(_: simpy.Event) -> None:
            if replica.running and replica.epoch == epoch:
                replica.ready = True
                world.sessions.wake_parked()

        synced.callbacks.append(ready)
        return synced

"""A downstream control plane: an apiserver per control-plane node, priority and fairness, service times.

API Priority and Fairness splits the server's concurrency into priority levels with their own
seats; inside a level, waiting requests are queued per flow (here: per user, or the management
server's own identity) and served round-robin, so one busy user cannot starve the others. A level
whose queues hold `queue_limit` requests rejects new ones with 429, as the real server does. The
seats are the cluster's (its apiservers share the load); which apiserver answers matters only
while one is down:

* ``first``: a kubeconfig naming one node (ACE without an FQDN, the admin kubeconfig) reaches
  that node's apiserver or nothing;
* ``fqdn``: ACE through a load balancer, which keeps sending to a crashed node for a few seconds;
* ``service``: the agent's in-cluster `kubernetes` Service, whose endpoints keep a crashed
  apiserver until its lease expires (15 s).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Generator
from typing import Any, Literal

import simpy

from corral.model import Calibration, Cluster
from corral.sim.kernel import FastEnvironment

REJECTED = 429
OK = 200
NO_ANSWER = 0
"""The request went to a crashed apiserver: nothing ever answers (the client times out)."""
REFUSED = -1
"""The request went to a stopped apiserver: connection refused at once."""
Entry = Literal["first", "fqdn", "service"]


class PriorityLevel:
    """Seats of one priority level and its fair queues."""

    __slots__ = ("_env", "_flows", "busy", "queue_limit", "queued", "seats")

    def __init__(self, env: simpy.Environment, *, seats: int, queue_limit: int) -> None:
        self._env = env
        self.seats = seats
        self.queue_limit = queue_limit
        self.busy = 0
        self.queued = 0
        self._flows: OrderedDict[str, deque[simpy.Event]] = OrderedDict()

    def enter(self, flow: str) -> simpy.Event | bool | None:
        """``None``: a seat is taken now; an event: wait for it; ``False``: rejected."""
        if self.busy < self.seats:
            self.busy += 1
            return None
        if self.queued >= self.queue_limit:
            return False
        ticket = self._env.event()
        queue = self._flows.get(flow)
        if queue is None:
            queue = self._flows[flow] = deque()
        queue.append(ticket)
        self.queued += 1
        return ticket

    def leave(self) -> None:
        """Free a seat, handing it to the next flow in round-robin order if one waits."""
        if not self._flows:
            self.busy -= 1
            return
        flow, queue = self._flows.popitem(last=False)
        ticket = queue.popleft()
        if queue:
            self._flows[flow] = queue  # back of the line: fairness between flows
        self.queued -= 1
        ticket.succeed()


class APIServer:
    """One cluster's control plane as its clients see it."""

    __slots__ = ("_calibration", "_env", "_lost_node", "_next", "_times", "down", "levels", "name", "nodes")

    def __init__(self, env: FastEnvironment, cluster: Cluster, calibration: Calibration) -> None:
        self._env = env
        self._calibration = calibration
        self.name = cluster.name
        self.nodes = tuple(node.name for node in cluster.control_plane_nodes)
        self.down: dict[str, float | None] = {}
        """Control-plane nodes that are down -> when they crashed (``None``: stopped cleanly)."""
        self._next = 0
        self._lost_node: dict[str, simpy.Event] = {}
        api = calibration.apiserver
        self._times = api.verbs
        self.levels = {
            "system": PriorityLevel(env, seats=api.system_seats, queue_limit=api.queue_limit),
            "workload": PriorityLevel(env, seats=api.workload_seats, queue_limit=api.queue_limit),
        }

    def reach(self, entry: Entry) -> int:
        """Which answer a new connection gets: `OK`, `NO_ANSWER` or `REFUSED`."""
        if not self.down:
            return OK
        node = self.pick(entry)
        if node is None:
            return REFUSED
        if node not in self.down:
            return OK
        return NO_ANSWER if self.down[node] is not None else REFUSED

    def pick(self, entry: Entry) -> str | None:
        """The control-plane node a new connection reaches (``None``: no endpoint at all)."""
        if entry == "first":
            return self.nodes[0]
        if not self.down:
            node = self.nodes[self._next % len(self.nodes)]
            self._next += 1
            return node
        now = self._env.now
        window = (
            self._calibration.protocol.load_balancer_detect_seconds
            if entry == "fqdn"
            else self._calibration.apiserver.endpoint_lease_seconds
        )
        candidates = [
            n
            for n in self.nodes
            if n not in self.down or ((crashed := self.down[n]) is not None and now < crashed + window)
        ]
        if not candidates:
            return None
        node = candidates[self._next % len(candidates)]
        self._next += 1
        return node

    def node_lost(self, node: str) -> simpy.Event:
        """An event that fires when `node`'s apiserver goes down (streams held on it end)."""
        event = self._lost_node.get(node)
        if event is None:
            event = self._lost_node[node] = self._env.event()
        return event

    def set_node(self, node: str, *, down: bool, crash: bool = False) -> None:
        """A control-plane node went down (crashed or stopped) or came back."""
        if node not in self.nodes:
            return
        if not down:
            self.down.pop(node, None)
            return
        self.down[node] = self._env.now if crash else None
        event = self._lost_node.pop(node, None)
        if event is not None:
            event.succeed(crash)

    def serve(self, verb: str, *, flow: str, level: str, z: float) -> Generator[Any, Any, int]:
        """Wait for a seat and do the work; returns the HTTP status."""
        seats = self.levels[level]
        ticket = seats.enter(flow)
        if ticket is False:
            return REJECTED
        if ticket is not None:
            yield ticket
        yield self._env.sleep(self._times[verb].at(z))
        seats.leave()
        return OK

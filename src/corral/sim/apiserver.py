"""A downstream kube-apiserver: service time by verb behind a simple priority-and-fairness queue.

API Priority and Fairness splits the server's concurrency into priority levels with their own
seats; inside a level, waiting requests are queued per flow (here: per user, or the management
server's own identity) and served round-robin, so one busy user cannot starve the others. A level
whose queues hold `queue_limit` requests rejects new ones with 429, as the real server does.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Calibration

REJECTED = 429
OK = 200


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
    """One cluster's kube-apiserver."""

    __slots__ = ("_env", "_times", "levels", "name")

    def __init__(self, env: simpy.Environment, name: str, calibration: Calibration) -> None:
        self._env = env
        self.name = name
        api = calibration.apiserver
        self._times = api.verbs
        self.levels = {
            "system": PriorityLevel(env, seats=api.system_seats, queue_limit=api.queue_limit),
            "workload": PriorityLevel(env, seats=api.workload_seats, queue_limit=api.queue_limit),
        }

    def serve(self, verb: str, *, flow: str, level: str, z: float) -> Generator[Any, Any, int]:
        """Wait for a seat and do the work; returns the HTTP status."""
        seats = self.levels[level]
        ticket = seats.enter(flow)
        if ticket is False:
            return REJECTED
        if ticket is not None:
            yield ticket
        yield self._env.timeout(self._times[verb].at(z))
        seats.leave()
        return OK

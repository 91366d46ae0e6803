"""The Connected condition of every downstream cluster, every 15 s, as Rancher's clusterconnected controller.

Each tick looks at every non-internal cluster: a live cluster-agent session (key ``<cluster>``) that
answers a probe means ``Connected=True``; none means ``Connected=False`` and, for a provisioned
cluster, ``Ready=False`` with reason ``Disconnected`` and message "Cluster agent is not connected"
(docs/rancher.md#health-and-the-connected-condition). Node agents' sessions do not count, as in
Rancher, where Connected follows the cluster agent's pod. Ready=True stays the business of the
health check of the downstream API (the cluster controllers). So the condition turns False within
one interval of the last session going. Writes go to the Cluster's status through the server state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from corral.errors import CorralError
from corral.model.trace import ClusterConditionChanged, Event
from corral.server.registration import set_condition
from corral.tasks import cancel_and_wait
from corral.tunnel import Clock, SessionManager, SystemClock

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_INTERVAL_SECONDS", "NOT_CONNECTED", "ClusterHealth"]

DEFAULT_INTERVAL_SECONDS: Final = 15.0
NOT_CONNECTED: Final = "Cluster agent is not connected"

Probe = Callable[[str], Awaitable[bool]]
"""Does the cluster's agent answer? (Rancher: ``GET /ping`` through the Steve tunnel.)"""


class _State(Protocol):
    @property
    def clusters(self) -> Any: ...

    async def patch_status(
        self, plural: str, name: str, status: dict[str, Any], *, namespace: str = ""
    ) -> Any: ...


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


class ClusterHealth:
    """The periodic Connected check; `tick` is one pass (tests drive it with a fake clock)."""

    def __init__(
        self,
        state: _State,
        manager: SessionManager,
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Clock | None = None,
        probe: Probe | None = None,
        trace_sink: Callable[[Event], None] | None = None,
        trace_time: Callable[[], float] | None = None,
    ) -> None:
        if interval_seconds <= 0:
            raise CorralError(f"health interval must be > 0 s, got {interval_seconds}")
        self.state = state
        self.manager = manager
        self.interval_seconds = interval_seconds
        self.clock = clock or SystemClock()
        self.probe = probe
        self.trace_sink = trace_sink
        self._trace_time = trace_time or self.clock.now
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except CorralError as exc:
                logger.warning("cluster health tick: %s", exc)
            await self.clock.sleep(self.interval_seconds)

    async def connected(self, cluster: str) -> bool:
        if not any(not s.closed for s in self.manager.sessions(cluster)):
            return False
        return await self.probe(cluster) if self.probe is not None else True

    async def tick(self) -> None:
        """Check every non-internal cluster once and write what changed."""
        for cluster in list(self.state.clusters.list()):
            name = str(cluster["metadata"]["name"])
            if (cluster.get("spec") or {}).get("internal"):
                continue
            await self._check(name, cluster)

    async def _check(self, name: str, cluster: dict[str, Any]) -> None:
        connected = await self.connected(name)
        conditions = [dict(c) for c in (cluster.get("status") or {}).get("conditions") or ()]
        was = _condition(cluster, "Connected")
        changed = set_condition(conditions, "Connected", connected)
        if not connected and _condition(cluster, "Provisioned") == "True":
            changed |= set_condition(conditions, "Ready", False, reason="Disconnected", message=NOT_CONNECTED)
        if not changed:
            return
        await self.state.patch_status("clusters", name, {"conditions": conditions})
        if was != ("True" if connected else "False"):
            logger.info("cluster %s: Connected=%s", name, connected)
            if self.trace_sink is not None:
                self.trace_sink(
                    ClusterConditionChanged(t=self._trace_time(), cluster=name, connected=connected)
                )

"""The cluster agent's node stats: its pods' requests and limits, written onto each downstream Node.

As Rancher's cluster agent does, the sums go into two annotations of the Node
(``management.cattle.io/pod-requests`` and ``pod-limits``, JSON resource lists), refreshed every 15 s;
the server's node syncer reads them from there into the management Node objects. A pod counts while it
is not Succeeded or Failed; an init container raises a pod's figure to its own when that is larger.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, Final

from corral.errors import CorralError
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.quantity import Quantity, QuantityError, add_lists, max_lists
from corral.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

__all__ = [
    "LIMITS_ANNOTATION",
    "REQUESTS_ANNOTATION",
    "PodResources",
    "node_annotations",
    "pod_resources",
]

REQUESTS_ANNOTATION: Final = "management.cattle.io/pod-requests"
LIMITS_ANNOTATION: Final = "management.cattle.io/pod-limits"
INTERVAL_SECONDS: Final = 15.0


def _pod_figures(pod: Mapping[str, Any]) -> tuple[dict[str, Quantity], dict[str, Quantity]]:
    spec = pod.get("spec") or {}
    containers = [c.get("resources") or {} for c in spec.get("containers") or ()]
    requests = add_lists(r.get("requests") or {} for r in containers)
    limits = add_lists(r.get("limits") or {} for r in containers)
    for init in spec.get("initContainers") or ():
        resources = init.get("resources") or {}
        max_lists(requests, resources.get("requests") or {})
        max_lists(limits, resources.get("limits") or {})
    return requests, limits


def pod_resources(pods: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """The requests and limits of ``pods`` (one node's), as resource lists; requests count the pods."""
    counted = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}
    for pod in counted:
        pod_requests, pod_limits = _pod_figures(pod)
        for total, figures in ((requests, pod_requests), (limits, pod_limits)):
            for name, quantity in figures.items():
                total[name] = total.get(name, Quantity(Fraction(0))) + quantity
    if counted:
        requests["pods"] = Quantity(Fraction(len(counted)))
    return ({k: str(v) for k, v in requests.items()}, {k: str(v) for k, v in limits.items()})


def node_annotations(pods: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The two annotations for one node's pods, as JSON with sorted keys (Go's map encoding)."""
    requests, limits = pod_resources(pods)
    return {
        REQUESTS_ANNOTATION: json.dumps(requests, sort_keys=True, separators=(",", ":")),
        LIMITS_ANNOTATION: json.dumps(limits, sort_keys=True, separators=(",", ":")),
    }


class PodResources:
    """Keeps every node's pod-requests and pod-limits annotations current, every ``interval_seconds``."""

    def __init__(self, client: AsyncKubeClient, *, interval_seconds: float = INTERVAL_SECONDS) -> None:
        self.client = client
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except (CorralError, OSError) as e:
                logger.warning("node pod resources: %s", e)
            await asyncio.sleep(self.interval_seconds)

    async def sync_once(self) -> int:
        """Annotate every node whose figures changed; returns how many were written."""
        nodes = (await self.client.list("/api/v1/nodes")).get("items") or []
        pods = (await self.client.list("/api/v1/pods")).get("items") or []
        by_node: dict[str, list[Mapping[str, Any]]] = {}
        for pod in pods:
            name = (pod.get("spec") or {}).get("nodeName")
            if name:
                by_node.setdefault(name, []).append(pod)
        written = 0
        for node in nodes:
            name = node["metadata"]["name"]
            try:
                wanted = node_annotations(by_node.get(name, ()))
            except QuantityError as e:
                logger.warning("node %s: a pod's resources: %s", name, e)
                continue
            current = node["metadata"].get("annotations") or {}
            if all(current.get(k) == v for k, v in wanted.items()):
                continue
            await self.client.patch(f"/api/v1/nodes/{name}", {"metadata": {"annotations": wanted}})
            written += 1
        return written

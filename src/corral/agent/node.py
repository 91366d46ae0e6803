"""A virtual node's heartbeat, kept by its node agent as a kubelet keeps a real node's.

While the agent runs it renews the node's Lease in ``kube-node-lease`` every quarter of its duration
(a kubelet's rule: 10 s of 40 s by default, 2 s of the 8 s corral's nodes use) and posts
``Ready=True`` in the Node's status at start, every minute, and whenever the Node shows otherwise;
with its first post it also fills what a kubelet reports and the Node lacks: capacity, allocatable
and node info, from the host it runs on (`host_node_status`).
When it stops, nothing is written any more, so the node lifecycle controller of the cluster marks the
node NotReady (Unknown) on Kubernetes' own schedule (the node monitor grace period after the last
renewal) -- exactly as for a kubelet that died. Real nodes have their kubelet for this.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import platform
from pathlib import Path
from typing import Any, Final

from corral.errors import AlreadyExistsError, CorralError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.tasks import cancel_and_wait
from corral.tunnel import Clock, SystemClock

logger = logging.getLogger(__name__)

__all__ = ["LEASE_DURATION_SECONDS", "NodeHeartbeat", "host_node_status"]

LEASE_NAMESPACE: Final = "kube-node-lease"
LEASE_DURATION_SECONDS: Final = 40
LEASES: Final = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
MAX_PODS: Final = "110"
_GO_ARCH: Final = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def _field(text: str, key: str) -> str:
    for line in text.splitlines():
        name, _, value = line.partition("=" if "=" in line else ":")
        if name.strip() == key:
            return value.strip().strip('"')
    return ""


def host_node_status(
    *, kubelet_version: str, proc: Path = Path("/proc"), etc: Path = Path("/etc")
) -> dict[str, Any]:
    """What a kubelet on this host would report: capacity, allocatable (no reservations) and node info."""

    def read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    memory_kib = _field(read(proc / "meminfo"), "MemTotal").removesuffix("kB").strip() or "0"
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{int(memory_kib)}Ki", "pods": MAX_PODS}
    machine = platform.machine()
    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "nodeInfo": {
            "machineID": read(etc / "machine-id").strip(),
            "systemUUID": "",
            "bootID": read(proc / "sys/kernel/random/boot_id").strip(),
            "kernelVersion": platform.release(),
            "osImage": _field(read(etc / "os-release"), "PRETTY_NAME") or "Linux",
            "containerRuntimeVersion": "",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": _GO_ARCH.get(machine, machine),
        },
    }


def _micro(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeHeartbeat:
    """Renews one node's Lease and Ready condition until stopped."""

    def __init__(
        self,
        client: AsyncKubeClient,
        node: str,
        *,
        lease_duration_seconds: int = LEASE_DURATION_SECONDS,
        lease_interval_seconds: float | None = None,
        status_interval_seconds: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.node = node
        self.lease_duration_seconds = lease_duration_seconds
        self.lease_interval_seconds = (
            lease_duration_seconds / 4 if lease_interval_seconds is None else lease_interval_seconds
        )
        self.status_interval_seconds = status_interval_seconds
        self.clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        last_status: float | None = None
        while True:
            try:
                await self.renew_lease()
                now = self.clock.now()
                due = last_status is None or now - last_status >= self.status_interval_seconds
                if await self.post_ready(only_if_not_ready=not due):
                    last_status = now
            except CorralError as exc:
                logger.warning("node %s heartbeat: %s", self.node, exc)
            await self.clock.sleep(self.lease_interval_seconds)

    async def renew_lease(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        path = f"{LEASES}/{self.node}"
        try:
            await self.client.patch(path, {"spec": {"renewTime": _micro(now), "holderIdentity": self.node}})
        except NotFoundError:
            node = await self.client.get(f"/api/v1/nodes/{self.node}")
            lease: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.node,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": self.node,
                    "leaseDurationSeconds": self.lease_duration_seconds,
                    "renewTime": _micro(now),
                },
            }
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(LEASES, lease)

    async def post_ready(self, *, only_if_not_ready: bool = False) -> bool:
        """Post ``Ready=True``; with ``only_if_not_ready``, only when the Node does not show it (the node
        lifecycle controller marked it Unknown, say), as a kubelet corrects its status. True if posted."""
        now = _seconds(datetime.datetime.now(datetime.UTC))
        node = await self.client.get(f"/api/v1/nodes/{self.node}")
        previous: dict[str, Any] = next(
            (c for c in (node.get("status") or {}).get("conditions") or () if c.get("type") == "Ready"), {}
        )
        if only_if_not_ready and previous.get("status") == "True":
            return False
        transition = previous.get("lastTransitionTime") if previous.get("status") == "True" else now
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "corral node agent is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition or now,
        }
        status: dict[str, Any] = {"conditions": [condition]}
        current = node.get("status") or {}
        if not current.get("capacity") or not (current.get("nodeInfo") or {}).get("kubeletVersion"):
            version = str((await self.client.get("/version")).get("gitVersion") or "")
            status.update(
                {k: v for k, v in host_node_status(kubelet_version=version).items() if not current.get(k)}
            )
            if (current.get("nodeInfo") or {}) and not current["nodeInfo"].get("kubeletVersion"):
                status["nodeInfo"] = host_node_status(kubelet_version=version)["nodeInfo"]
        await self.client.patch(f"/api/v1/nodes/{self.node}/status", {"status": status}, kind="strategic")
        return True

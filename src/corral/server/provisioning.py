"""Clusters the server creates itself (``driver: local``): a control plane from an injected `Provisioner`.

The server may not import the control-plane tooling (the layering keeps it a client of clusters), so
whoever starts it hands it a `Provisioner`; ``corral server --provision-dir DIR`` gives the local
provider's. `LocalDriver` runs Rancher's sequence for a provisioned cluster in the background: a
registration token for the cluster's agent, the control plane and its agent from the provisioner,
the cluster registered with its ``cattle`` credential (then the controllers make it Ready); a
failure is written into the Provisioned condition. Deleting the cluster deprovisions it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from corral.auth.tokens import generate_secret
from corral.errors import CorralError
from corral.server.registration import register_cluster, set_condition
from corral.server.state import ServerState

logger = logging.getLogger(__name__)

__all__ = [
    "LOCAL_DRIVER",
    "LocalDriver",
    "ProvisionRequest",
    "ProvisionedControlPlane",
    "Provisioner",
    "ProvisioningError",
]

LOCAL_DRIVER: Final = "local"


class ProvisioningError(CorralError):
    """A control plane could not be created or removed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionRequest:
    """What a provisioner needs to bring a cluster up and connect its agent to this server."""

    cluster_id: str
    server_url: str
    cacerts: str
    """The server's CA (the ``cacerts`` setting): the agent pins its checksum."""
    registration_token: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionedControlPlane:
    """A running control plane: its apiserver's ``host:port``, CA and the ``cattle`` account's token."""

    address: str
    ca_pem: bytes = field(repr=False)
    sa_token: str = field(repr=False)


class Provisioner(Protocol):
    """Creates and removes downstream control planes (the local provider, or anything else)."""

    async def provision(self, request: ProvisionRequest) -> ProvisionedControlPlane: ...

    async def deprovision(self, cluster_id: str) -> None: ...


class LocalDriver:
    """Provisions ``driver: local`` clusters in the background and removes them with their Cluster."""

    def __init__(self, state: ServerState, provisioner: Provisioner) -> None:
        self.state = state
        self.provisioner = provisioner
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._removals: set[asyncio.Task[None]] = set()

    def start(self, cluster_id: str) -> None:
        """Begin provisioning ``cluster_id`` (a stored Cluster with ``status.driver: local``)."""
        if cluster_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._provision(cluster_id))
        self._tasks[cluster_id] = task
        task.add_done_callback(_forget(self._tasks, cluster_id, task))

    def remove(self, cluster_id: str) -> None:
        """Stop provisioning (if under way) and remove the control plane, in the background."""
        running = self._tasks.pop(cluster_id, None)
        if running is not None:
            running.cancel()

        async def deprovision() -> None:
            if running is not None:
                with contextlib.suppress(asyncio.CancelledError, CorralError):
                    await running
            try:
                await self.provisioner.deprovision(cluster_id)
                logger.info("cluster %s: control plane removed", cluster_id)
            except (CorralError, OSError) as exc:
                logger.warning("cluster %s: removing the control plane failed: %s", cluster_id, exc)

        task = asyncio.get_running_loop().create_task(deprovision())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def close(self) -> None:
        """Cancel provisioning under way (its processes stay for the next start) and finish removals."""
        for task in self._tasks.values():
            task.cancel()
        for task in [*self._tasks.values(), *self._removals]:
            with contextlib.suppress(asyncio.CancelledError, CorralError):
                await task
        self._tasks.clear()

    async def _provision(self, cluster_id: str) -> None:
        try:
            await self._set_provisioned(cluster_id, False, reason="Provisioning", message="provisioning")
            token = await self._registration_token(cluster_id)
            request = ProvisionRequest(
                cluster_id=cluster_id,
                server_url=self.state.setting("server-url"),
                cacerts=self.state.setting("cacerts"),
                registration_token=token,
            )
            plane = await self.provisioner.provision(request)
            if await self.state.get_fresh("clusters", cluster_id) is None:
                logger.info("cluster %s was deleted while it was provisioned", cluster_id)
                return
            await register_cluster(
                self.state.upstream,
                cluster_id,
                address=plane.address,
                sa_token=plane.sa_token,
                ca_cert_pem=plane.ca_pem,
            )
            logger.info("cluster %s: control plane provisioned at %s", cluster_id, plane.address)
        except (CorralError, OSError) as exc:
            logger.warning("cluster %s: provisioning failed: %s", cluster_id, exc)
            with contextlib.suppress(CorralError):
                await self._set_provisioned(cluster_id, False, reason="Error", message=str(exc)[:512])

    async def _registration_token(self, cluster_id: str) -> str:
        token = generate_secret()
        await self.state.create(
            "clusterregistrationtokens",
            {
                "metadata": {"generateName": "crt-"},
                "spec": {"clusterName": cluster_id},
                "status": {"token": token},
            },
            namespace=cluster_id,
        )
        return token

    async def _set_provisioned(self, cluster_id: str, value: bool, *, reason: str, message: str) -> None:
        cluster = await self.state.get_fresh("clusters", cluster_id)
        if cluster is None:
            return
        conditions = [dict(c) for c in (cluster.get("status") or {}).get("conditions") or ()]
        if set_condition(conditions, "Provisioned", value, reason=reason, message=message):
            await self.state.patch_status("clusters", cluster_id, {"conditions": conditions})


def _forget(tasks: dict[str, asyncio.Task[None]], key: str, task: asyncio.Task[None]) -> Callable[..., None]:
    def done(_: object) -> None:
        if tasks.get(key) is task:
            del tasks[key]

    return done

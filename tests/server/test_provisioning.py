"""`LocalDriver` with stand-in provisioners: what lands on the Cluster, what is removed.

The state is a stand-in holding one Cluster; the happy path (a real control plane that registers and
becomes Ready) is the conformance suite's (conformance/server/test_local_driver.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.server.provisioning import (
    LocalDriver,
    ProvisionedControlPlane,
    ProvisioningError,
    ProvisionRequest,
)


class _State:
    def __init__(self) -> None:
        self.cluster: dict[str, Any] | None = {"metadata": {"name": "c-abcde"}, "status": {"driver": "local"}}
        self.created: list[tuple[str, dict[str, Any], str]] = []
        self.upstream = None
        self.failed = asyncio.Event()

    def setting(self, name: str, fallback: str = "") -> str:
        return {"server-url": "https://server.example:8443", "cacerts": "PEM"}.get(name, fallback)

    async def create(self, plural: str, obj: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        self.created.append((plural, obj, namespace))
        return obj

    async def get_fresh(self, plural: str, name: str, *, namespace: str = "") -> dict[str, Any] | None:
        return self.cluster

    async def patch_status(self, plural: str, name: str, status: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert self.cluster is not None
        self.cluster["status"].update(status)
        if any(c.get("reason") == "Error" for c in status.get("conditions") or ()):
            self.failed.set()
        return self.cluster


class _Provisioner:
    def __init__(self, error: str = "") -> None:
        self.error = error
        self.requests: list[ProvisionRequest] = []
        self.removed: list[str] = []
        self.started = asyncio.Event()

    async def provision(self, request: ProvisionRequest) -> ProvisionedControlPlane:
        self.requests.append(request)
        self.started.set()
        if self.error:
            raise ProvisioningError(self.error)
        await asyncio.sleep(3600)  # a slow provider: the cluster is deleted meanwhile
        raise AssertionError("not reached")

    async def deprovision(self, cluster_id: str) -> None:
        self.removed.append(cluster_id)


async def test_a_failure_is_written_into_the_provisioned_condition() -> None:
    state, provisioner = _State(), _Provisioner(error="etcd did not become healthy")
    driver = LocalDriver(state, provisioner)  # type: ignore[arg-type]
    driver.start("c-abcde")
    async with asyncio.timeout(30):
        await state.failed.wait()
    await driver.close()
    [request] = provisioner.requests
    assert request.cluster_id == "c-abcde"
    assert request.server_url == "https://server.example:8443"
    [(plural, token, namespace)] = state.created
    assert (plural, namespace) == ("clusterregistrationtokens", "c-abcde")
    assert token["status"]["token"] == request.registration_token
    assert request.registration_token not in repr(request)  # the secret stays out of logs
    assert state.cluster is not None
    [condition] = state.cluster["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Provisioned", "False", "Error")
    assert condition["message"] == "etcd did not become healthy"


async def test_deleting_during_provisioning_cancels_it_and_removes_the_control_plane() -> None:
    state, provisioner = _State(), _Provisioner()
    driver = LocalDriver(state, provisioner)  # type: ignore[arg-type]
    driver.start("c-abcde")
    async with asyncio.timeout(30):
        await provisioner.started.wait()
    driver.remove("c-abcde")
    await driver.close()
    assert provisioner.removed == ["c-abcde"]

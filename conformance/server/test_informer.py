"""The informer against a real kube-apiserver: list, watch, local writes first, resume after a stop.

ConfigMaps in a namespace of the test stand for any collection (the informer is generic). Relisting
after 410 Gone is in tests/server/test_informer.py: a real apiserver answers 410 only after etcd
compacts, which a test cannot time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.k8s.aio import AsyncKubeClient
from corral.server.informer import ADDED, DELETED, MODIFIED, Informer

Event = tuple[str, str | None, str | None]
#: Every namespace also holds the apiserver's kube-root-ca.crt ConfigMap: the selector leaves it out.
SELECTOR = "corral-test=informer"


@pytest.fixture
async def namespace(cluster_set: ClusterSet) -> AsyncIterator[tuple[AsyncKubeClient, str]]:
    handle = next(iter(cluster_set))
    name = f"t-informer-{uuid.uuid4().hex[:8]}"
    async with AsyncKubeClient(handle.admin_config()) as client:
        await client.create("/api/v1/namespaces", {"metadata": {"name": name}})
        try:
            yield client, name
        finally:
            await client.delete(f"/api/v1/namespaces/{name}")


def _recorder(informer: Informer) -> tuple[list[Event], asyncio.Event]:
    events: list[Event] = []
    arrived = asyncio.Event()

    def record(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        def data(obj: dict[str, Any] | None) -> str | None:
            return None if obj is None else (obj.get("data") or {}).get("v")

        events.append((kind, data(old), data(new)))
        arrived.set()

    informer.on_change(record)
    return events, arrived


async def _until(events: list[Event], count: int) -> None:
    for _ in range(1500):
        if len(events) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} events expected within 30 s, got {events}")


def _cm(name: str, value: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"corral-test": "informer"}}, "data": {"v": value}}


async def test_lists_then_watches_every_change_in_order(namespace: tuple[AsyncKubeClient, str]) -> None:
    client, ns = namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    await client.create(path, _cm("before", "0"))
    informer = Informer(client, path, label_selector=SELECTOR)
    informer.add_index("value", lambda obj: [(obj.get("data") or {}).get("v", "")])
    events, _ = _recorder(informer)
    await informer.start()
    try:
        await informer.wait_synced(30)
        assert informer.get(f"{ns}/before") is not None
        assert informer.get(f"{ns}/before")["kind"] == "ConfigMap"  # type: ignore[index]
        assert events == [(ADDED, None, "0")]
        await client.create(path, _cm("a", "1"))
        await client.patch(f"{path}/a", {"data": {"v": "2"}})
        await client.delete(f"{path}/before")
        await _until(events, 4)
        assert events == [(ADDED, None, "0"), (ADDED, None, "1"), (MODIFIED, "1", "2"), (DELETED, "0", None)]
        assert [o["metadata"]["name"] for o in informer.list()] == ["a"]
        assert [o["metadata"]["name"] for o in informer.by_index("value", "2")] == ["a"]
        assert informer.by_index("value", "1") == []
        assert informer.relists == 1
    finally:
        await informer.stop()


async def test_observe_and_forget_are_seen_before_the_watch_and_stale_events_are_ignored(
    namespace: tuple[AsyncKubeClient, str],
) -> None:
    client, ns = namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    informer = Informer(client, path, label_selector=SELECTOR)
    events, _ = _recorder(informer)
    await informer.start()
    try:
        await informer.wait_synced(30)
        created = await client.create(path, _cm("x", "1"))
        await informer.observe(created)
        assert informer.get(f"{ns}/x") is not None
        updated = await client.patch(f"{path}/x", {"data": {"v": "2"}})
        await informer.observe(updated)
        deleted = await client.delete(f"{path}/x")
        await informer.forget(f"{ns}/x", deleted=deleted)
        assert informer.get(f"{ns}/x") is None
        # The watch now delivers ADDED(1), MODIFIED(2), DELETED: all older than what the cache saw.
        await client.create(path, _cm("marker", "m"))
        await _until(events, 4)
        await asyncio.sleep(0.2)
        assert informer.get(f"{ns}/x") is None
        assert events == [(ADDED, None, "1"), (MODIFIED, "1", "2"), (DELETED, "2", None), (ADDED, None, "m")]
    finally:
        await informer.stop()


async def test_restart_resumes_the_watch_without_a_list(namespace: tuple[AsyncKubeClient, str]) -> None:
    client, ns = namespace
    path = f"/api/v1/namespaces/{ns}/configmaps"
    informer = Informer(client, path, label_selector=SELECTOR)
    events, _ = _recorder(informer)
    await informer.start()
    await informer.wait_synced(30)
    await informer.stop()
    await client.create(path, _cm("while-stopped", "1"))
    await informer.start()
    try:
        await _until(events, 1)
        assert events == [(ADDED, None, "1")]
        assert informer.relists == 1
    finally:
        await informer.stop()

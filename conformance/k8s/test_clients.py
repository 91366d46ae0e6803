"""Both Kubernetes clients against a real kube-apiserver: CRUD, server-side apply, typed errors, watches."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from corral import errors
from corral.controlplane.clusters import ClusterHandle
from corral.k8s import KubeClient, KubeConfig, Watch, wait_for
from corral.k8s.aio import AsyncKubeClient, AsyncWatch
from corral.k8s.aio import wait_for as async_wait_for

pytestmark = pytest.mark.requirement("CP-012")


def config_map(name: str, data: dict[str, str], **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def managers(obj: dict[str, Any]) -> dict[str, str]:
    """Field managers of an object and the operation each last did."""
    return {entry["manager"]: entry["operation"] for entry in obj["metadata"].get("managedFields", [])}


# -- sync ---------------------------------------------------------------------------------------------


def test_create_get_list_replace_patch_delete_round_trip(admin: KubeClient, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    created = admin.create(base, config_map("one", {"a": "1"}, app="x"))
    admin.create(base, config_map("two", {"b": "2"}, app="y"))
    assert admin.get(f"{base}/one")["data"] == {"a": "1"}
    listed = admin.list(base, label_selector="app=x")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["one"]
    assert listed["metadata"]["resourceVersion"]

    replaced = admin.replace(f"{base}/one", {**created, "data": {"a": "2"}})
    assert replaced["data"] == {"a": "2"}
    with pytest.raises(errors.ConflictError) as stale:
        admin.replace(f"{base}/one", {**created, "data": {"a": "3"}})
    assert (stale.value.status, stale.value.reason) == (409, "Conflict")

    assert admin.patch(f"{base}/one", {"data": {"c": "3"}})["data"] == {"a": "2", "c": "3"}
    patched = admin.patch(f"{base}/one", [{"op": "remove", "path": "/data/a"}], kind="json")
    assert patched["data"] == {"c": "3"}

    admin.delete(f"{base}/one")
    assert not admin.exists(f"{base}/one")
    with pytest.raises(errors.NotFoundError, match=rf"GET {base}/one: 404 NotFound: "):
        admin.get(f"{base}/one")
    with pytest.raises(errors.NotFoundError):
        admin.delete(f"{base}/one", missing_ok=False)


def test_creating_twice_is_already_exists_and_a_bad_name_is_invalid(
    admin: KubeClient, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    admin.create(base, config_map("dup", {}))
    with pytest.raises(errors.AlreadyExistsError) as exists:
        admin.create(base, config_map("dup", {}))
    assert (exists.value.status, exists.value.reason) == (409, "AlreadyExists")
    assert str(exists.value).startswith(f"POST {base}: 409 AlreadyExists: ")
    with pytest.raises(errors.InvalidError) as invalid:
        admin.create(base, config_map("Not_A_Name", {}))
    assert invalid.value.status == 422
    assert "Not_A_Name" in str(invalid.value)


def test_server_side_apply_creates_then_updates_and_records_corral_as_the_field_manager(
    admin: KubeClient, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    first = admin.apply(base, config_map("ssa", {"a": "1"}))
    assert managers(first) == {"corral": "Apply"}
    second = admin.apply(base, config_map("ssa", {"a": "1", "b": "2"}))
    assert second["data"] == {"a": "1", "b": "2"}
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    # Applying again without a field it owned removes that field: apply states the whole intent.
    third = admin.apply(base, config_map("ssa", {"b": "2"}))
    assert third["data"] == {"b": "2"}


def test_a_field_owned_by_another_manager_conflicts_until_apply_forces_it(
    admin: KubeClient, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    admin.apply(base, config_map("owned", {"a": "1"}))
    with pytest.raises(errors.ConflictError) as conflict:
        admin.apply(base, config_map("owned", {"a": "2"}), field_manager="someone-else")
    assert conflict.value.status == 409
    assert "corral" in str(conflict.value)
    taken = admin.apply(base, config_map("owned", {"a": "2"}), field_manager="someone-else", force=True)
    assert taken["data"] == {"a": "2"}
    assert "someone-else" in managers(taken)


def test_a_user_without_rights_gets_forbidden_and_a_bad_token_unauthorized(
    handle: ClusterHandle, namespace: str
) -> None:
    with handle.client("nobody") as nobody, pytest.raises(errors.ForbiddenError) as forbidden:
        nobody.get(f"/api/v1/namespaces/{namespace}/secrets")
    assert (forbidden.value.status, forbidden.value.reason) == (403, "Forbidden")
    assert "nobody" in str(forbidden.value)
    config = handle.admin_config()
    bad = KubeConfig(server=config.server, ca_pem=config.ca_pem, token="not-a-real-token")
    with KubeClient(bad) as client, pytest.raises(errors.UnauthorizedError) as unauthorized:
        client.get("/api/v1/namespaces")
    assert unauthorized.value.status == 401
    assert "not-a-real-token" not in str(unauthorized.value)


def collect_until_deleted(watch: Watch, name: str) -> list[str]:
    kinds = []
    for kind, obj in watch:
        if obj["metadata"]["name"] == name:
            kinds.append(kind)
            if kind == "DELETED":
                break
    return kinds


def test_a_watch_from_a_list_sees_added_modified_and_deleted(admin: KubeClient, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    start = admin.list(base)["metadata"]["resourceVersion"]
    admin.create(base, config_map("watched", {"a": "1"}))
    admin.patch(f"{base}/watched", {"data": {"a": "2"}})
    admin.delete(f"{base}/watched")
    with admin.watch(base, resource_version=start, timeout_seconds=60) as watch:
        kinds = collect_until_deleted(watch, "watched")
    assert kinds == ["ADDED", "MODIFIED", "DELETED"]
    assert int(watch.resource_version) > int(start)


def test_a_watch_filters_by_label(admin: KubeClient, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    start = admin.list(base)["metadata"]["resourceVersion"]
    admin.create(base, config_map("other", {}, app="other"))
    admin.create(base, config_map("mine", {}, app="mine"))
    admin.delete(f"{base}/mine")
    with admin.watch(base, resource_version=start, label_selector="app=mine", timeout_seconds=60) as watch:
        names = {obj["metadata"]["name"] for _kind, obj in _until_deleted(watch)}
    assert names == {"mine"}


def test_stop_from_another_thread_ends_a_watch_blocked_on_its_stream(
    admin: KubeClient, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    # The controller manager publishes kube-root-ca.crt into every new namespace on its own time;
    # the watch starts after it, so the only event it may see is the test's own ConfigMap.
    wait_for(lambda: admin.exists(f"{base}/kube-root-ca.crt"), timeout_seconds=30, what="kube-root-ca.crt")
    start = admin.list(base)["metadata"]["resourceVersion"]
    watch = admin.watch(base, resource_version=start)
    events: list[tuple[str, dict[str, Any]]] = []
    thread = threading.Thread(target=lambda: events.extend(watch), daemon=True)
    thread.start()
    admin.create(base, config_map("only", {}))
    # Once the event has arrived the stream is open and the reader waits for more that never come.
    wait_for(lambda: events, timeout_seconds=30, what="the ADDED event")
    watch.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert [(kind, obj["metadata"]["name"]) for kind, obj in events] == [("ADDED", "only")]


def _until_deleted(watch: Watch) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for event in watch:
        events.append(event)
        if event[0] == "DELETED":
            break
    return events


# -- async --------------------------------------------------------------------------------------------


async def test_the_async_client_does_the_same_crud_apply_and_typed_errors(
    handle: ClusterHandle, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    async with AsyncKubeClient(handle.admin_config()) as client:
        await client.create(base, config_map("a1", {"x": "1"}, suite="async"))
        with pytest.raises(errors.AlreadyExistsError):
            await client.create(base, config_map("a1", {}))
        assert (await client.get(f"{base}/a1"))["data"] == {"x": "1"}
        applied = await client.apply(base, config_map("a2", {"y": "1"}, suite="async"))
        assert managers(applied) == {"corral": "Apply"}
        with pytest.raises(errors.ConflictError):
            await client.apply(base, config_map("a2", {"y": "2"}, suite="async"), field_manager="rival")
        assert (await client.patch(f"{base}/a1", {"data": {"x": "2"}}))["data"] == {"x": "2"}
        listed = await client.list(base, label_selector="suite=async")
        names = [item["metadata"]["name"] for item in listed["items"]]
        assert names == ["a1", "a2"]
        await client.delete(f"{base}/a1")
        with pytest.raises(errors.NotFoundError):
            await client.get(f"{base}/a1")
        assert not await client.exists(f"{base}/a1")
    async with AsyncKubeClient(handle.credentials("nobody")) as nobody:
        with pytest.raises(errors.ForbiddenError):
            await nobody.list(base)


async def collect_async_until_deleted(watch: AsyncWatch, name: str) -> list[str]:
    kinds = []
    async for kind, obj in watch:
        if obj["metadata"]["name"] == name:
            kinds.append(kind)
            if kind == "DELETED":
                break
    return kinds


async def test_an_async_watch_sees_added_modified_and_deleted(handle: ClusterHandle, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    async with AsyncKubeClient(handle.admin_config()) as client:
        start = (await client.list(base))["metadata"]["resourceVersion"]
        await client.create(base, config_map("w", {"a": "1"}))
        await client.apply(base, config_map("w", {"a": "2"}), force=True)
        await client.delete(f"{base}/w")
        async with client.watch(base, resource_version=start, timeout_seconds=60) as watch:
            kinds = await collect_async_until_deleted(watch, "w")
    assert kinds == ["ADDED", "MODIFIED", "DELETED"]


async def test_stop_from_another_task_ends_an_async_watch_blocked_on_its_stream(
    handle: ClusterHandle, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    events: list[str] = []

    async def collect(watch: AsyncWatch) -> None:
        async for kind, _obj in watch:
            events.append(kind)

    async def arrived() -> bool:
        return bool(events)

    async with AsyncKubeClient(handle.admin_config()) as client:

        async def published() -> bool:
            return await client.exists(f"{base}/kube-root-ca.crt")

        # As in the sync test: the watch starts after the controller manager's kube-root-ca.crt.
        await async_wait_for(published, timeout_seconds=30, what="kube-root-ca.crt")
        start = (await client.list(base))["metadata"]["resourceVersion"]
        async with client.watch(base, resource_version=start) as watch:
            reader = asyncio.create_task(collect(watch))
            await client.create(base, config_map("only", {}))
            await async_wait_for(arrived, timeout_seconds=30, what="the ADDED event")
            watch.stop()
            await asyncio.wait_for(reader, timeout=60)
    assert events == ["ADDED"]

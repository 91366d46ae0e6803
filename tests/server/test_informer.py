"""The informer over a scripted client: a 410 Gone relists and delivers the difference; keys, indexes.

The scripted client answers `list` from a dict and `watch` from queued event batches; a batch that is
an exception is raised by the watch, as the real client raises `GoneError` on a 410 ERROR event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral.errors import GoneError
from corral.server.informer import ADDED, DELETED, MODIFIED, Informer, key_of


def _obj(name: str, version: int, value: str = "", namespace: str = "") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": str(version)}
    if namespace:
        metadata["namespace"] = namespace
    return {"metadata": metadata, "data": {"v": value}}


class _Watch:
    def __init__(
        self,
        batch: list[tuple[str, dict[str, Any]]] | BaseException,
        rv: str,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.batch = batch
        self.gate = gate
        self.resource_version = rv

    async def __aenter__(self) -> _Watch:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._events()

    async def _events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        if isinstance(self.batch, BaseException):
            if self.gate is not None:
                await self.gate.wait()
            raise self.batch
        for kind, obj in self.batch:
            self.resource_version = obj["metadata"]["resourceVersion"]
            yield kind, obj
        await asyncio.sleep(3600)  # an open stream with nothing more to say


class ScriptedClient:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.version = 10
        self.watches: list[list[tuple[str, dict[str, Any]]] | BaseException] = []
        self.watched_from: list[str] = []
        self.gate = asyncio.Event()

    async def list(self, path: str, *, label_selector: str = "", field_selector: str = "") -> dict[str, Any]:
        return {
            "kind": "ThingList",
            "apiVersion": "example.io/v1",
            "metadata": {"resourceVersion": str(self.version)},
            "items": list(self.items.values()),
        }

    def watch(self, path: str, *, resource_version: str = "", **_: object) -> _Watch:
        self.watched_from.append(resource_version)
        batch = self.watches.pop(0) if self.watches else []
        return _Watch(batch, resource_version, self.gate)


async def _settle(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


async def test_gone_relists_and_delivers_only_the_difference() -> None:
    client = ScriptedClient()
    client.items = {"a": _obj("a", 5, "1"), "b": _obj("b", 6, "2")}
    client.watches = [GoneError("too old resource version", status=410, reason="Expired")]
    informer = Informer(client, "/apis/example.io/v1/things", retry_seconds=0.01)  # type: ignore[arg-type]
    events: list[tuple[str, str | None, str | None]] = []
    informer.on_change(
        lambda kind, old, new: events.append(
            (kind, old and old["metadata"]["name"], new and new["metadata"]["name"])
        )
    )
    await informer.start()
    await informer.wait_synced(5)
    assert events == [(ADDED, None, "a"), (ADDED, None, "b")]
    # Between the first list and the relist, b went away, a changed and c appeared.
    client.items = {"a": _obj("a", 11, "changed"), "c": _obj("c", 12, "3")}
    client.version = 12
    client.gate.set()
    await _settle(lambda: informer.relists == 2)
    await informer.stop()
    assert events[2:] == [(DELETED, "b", None), (MODIFIED, "a", "a"), (ADDED, None, "c")]
    assert [o["metadata"]["name"] for o in informer.list()] == ["a", "c"]
    assert informer.get("a")["kind"] == "Thing"  # type: ignore[index]
    assert client.watched_from == ["10", "12"]


async def test_a_watch_that_ends_resumes_from_its_last_version_without_a_list() -> None:
    client = ScriptedClient()
    client.watches = [[(ADDED, _obj("a", 11))], [(MODIFIED, _obj("a", 13, "x"))]]

    class Ending(_Watch):
        async def _events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
            assert not isinstance(self.batch, BaseException)
            for kind, obj in self.batch:
                self.resource_version = obj["metadata"]["resourceVersion"]
                yield kind, obj

    original = client.watch
    client.watch = lambda path, **kw: Ending(original(path, **kw).batch, kw.get("resource_version", ""))  # type: ignore[method-assign]
    informer = Informer(client, "/apis/example.io/v1/things")  # type: ignore[arg-type]
    await informer.start()
    await _settle(lambda: (informer.get("a") or {}).get("data", {}).get("v") == "x")
    await informer.stop()
    assert client.watched_from[:3] == ["10", "11", "13"]
    assert informer.relists == 1


async def test_stale_events_do_not_overwrite_a_newer_observed_write() -> None:
    client = ScriptedClient()
    informer = Informer(client, "/x")  # type: ignore[arg-type]
    await informer.start()
    await informer.wait_synced(5)
    await informer.observe(_obj("t", 20, "new"))
    await informer._apply(MODIFIED, _obj("t", 19, "old"))
    assert informer.get("t")["data"]["v"] == "new"  # type: ignore[index]
    await informer.forget("t", deleted=_obj("t", 21))
    await informer._apply(ADDED, _obj("t", 20, "new"))  # a late event from before the delete
    assert informer.get("t") is None
    await informer._apply(ADDED, _obj("t", 30, "recreated"))  # a later object of the same name
    assert informer.get("t")["data"]["v"] == "recreated"  # type: ignore[index]
    await informer.stop()


async def test_the_generation_moves_with_every_change_and_only_then() -> None:
    informer = Informer(ScriptedClient(), "/x")  # type: ignore[arg-type]
    seen: list[int] = []
    informer.on_change(lambda *_: seen.append(informer.generation))
    start = informer.generation
    await informer.observe(_obj("t", 20, "new"))
    await informer.observe(_obj("t", 20, "new"))  # the same object again: no change
    await informer._apply(MODIFIED, _obj("t", 19, "old"))  # stale: no change
    assert informer.generation == start + 1
    await informer.observe(_obj("t", 21, "newer"))
    await informer.forget("t", deleted=_obj("t", 22))
    assert informer.generation == start + 3
    assert seen == [start + 1, start + 2, start + 3]  # handlers hear of a change after the bump


async def test_a_failing_handler_does_not_stop_the_others() -> None:
    client = ScriptedClient()
    client.items = {"a": _obj("a", 5)}
    informer = Informer(client, "/x")  # type: ignore[arg-type]
    seen: list[str] = []

    def broken(kind: str, old: object, new: object) -> None:
        raise RuntimeError("handler bug")

    async def fine(kind: str, old: object, new: object) -> None:
        seen.append(kind)

    informer.on_change(broken)
    informer.on_change(fine)
    await informer.start()
    await informer.wait_synced(5)
    await informer.stop()
    assert seen == [ADDED]


def test_keys_are_name_or_namespace_slash_name() -> None:
    assert key_of(_obj("a", 1)) == "a"
    assert key_of(_obj("a", 1, namespace="ns")) == "ns/a"


async def test_wait_synced_before_start_is_an_error() -> None:
    from corral.server.informer import InformerError

    informer = Informer(ScriptedClient(), "/x")  # type: ignore[arg-type]
    with pytest.raises(InformerError, match="before start"):
        await informer.wait_synced(1)

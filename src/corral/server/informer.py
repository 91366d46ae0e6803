"""A watch-fed, in-memory copy of one resource collection on an upstream kube-apiserver.

An `Informer` lists a collection, then watches it from the list's resourceVersion; a watch that
ends is reopened from the last version seen, and a 410 Gone (or any failure) leads to a fresh list
whose differences are delivered as events. Hot paths (authenticating a token, looking up a user)
read the copy with no API round trip; writers may `observe` the object a write returned so that
their own next read already sees it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from corral.errors import CorralError, GoneError, KubeAPIError
from corral.k8s.aio import AsyncKubeClient

logger = logging.getLogger(__name__)

__all__ = [
    "ADDED",
    "DELETED",
    "MODIFIED",
    "ChangeHandler",
    "IndexFunc",
    "Informer",
    "InformerError",
    "key_of",
]

ADDED: Final = "ADDED"
MODIFIED: Final = "MODIFIED"
DELETED: Final = "DELETED"

JSON = dict[str, Any]
ChangeHandler = Callable[[str, JSON | None, JSON | None], Awaitable[None] | None]
"""``handler(event_type, old, new)``: ``old`` is None for ADDED, ``new`` None for DELETED."""
IndexFunc = Callable[[JSON], Iterable[str]]
"""The index values of one object (an object may sit under several, or none)."""


class InformerError(CorralError):
    """An informer was used wrongly (an index unknown, never started) or did not sync in time."""


def key_of(obj: Mapping[str, Any]) -> str:
    """The cache key of an object: ``name`` for cluster-scoped ones, ``namespace/name`` otherwise."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name", ""))
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def _version(obj: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as a number (etcd's revision), or None when absent or not numeric."""
    if obj is None:
        return None
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _newer(candidate: Mapping[str, Any], than: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` is at least as new as ``than`` (unknown versions count as newer)."""
    mine, theirs = _version(candidate), _version(than)
    return mine is None or theirs is None or mine >= theirs


class Informer:
    """List+watch of one collection path (e.g. ``/apis/management.cattle.io/v3/tokens``) into a dict.

    ``await start()`` runs it in a task; `wait_synced` returns once the first list is in.
    Handlers run in the informer's task, in event order; a handler's exception is logged and does
    not stop the informer. Reading (`get`, `list`, `by_index`) never touches the network.
    """

    def __init__(
        self,
        client: AsyncKubeClient,
        path: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        retry_seconds: float = 1.0,
        name: str = "",
    ) -> None:
        self.client = client
        self.path = path
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.retry_seconds = retry_seconds
        self.name = name or path.rstrip("/").rsplit("/", 1)[-1]
        self._items: dict[str, JSON] = {}
        self._tombstones: dict[str, int | None] = {}
        self._handlers: list[ChangeHandler] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._kind = ""
        self._api_version = ""
        self.resource_version = ""
        self.relists = 0
        """How many times the collection was listed (1 after the first sync; more after 410 or errors)."""
        self.generation = 0
        """Bumped with every change to the cache, before handlers hear of it: what was computed from
        the cache at one generation holds until the next."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listing and watching in a background task (idempotent)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"informer {self.name}")

    async def stop(self) -> None:
        """Stop the watch; the cache keeps its last contents."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout_seconds: float | None = None) -> None:
        """Return once the first list is in the cache; `InformerError` after ``timeout_seconds``."""
        if self._task is None and not self._synced.is_set():
            raise InformerError(f"informer {self.name}: wait_synced before start")
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._synced.wait()
        except TimeoutError:
            raise InformerError(
                f"informer {self.name}: not synced after {timeout_seconds:g}s (is {self.path} served?)"
            ) from None

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> JSON | None:
        """The cached object under ``name`` or ``namespace/name``; None when absent."""
        return self._items.get(key)

    def list(self, namespace: str | None = None) -> list[JSON]:
        """Every cached object (of one namespace if given), in key order."""
        if namespace is None:
            return [self._items[key] for key in sorted(self._items)]
        prefix = namespace + "/"
        return [self._items[key] for key in sorted(self._items) if key.startswith(prefix)]

    def __len__(self) -> int:
        return len(self._items)

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Maintain an index ``value -> keys`` computed by ``func`` for every object."""
        self._index_funcs[name] = func
        index: dict[str, set[str]] = {}
        for key, obj in self._items.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    def by_index(self, name: str, value: str) -> builtins.list[JSON]:
        """The cached objects whose index ``name`` holds ``value``, in key order."""
        try:
            keys = self._indexes[name].get(value, set())
        except KeyError:
            raise InformerError(f"informer {self.name}: no index {name!r}") from None
        return [self._items[key] for key in sorted(keys) if key in self._items]

    def on_change(self, handler: ChangeHandler) -> None:
        """Call ``handler(event_type, old, new)`` for every change from now on."""
        self._handlers.append(handler)

    # -- writes seen locally -----------------------------------------------------------------

    async def observe(self, obj: JSON) -> None:
        """Put an object a write of ours returned into the cache now, unless the cache is newer."""
        key = key_of(obj)
        await self._apply(MODIFIED if key in self._items else ADDED, self._complete(obj))

    async def forget(self, key: str, *, deleted: JSON | None = None) -> None:
        """Drop the object under ``key`` that a delete of ours removed; older watch events are ignored.

        ``deleted`` is what the DELETE returned: the object (custom resources, with the deletion's
        version) or a ``Status`` (most built-in kinds), in which case the cached version bounds it.
        """
        old = self._items.get(key)
        if old is None:
            return
        if deleted is not None and deleted.get("kind") != "Status" and key_of(deleted) == key:
            await self._apply(DELETED, self._complete(deleted))
        else:
            await self._apply(DELETED, old)

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        # A restarted informer resumes its watch from the last version it saw; only a first start,
        # a 410 Gone or a failure lists the whole collection again.
        while not self._stopping:
            try:
                if not self.resource_version:
                    await self._relist()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except GoneError:
                logger.info(
                    "informer %s: version %s is gone; listing again", self.name, self.resource_version
                )
                self.resource_version = ""
                continue
            except KubeAPIError as exc:
                logger.warning("informer %s: %s; listing again in %gs", self.name, exc, self.retry_seconds)
            except Exception:
                logger.exception("informer %s failed; listing again in %gs", self.name, self.retry_seconds)
            self.resource_version = ""
            await asyncio.sleep(self.retry_seconds)

    async def _relist(self) -> None:
        listing = await self.client.list(
            self.path, label_selector=self.label_selector, field_selector=self.field_selector
        )
        self.relists += 1
        kind = str(listing.get("kind", ""))
        self._kind = kind.removesuffix("List") if kind.endswith("List") else self._kind
        self._api_version = str(listing.get("apiVersion", self._api_version))
        self.resource_version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
        fresh = {key_of(item): self._complete(item) for item in listing.get("items") or []}
        self._tombstones.clear()
        for key in [key for key in self._items if key not in fresh]:
            await self._apply(DELETED, self._items[key], force=True)
        for key, obj in fresh.items():
            old = self._items.get(key)
            if old is None:
                await self._apply(ADDED, obj, force=True)
            elif _version(old) != _version(obj) or old != obj:
                await self._apply(MODIFIED, obj, force=True)
        self._synced.set()
        logger.debug("informer %s: listed %d objects at %s", self.name, len(fresh), self.resource_version)

    async def _watch(self) -> None:
        while not self._stopping:
            opened = asyncio.get_running_loop().time()
            delivered = 0
            async with self.client.watch(
                self.path,
                resource_version=self.resource_version,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
            ) as events:
                async for event_type, obj in events:
                    delivered += 1
                    self.resource_version = events.resource_version
                    await self._apply(event_type, self._complete(obj))
                self.resource_version = events.resource_version or self.resource_version
            if not delivered and asyncio.get_running_loop().time() - opened < 1.0:
                # A stream that closes at once, again and again, must not spin the loop.
                await asyncio.sleep(self.retry_seconds)

    def _complete(self, obj: JSON) -> JSON:
        """List items of built-in kinds carry no apiVersion/kind: add the list's."""
        if self._kind and "kind" not in obj:
            obj = {"apiVersion": self._api_version, "kind": self._kind, **obj}
        return obj

    async def _apply(self, event_type: str, obj: JSON, *, force: bool = False) -> None:
        key = key_of(obj)
        old = self._items.get(key)
        if event_type == DELETED:
            if old is None:
                self._tombstones.pop(key, None)
                return
            if not force and not _newer(obj, old):
                return
            del self._items[key]
            self.generation += 1
            self._tombstones[key] = _version(obj)
            self._unindex(key, old)
            await self._notify(DELETED, old, None)
            return
        if not force:
            if old is not None and not _newer(obj, old):
                return
            if old is None and key in self._tombstones:
                dead = self._tombstones[key]
                mine = _version(obj)
                if dead is not None and mine is not None and mine <= dead:
                    return
        self._tombstones.pop(key, None)
        if old is not None:
            if old == obj:
                return
            self._unindex(key, old)
        self._items[key] = obj
        self.generation += 1
        for name, func in self._index_funcs.items():
            for value in func(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        await self._notify(ADDED if old is None else MODIFIED, old, obj)

    def _unindex(self, key: str, obj: JSON) -> None:
        for name, func in self._index_funcs.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    async def _notify(self, event_type: str, old: JSON | None, new: JSON | None) -> None:
        for handler in list(self._handlers):
            try:
                result = handler(event_type, old, new)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("informer %s: a %s handler failed", self.name, event_type)

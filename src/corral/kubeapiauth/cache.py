"""Watch-fed caches of the objects kube-api-auth reads, so a TokenReview costs no API round trip.

One `Informer` per collection: list, then watch from the list's resourceVersion; a 410 or a broken
stream lists again (after a short, growing pause when the API is unreachable). Each object is turned
into a small value on arrival (a Secret into its hash string only, so no other secret data is kept),
and an object that cannot be read is left out of the cache and named in a warning.
`Caches` groups the four collections and answers the `corral.kubeapiauth.review.Snapshot` questions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from corral.errors import CorralError, GoneError, KubeAPIError
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth.objects import (
    CLUSTER_AUTH_TOKENS,
    CLUSTER_USER_ATTRIBUTES,
    DEBOUNCE_CONFIGMAP,
    ClusterAuthToken,
    ClusterUserAttribute,
    debounce_seconds,
    paths,
    secret_hash,
)

logger = logging.getLogger(__name__)

__all__ = ["Caches", "Informer"]

T = TypeVar("T")

_FIRST_PAUSE = 0.2
_LONGEST_PAUSE = 5.0


class Informer(Generic[T]):
    """The objects of one collection by name, kept current by a watch; `run` until cancelled."""

    def __init__(
        self,
        client: AsyncKubeClient,
        path: str,
        *,
        read: Callable[[Mapping[str, Any]], T],
        field_selector: str = "",
    ) -> None:
        self.client = client
        self.path = path
        self.field_selector = field_selector
        self._read = read
        self.items: dict[str, T] = {}
        self.synced = asyncio.Event()
        """Set once the first list has been loaded."""
        self.resource_version = ""

    def get(self, name: str) -> T | None:
        return self.items.get(name)

    async def run(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            try:
                await self._list()
                pause = _FIRST_PAUSE
                await self._watch()
            except GoneError:
                logger.info("watch of %s expired; listing again", self.path)
            except (KubeAPIError, OSError) as e:
                logger.warning("cache of %s: %s; retrying in %.1fs", self.path, e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE)

    async def _list(self) -> None:
        listing = await self.client.list(self.path, field_selector=self.field_selector)
        fresh: dict[str, T] = {}
        for obj in listing.get("items") or []:
            self._put(fresh, obj)
        self.items = fresh
        self.resource_version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
        self.synced.set()

    async def _watch(self) -> None:
        async with self.client.watch(
            self.path, resource_version=self.resource_version, field_selector=self.field_selector
        ) as events:
            async for kind, obj in events:
                if kind == "DELETED":
                    self.items.pop(_name(obj), None)
                else:
                    self._put(self.items, obj)
                self.resource_version = events.resource_version

    def _put(self, items: dict[str, T], obj: Mapping[str, Any]) -> None:
        name = _name(obj)
        try:
            items[name] = self._read(obj)
        except CorralError as e:
            items.pop(name, None)
            logger.warning("%s/%s left out of the cache: %s", self.path, name, e)


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""


def _hash_or_empty(secret: Mapping[str, Any]) -> str:
    return secret_hash(secret) or ""


def _configmap(obj: Mapping[str, Any]) -> int:
    return debounce_seconds(obj)


class Caches:
    """The four caches of one namespace: tokens, user attributes, token Secrets, the debounce ConfigMap."""

    def __init__(self, client: AsyncKubeClient, *, namespace: str) -> None:
        where = paths(namespace)
        self.tokens = Informer(client, where[CLUSTER_AUTH_TOKENS], read=ClusterAuthToken.from_json)
        self.attributes = Informer(
            client, where[CLUSTER_USER_ATTRIBUTES], read=ClusterUserAttribute.from_json
        )
        self.secrets = Informer(client, where["secrets"], read=_hash_or_empty)
        self.configmaps = Informer(
            client, where["configmaps"], read=_configmap, field_selector=f"metadata.name={DEBOUNCE_CONFIGMAP}"
        )
        self._informers: tuple[Informer[Any], ...] = (
            self.tokens,
            self.attributes,
            self.secrets,
            self.configmaps,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(i.run(), name=f"cache {i.path}") for i in self._informers]

    async def wait_synced(self) -> None:
        """Until every cache has loaded its first list (kube-api-auth serves only then)."""
        await asyncio.gather(*(i.synced.wait() for i in self._informers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the Snapshot protocol of corral.kubeapiauth.review --------------------------------------

    def token(self, name: str) -> ClusterAuthToken | None:
        return self.tokens.get(name)

    def attribute(self, name: str) -> ClusterUserAttribute | None:
        return self.attributes.get(name)

    def secret_hash(self, name: str) -> str | None:
        return self.secrets.get(name)

    def debounce_seconds(self) -> int:
        value = self.configmaps.get(DEBOUNCE_CONFIGMAP)
        return -1 if value is None else value

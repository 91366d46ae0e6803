"""The synchronous Kubernetes client of fixtures, tests, the CLI and the control-plane bring-up.

A path-based facade (``get("/api/v1/nodes")``) over the official ``kubernetes`` ApiClient: the
callers speak in API paths and JSON, the official client brings authentication (client
certificates, tokens, exec plugins), connection pooling and TLS. Failures are the typed
`KubeAPIError` subclasses of `corral.k8s.errors`; `apply` is server-side apply; `watch` streams
events and resumes from the last resourceVersion.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from corral.errors import KubeAPIError, NotFoundError
from corral.k8s.connect import impersonation_headers
from corral.k8s.errors import api_error, connection_error, decode_body
from corral.k8s.kubeconfig import KubeConfig
from corral.k8s.protocol import (
    FIELD_MANAGER,
    JSON,
    SELF_SUBJECT_ACCESS_REVIEWS,
    SUBJECT_ACCESS_REVIEWS,
    Header,
    Response,
    WatchCursor,
    allowed,
    apply_request,
    deadline,
    patch_headers,
    prepare,
    resource_attributes,
    selectors,
    self_subject_access_review,
    subject_access_review,
    watch_window,
)

if TYPE_CHECKING:
    from corral.k8s._sync import SyncTransport

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["JSON", "KubeClient", "Response", "Watch", "wait_for"]


class KubeClient:
    """Blocking JSON requests to one kube-apiserver with one identity (thread-safe)."""

    def __init__(
        self, config: KubeConfig, *, timeout_seconds: float = 30.0, _transport: SyncTransport | None = None
    ) -> None:
        self.config = config
        self.timeout_seconds = timeout_seconds
        self._identity = impersonation_headers(config)
        if _transport is None:
            from corral.k8s._sync import SyncTransport

            self._transport = SyncTransport(config, timeout_seconds=timeout_seconds)
            self._owns_transport = True
        else:
            self._transport, self._owns_transport = _transport, False

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (a client made by `impersonating` leaves its parent's open)."""
        if self._owns_transport:
            self._transport.close()

    def impersonating(self, user: str, groups: Iterable[str] = ()) -> KubeClient:
        """A client on the same connections and credentials that acts as ``user`` in ``groups``.

        It sends ``Impersonate-User`` and one ``Impersonate-Group`` header per group; the
        credentials need the ``impersonate`` verb. Closing it leaves this client open.
        """
        config = self.config.impersonating(user, tuple(groups))
        return KubeClient(config, timeout_seconds=self.timeout_seconds, _transport=self._transport)

    # -- requests ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Iterable[Header] = (),
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        check: bool = True,
        timeout_seconds: float | None = None,
    ) -> Response:
        """Send one request to an API path; with ``check`` a status >= 400 raises its typed error."""
        prepared = prepare(method, path, body=body, headers=headers, query=query, identity=self._identity)
        status, raw = self._transport.send(prepared, timeout_seconds=timeout_seconds)
        decoded = decode_body(raw)
        if check and status >= 400:
            raise api_error(prepared.method, prepared.path, status, decoded)
        return Response(status, decoded)

    def get(self, path: str, *, query: Mapping[str, str] | None = None) -> JSON:
        return self.request("GET", path, query=query).body

    def list(
        self,
        path: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        query: Mapping[str, str] | None = None,
    ) -> JSON:
        """GET a collection; the answer's ``metadata.resourceVersion`` is where a `watch` starts."""
        pairs = [*selectors(label_selector, field_selector), *(query or {}).items()]
        return self.request("GET", path, query=pairs).body

    def exists(self, path: str) -> bool:
        """True when GET answers 200, False on 404; other failures raise."""
        try:
            self.request("GET", path)
        except NotFoundError:
            return False
        return True

    def create(self, collection: str, obj: JSON, *, query: Mapping[str, str] | None = None) -> JSON:
        """POST an object to a collection path such as ``/api/v1/namespaces``."""
        return self.request("POST", collection, body=obj, query=query).body

    def replace(self, path: str, obj: JSON) -> JSON:
        """PUT the whole object (its metadata.resourceVersion, when set, guards against races)."""
        return self.request("PUT", path, body=obj).body

    def patch(self, path: str, patch: Any, *, kind: str = "merge") -> JSON:
        """PATCH an object: ``kind`` is ``merge`` (RFC 7386), ``strategic`` or ``json`` (RFC 6902)."""
        return self.request("PATCH", path, body=patch, headers=patch_headers(kind)).body

    def apply(
        self, collection: str, obj: JSON, *, force: bool = False, field_manager: str = FIELD_MANAGER
    ) -> JSON:
        """Server-side apply ``obj`` (which names apiVersion, kind and metadata.name) into ``collection``.

        Creates the object or updates the fields ``field_manager`` owns; a field another manager
        owns raises `ConflictError` unless ``force`` takes it over.
        """
        path, query, headers = apply_request(collection, obj, force=force, field_manager=field_manager)
        return self.request("PATCH", path, body=obj, query=query, headers=headers).body

    def delete(self, path: str, *, missing_ok: bool = True, propagation: str | None = None) -> JSON:
        """DELETE an object; a missing one is ``{}`` unless ``missing_ok`` is False (`NotFoundError`)."""
        body = {"propagationPolicy": propagation} if propagation else None
        try:
            return self.request("DELETE", path, body=body).body
        except NotFoundError:
            if missing_ok:
                return {}
            raise

    def can_i(
        self, verb: str, resource: str, *, namespace: str = "", group: str = "", name: str = ""
    ) -> bool:
        """Ask the apiserver (SelfSubjectAccessReview) whether this identity may do something."""
        review = self_subject_access_review(resource_attributes(verb, resource, namespace, group, name))
        return allowed(self.create(SELF_SUBJECT_ACCESS_REVIEWS, review))

    def allows(
        self,
        user: str,
        groups: Sequence[str],
        verb: str,
        resource: str,
        *,
        namespace: str = "",
        group: str = "",
        name: str = "",
    ) -> bool:
        """Ask the apiserver (SubjectAccessReview) whether another identity may do something.

        RBAC authorizes from informer caches, so a new (Cluster)RoleBinding takes effect a moment after it
        is created; poll this with `wait_for` before relying on a binding.
        """
        attributes = resource_attributes(verb, resource, namespace, group, name)
        return allowed(self.create(SUBJECT_ACCESS_REVIEWS, subject_access_review(user, groups, attributes)))

    def watch(
        self,
        path: str,
        *,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: float | None = None,
    ) -> Watch:
        """Watch a collection from ``resource_version`` (usually a `list`'s): see `Watch`."""
        cursor = WatchCursor(path, resource_version, selectors(label_selector, field_selector))
        return Watch(self, cursor, timeout_seconds=timeout_seconds)


class Watch:
    """A watch: iterate for ``(type, object)`` with type ADDED, MODIFIED or DELETED.

    The stream is reopened from the last resourceVersion seen (events and bookmarks) whenever the
    apiserver ends it, until ``timeout_seconds`` (if given) have passed or `stop` is called; then
    iteration ends. 410 Gone (the resourceVersion was compacted away) raises `GoneError`: list
    again and watch from the list's resourceVersion. Use it as a context manager, or call `stop`
    (from any thread) to close the stream.
    """

    def __init__(self, client: KubeClient, cursor: WatchCursor, *, timeout_seconds: float | None) -> None:
        self._client = client
        self.cursor = cursor
        self._deadline = deadline(timeout_seconds)
        self._stopped = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()

    @property
    def resource_version(self) -> str:
        """Where a new watch would resume: the last resourceVersion seen."""
        return self.cursor.resource_version

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the watch: iteration stops, a blocked read in another thread returns."""
        self._stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def __iter__(self) -> Iterator[tuple[str, JSON]]:
        client, cursor = self._client, self.cursor
        while not self._stopped.is_set():
            window = watch_window(self._deadline)
            if window is None:
                return
            prepared = prepare("GET", cursor.path, query=cursor.query(window), identity=client._identity)
            response = client._transport.stream(prepared, read_timeout_seconds=window + 30)
            with self._lock:
                self._response = response
            try:
                if response.status >= 400:
                    raise api_error("WATCH", cursor.path, response.status, decode_body(response.data))
                for line in _lines(response):
                    if self._stopped.is_set():
                        return
                    event = cursor.event(line)
                    if event is not None:
                        yield event
            except KubeAPIError:
                raise
            except Exception as e:
                if self._stopped.is_set():
                    return
                raise connection_error("WATCH", cursor.path, client.config.server, e) from e
            finally:
                with self._lock:
                    self._response = None
                response.close()


def _lines(response: Any) -> Iterator[bytes]:
    buffered = b""
    for chunk in response.stream(65536, decode_content=True):
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        yield from lines
    if buffered:
        yield buffered


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout_seconds: float,
    what: str,
    interval_seconds: float = 0.2,
) -> T:
    """Call ``predicate`` until it returns something truthy; raise `TimeoutError` naming ``what``.

    `KubeAPIError` raised by the predicate counts as "not yet" until the deadline, then is chained.
    """
    ends_at = time.monotonic() + timeout_seconds
    last_error: KubeAPIError | None = None
    while True:
        try:
            result = predicate()
        except KubeAPIError as e:
            last_error, result = e, None
        if result:
            return result
        if time.monotonic() >= ends_at:
            detail = f"; last error: {last_error}" if last_error else ""
            raise TimeoutError(
                f"timed out after {timeout_seconds:g}s waiting for {what}{detail}"
            ) from last_error
        time.sleep(interval_seconds)

"""The asynchronous Kubernetes client of event-loop code, over ``kubernetes_asyncio``.

The same path-based verbs, typed errors, server-side apply and resuming watches as `KubeClient`,
awaited. The ApiClient (and its aiohttp session) is built on first use inside the running loop;
`AsyncKubeClient.close` (or ``async with``) closes it, so no session outlives its loop. TLS
files the rest client reads at construction live in a private folder removed right after.
aiohttp is reached only through ``kubernetes_asyncio``: corral.k8s itself does not import it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import aiohttp as _aiohttp  # type: ignore[attr-defined]
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import KubeConfigLoader
from multidict import CIMultiDict

from corral.errors import ConfigError, KubeAPIError, NotFoundError
from corral.k8s.connect import (
    CONTEXT,
    impersonation_headers,
    loader_document,
    private_folder,
    read_loaded_pair,
    require_credentials,
    write_secret,
)
from corral.k8s.errors import api_error, connection_error, cut, decode_body
from corral.k8s.kubeconfig import KubeConfig
from corral.k8s.protocol import (
    FIELD_MANAGER,
    JSON,
    SELF_SUBJECT_ACCESS_REVIEWS,
    SUBJECT_ACCESS_REVIEWS,
    Header,
    Prepared,
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

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["AsyncKubeClient", "AsyncWatch", "ConnectorFactory", "wait_for"]

ConnectorFactory = Callable[[ssl.SSLContext], Any]
"""Makes the HTTP connector of a client's session from the client's TLS context: an aiohttp
connector whose connections are dialed some other way (through a tunnel, say). Without one, the
client's own TCP connector dials the server directly."""

# What the transport raises when no answer came: aiohttp's errors (through the module that
# imports it), timeouts and socket errors.
_NO_ANSWER: tuple[type[BaseException], ...] = (_aiohttp.ClientError, OSError)
_BROKEN_STREAM: tuple[type[BaseException], ...] = (*_NO_ANSWER, ValueError)


class _Transport:
    """One ApiClient for one kubeconfig, built on first use in the running loop."""

    def __init__(
        self, config: KubeConfig, *, timeout_seconds: float, connector: ConnectorFactory | None = None
    ) -> None:
        self.config = config
        self.timeout_seconds = timeout_seconds
        self.connector = connector
        self._api: Any = None
        self._closed = False
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        async with self._lock:
            if self._closed:
                raise KubeAPIError(
                    f"the client for {self.config.server} is closed", status=0, reason="Closed"
                )
            if self._api is None:
                self._api = await _build(self.config, self.connector)
            return self._api

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            api, self._api = self._api, None
        if api is not None:
            await api.close()

    async def send(self, request: Prepared, *, timeout_seconds: float | None) -> tuple[int, bytes]:
        response = await self.open(request, timeouts=timeout_seconds or self.timeout_seconds)
        try:
            data = await response.read()
        except _NO_ANSWER as e:
            raise connection_error(request.method, request.path, self.config.server, e) from e
        finally:
            response.release()
        return int(response.status), bytes(data)

    async def open(self, request: Prepared, *, timeouts: float | tuple[float, float]) -> Any:
        """The aiohttp response, body unread: the caller reads and releases it."""
        api = await self.client()
        headers: CIMultiDict[str] = CIMultiDict(request.headers)
        try:
            await api.update_params_for_auth(headers, request.query, ["BearerToken"])
            return await api.request(
                request.method,
                api.configuration.host + request.path,
                query_params=request.query or None,
                headers=headers,
                body=request.body,
                _preload_content=False,
                _request_timeout=timeouts,
            )
        except _NO_ANSWER as e:
            raise connection_error(request.method, request.path, self.config.server, e) from e
        except ApiException as e:
            raise connection_error(request.method, request.path, self.config.server, e) from e
        except ConfigException as e:
            raise KubeAPIError(
                f"{request.method} {request.path}: refreshing credentials failed: {cut(str(e))}",
                status=0,
                reason="CredentialError",
            ) from None


async def _build(config: KubeConfig, connector: ConnectorFactory | None = None) -> Any:
    configuration = Configuration()
    with private_folder() as folder:
        loader = KubeConfigLoader(
            config_dict=loader_document(config),
            active_context=CONTEXT,
            config_base_path=None,
            temp_file_path=str(folder),
        )
        try:
            await loader.load_and_set(configuration)
        except ConfigException as e:
            raise ConfigError(f"kubeconfig user {config.user_name!r}: {cut(str(e))}") from None
        pair = read_loaded_pair(configuration.cert_file, configuration.key_file)
        require_credentials(config, token="BearerToken" in configuration.api_key, pair=pair)
        if pair is None and config.cert_pem is not None and config.key_pem is not None:
            pair = (config.cert_pem, config.key_pem)
        # The rest client reads these files once, in its constructor; the folder goes right after.
        configuration.ssl_ca_cert = configuration.cert_file = configuration.key_file = None
        if config.ca_pem is not None and not config.insecure_skip_tls_verify:
            configuration.ssl_ca_cert = str(write_secret(folder / "ca.pem", config.ca_pem))
        if pair is not None:
            configuration.cert_file = str(write_secret(folder / "client.crt", pair[0]))
            configuration.key_file = str(write_secret(folder / "client.key", pair[1]))
        configuration.verify_ssl = not config.insecure_skip_tls_verify
        try:
            api = ApiClient(configuration)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"kubeconfig {config.cluster_name!r}/{config.user_name!r}: the CA, certificate or key "
                f"does not load: {type(e).__name__}"
            ) from None
        if connector is not None:
            await _use_connector(api, configuration, connector)
    if hasattr(loader, "exec_plugin_expiry"):
        configuration.refresh_api_key_hook = _exec_refresher(loader)
    return api


async def _use_connector(api: Any, configuration: Configuration, connector: ConnectorFactory) -> None:
    """Put the rest client's session on ``connector``, with the TLS context the client would use.

    The environment's proxy settings are not read: the connector decides the route.
    """
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    rest = api.rest_client
    default = rest.pool_manager
    rest.pool_manager = _aiohttp.ClientSession(connector=connector(context), read_bufsize=2**21)
    await default.close()


def _exec_refresher(loader: Any) -> Callable[[Any], Awaitable[None]]:
    """Re-run the exec plugin when its token is about to expire (the loader knows when)."""

    async def refresh(configuration: Any) -> None:
        await loader.load_from_exec_plugin()
        configuration.api_key["BearerToken"] = loader.token

    return refresh


class AsyncKubeClient:
    """Awaited JSON requests to one kube-apiserver with one identity."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        timeout_seconds: float = 30.0,
        connector: ConnectorFactory | None = None,
        _transport: _Transport | None = None,
    ) -> None:
        self.config = config
        self.timeout_seconds = timeout_seconds
        self._identity = impersonation_headers(config)
        self._owns_transport = _transport is None
        self._transport = _transport or _Transport(
            config, timeout_seconds=timeout_seconds, connector=connector
        )

    async def __aenter__(self) -> AsyncKubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (a client made by `impersonating` leaves its parent's open)."""
        if self._owns_transport:
            await self._transport.close()

    def impersonating(self, user: str, groups: Iterable[str] = ()) -> AsyncKubeClient:
        """A client on the same session and credentials that acts as ``user`` in ``groups``."""
        config = self.config.impersonating(user, tuple(groups))
        return AsyncKubeClient(config, timeout_seconds=self.timeout_seconds, _transport=self._transport)

    async def request(
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
        status, raw = await self._transport.send(prepared, timeout_seconds=timeout_seconds)
        decoded = decode_body(raw)
        if check and status >= 400:
            raise api_error(prepared.method, prepared.path, status, decoded)
        return Response(status, decoded)

    async def get(self, path: str, *, query: Mapping[str, str] | None = None) -> JSON:
        return (await self.request("GET", path, query=query)).body

    async def list(
        self,
        path: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        query: Mapping[str, str] | None = None,
    ) -> JSON:
        pairs = [*selectors(label_selector, field_selector), *(query or {}).items()]
        return (await self.request("GET", path, query=pairs)).body

    async def exists(self, path: str) -> bool:
        try:
            await self.request("GET", path)
        except NotFoundError:
            return False
        return True

    async def create(self, collection: str, obj: JSON, *, query: Mapping[str, str] | None = None) -> JSON:
        return (await self.request("POST", collection, body=obj, query=query)).body

    async def replace(self, path: str, obj: JSON) -> JSON:
        return (await self.request("PUT", path, body=obj)).body

    async def patch(self, path: str, patch: Any, *, kind: str = "merge") -> JSON:
        return (await self.request("PATCH", path, body=patch, headers=patch_headers(kind))).body

    async def apply(
        self, collection: str, obj: JSON, *, force: bool = False, field_manager: str = FIELD_MANAGER
    ) -> JSON:
        """Server-side apply, as `KubeClient.apply`."""
        path, query, headers = apply_request(collection, obj, force=force, field_manager=field_manager)
        return (await self.request("PATCH", path, body=obj, query=query, headers=headers)).body

    async def delete(self, path: str, *, missing_ok: bool = True, propagation: str | None = None) -> JSON:
        body = {"propagationPolicy": propagation} if propagation else None
        try:
            return (await self.request("DELETE", path, body=body)).body
        except NotFoundError:
            if missing_ok:
                return {}
            raise

    async def can_i(
        self, verb: str, resource: str, *, namespace: str = "", group: str = "", name: str = ""
    ) -> bool:
        review = self_subject_access_review(resource_attributes(verb, resource, namespace, group, name))
        return allowed(await self.create(SELF_SUBJECT_ACCESS_REVIEWS, review))

    async def allows(
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
        """SubjectAccessReview for another identity, as `KubeClient.allows`."""
        attributes = resource_attributes(verb, resource, namespace, group, name)
        review = subject_access_review(user, groups, attributes)
        return allowed(await self.create(SUBJECT_ACCESS_REVIEWS, review))

    def watch(
        self,
        path: str,
        *,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: float | None = None,
    ) -> AsyncWatch:
        """Watch a collection from ``resource_version``: see `AsyncWatch`."""
        cursor = WatchCursor(path, resource_version, selectors(label_selector, field_selector))
        return AsyncWatch(self, cursor, timeout_seconds=timeout_seconds)


class AsyncWatch:
    """``async with client.watch(path, resource_version=rv) as events: async for kind, obj in events``.

    Semantics as `corral.k8s.Watch`: resumes from the last resourceVersion when the apiserver ends
    a stream, ends after ``timeout_seconds`` or `stop`, raises `GoneError` on 410 (list again).
    Leaving the ``async with`` block closes the stream and the iteration.
    """

    def __init__(
        self, client: AsyncKubeClient, cursor: WatchCursor, *, timeout_seconds: float | None
    ) -> None:
        self._client = client
        self.cursor = cursor
        self._deadline = deadline(timeout_seconds)
        self._stopped = False
        self._response: Any = None
        self._events: AsyncGenerator[tuple[str, JSON], None] | None = None

    @property
    def resource_version(self) -> str:
        return self.cursor.resource_version

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop()
        if self._events is not None:
            await self._events.aclose()

    def stop(self) -> None:
        """End the watch: the open stream is closed and iteration ends."""
        self._stopped = True
        if self._response is not None:
            _abandon(self._response)

    def __aiter__(self) -> AsyncIterator[tuple[str, JSON]]:
        if self._events is None:
            self._events = self._iterate()
        return self._events

    async def _iterate(self) -> AsyncGenerator[tuple[str, JSON], None]:
        client, cursor = self._client, self.cursor
        transport = client._transport
        while not self._stopped:
            window = watch_window(self._deadline)
            if window is None:
                return
            prepared = prepare("GET", cursor.path, query=cursor.query(window), identity=client._identity)
            response = await transport.open(prepared, timeouts=(transport.timeout_seconds, window + 30))
            self._response = response
            try:
                if self._stopped:
                    return
                if response.status >= 400:
                    raise api_error("WATCH", cursor.path, response.status, decode_body(await response.read()))
                buffered = b""
                async for chunk in response.content.iter_any():
                    buffered += chunk
                    *lines, buffered = buffered.split(b"\n")
                    for line in lines:
                        if self._stopped:
                            return
                        event = cursor.event(line)
                        if event is not None:
                            yield event
            except KubeAPIError:
                raise
            except _BROKEN_STREAM as e:
                if self._stopped:
                    return
                raise connection_error("WATCH", cursor.path, client.config.server, e) from e
            finally:
                self._response = None
                _abandon(response)
                await asyncio.sleep(0)  # the aborted socket is closed on the next turn of the loop


def _abandon(response: Any) -> None:
    """Drop a watch stream: abort its connection rather than close it politely.

    A TLS connection closed politely finishes its shutdown on later turns of the loop, after
    the session that owned it is closed; a loop that ends first leaves the socket open. A watch
    is never reused, so aborting loses nothing, and the socket is gone on the next turn.
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if transport is not None:
        transport.abort()
    response.close()


async def wait_for(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout_seconds: float,
    what: str,
    interval_seconds: float = 0.2,
) -> T:
    """Await ``predicate`` until it returns something truthy, as `corral.k8s.wait_for`."""
    ends_at = time.monotonic() + timeout_seconds
    last_error: KubeAPIError | None = None
    while True:
        try:
            result = await predicate()
        except KubeAPIError as e:
            last_error, result = e, None
        if result:
            return result
        if time.monotonic() >= ends_at:
            detail = f"; last error: {last_error}" if last_error else ""
            raise TimeoutError(
                f"timed out after {timeout_seconds:g}s waiting for {what}{detail}"
            ) from last_error
        await asyncio.sleep(interval_seconds)

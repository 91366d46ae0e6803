"""The authentication proxy: ``/k8s/clusters/<id>/...`` and ``/k8s/proxy/<id>/...`` to a downstream cluster.

A request is authenticated with a Rancher token, may impersonate someone else if SubjectAccessReviews
allow it, must be allowed to see the cluster, and is then forwarded to the cluster's kube-apiserver
as the user's impersonation service account (Rancher's ``RemoteService``). Responses stream through
with back-pressure; upgrades become byte pipes. The proxy's own errors carry Rancher's statuses and
bodies as observed on a real Rancher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDictProxy

from corral.auth.identity import UserInfo
from corral.model.trace import Event, RequestCompleted
from corral.server import proxy_upgrade
from corral.server.proxy_client import ConnectionPool, UpstreamError, UpstreamResponse
from corral.server.proxy_dial import Endpoint, endpoint_of, open_streams, tls_context
from corral.server.proxy_headers import (
    HeaderValueError,
    client_impersonation,
    downstream_headers,
    own_headers,
    upgrade_protocol,
    upstream_response_headers,
)
from corral.server.proxy_impersonation import (
    ImpersonationPolicy,
    ImpersonationRefusedError,
    ServiceAccountTarget,
)
from corral.server.proxy_interfaces import (
    AccessReviewer,
    AuthenticationError,
    Authenticator,
    AuthRequest,
    ClusterLookup,
    ClusterTarget,
    Dialer,
    DialError,
    ImpersonationAccountError,
    ImpersonationAccounts,
    ProxyError,
    SARScope,
    ServiceAccountTokenError,
    ServiceAccountTokens,
)
from corral.server.proxy_routing import Route, has_dot_segment, parse_route, request_verb

logger = logging.getLogger(__name__)

__all__ = ["AuthProxy", "ClientRequest", "ProxySettings", "Reply"]

TraceSink = Callable[[Event], None]
UNAUTHENTICATED = "system:unauthenticated"
#: Go writes these bodies after WriteHeader, so the type is sniffed from the text, not declared.
_SNIFFED_TEXT = "text/plain; charset=utf-8"
_MEMO_LIMIT = 20_000
#: The paths `add_routes` gives the proxy, as their raw (undecoded) beginnings.
_PREFIXES = ("/k8s/clusters/", "/k8s/proxy/")
RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxySettings:
    """Knobs of the proxy; the defaults behave like current Rancher (2.15+)."""

    sar_scope: SARScope = "management"
    """Where ``--as`` reviews run: ``"management"`` (2.15+) or ``"downstream"`` (2.10-2.14)."""
    request_extras: bool = True
    """Add the ``requesttokenid`` and ``requesthost`` extras (Rancher 2.11+)."""
    service_account_token_seconds: int = 600
    """Lifetime asked for tokens of impersonated ServiceAccounts (Rancher's ``minExpirationTime``)."""
    connect_timeout_seconds: float = 60.0
    """Bound on dialing and TLS for a new connection to a cluster (not on the response)."""
    buffer_bytes: int = 2**16
    """Read size and per-direction buffer bound when streaming and piping."""
    retry_idempotent: bool = False
    """Send a bodiless GET, HEAD or OPTIONS once more when its connection fails before the answer
    (the fast failover mode; Rancher answers such a request 500)."""


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
#: Statuses whose answers carry no body (their Content-Length, if any, describes another answer).
_BODILESS = frozenset({204, 304})


class ClientRequest(Protocol):
    """What the proxy reads of a client's request (an aiohttp ``Request`` or the front's)."""

    @property
    def method(self) -> str: ...
    @property
    def raw_path(self) -> str: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def cookies(self) -> Mapping[str, str]: ...
    @property
    def host(self) -> str: ...
    @property
    def remote(self) -> str | None: ...


class Reply(Protocol):
    """How `AuthProxy.exchange` answers: with the proxy's own answer, or by relaying the cluster's."""

    def answer(self, status: int, body: bytes, content_type: str) -> None: ...

    async def relay(self, upstream: UpstreamResponse) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """Where an authorised request goes and with which headers."""

    target: ClusterTarget
    endpoint: Endpoint
    headers: list[tuple[str, str]]
    client_headers: tuple[tuple[str, str], ...]


class _Record:
    """What a request's trace event says: its route, user and status, and when it began."""

    __slots__ = ("route", "started", "status", "user")

    def __init__(self, raw_path: str) -> None:
        self.started = time.monotonic()
        self.route = parse_route(raw_path)
        self.user = ""
        self.status = 0


class _Answer(Exception):
    """Ends a request with the proxy's own status and body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _norman(status: int, code: str, message: str) -> _Answer:
    body = {"Code": {"Code": code, "Status": status}, "Message": message, "Cause": None, "FieldName": ""}
    return _Answer(status, json.dumps(body, separators=(",", ":")))


def _forbidden(cluster: str, user: str) -> _Answer:
    message = (
        f"clusters.management.cattle.io {json.dumps(cluster)} is forbidden: User {json.dumps(user)}"
        ' cannot get resource "clusters" in API group "management.cattle.io" at the cluster scope'
    )
    return _norman(403, "Forbidden", message)


def _not_found(cluster: str) -> _Answer:
    return _norman(404, "NotFound", f"clusters.management.cattle.io {json.dumps(cluster)} not found")


class AuthProxy:
    """The proxy's HTTP core; mount with `add_routes` and `close` when the server stops."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        clusters: ClusterLookup,
        accounts: ImpersonationAccounts,
        reviewer: AccessReviewer,
        service_account_tokens: ServiceAccountTokens,
        dialer: Dialer,
        settings: ProxySettings | None = None,
        trace_sink: TraceSink | None = None,
        trace_time: Callable[[], float] | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.clusters = clusters
        self.accounts = accounts
        self.service_account_tokens = service_account_tokens
        self.dialer = dialer
        self.settings = settings or ProxySettings()
        self.policy = ImpersonationPolicy(reviewer=reviewer, authenticator=authenticator)
        self.trace_sink = trace_sink
        start = time.monotonic()
        self._trace_time = trace_time or (lambda: time.monotonic() - start)
        self._pools: dict[str, tuple[ClusterTarget, ConnectionPool]] = {}
        self._retired: list[ConnectionPool] = []
        # The authenticator hands back the same UserInfo for a remembered token: the identity with
        # the request extras is built once per (user object, host). The user is kept to pin its id.
        self._with_extras: dict[tuple[int, str], tuple[UserInfo, UserInfo]] = {}
        # The proxy's own headers per (token, identity), the identity kept to pin its id.
        self._own: dict[tuple[str, int], tuple[UserInfo | None, list[tuple[str, str]]]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/k8s/clusters/{tail:.*}", self.handle)
        app.router.add_route("*", "/k8s/proxy/{tail:.*}", self.handle)

    def serve_first(self, server: web.Server) -> None:
        """Give the proxy its requests ahead of the app's router, middlewares and match info.

        ``server`` is a runner's (``runner.server`` after ``setup``), whose app has the proxy's routes
        (`add_routes`): a request whose raw path begins with one of them is handled at once, any other
        one goes on to the app. A raw path with that beginning always decodes to a path the router would
        give the proxy too, so only the work is skipped. A request with an ``Expect`` header still goes
        through the app, which answers it (100 Continue, or 417).
        """
        app_handler = server.request_handler
        handle = self.handle

        async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
            if request.raw_path.startswith(_PREFIXES) and "Expect" not in request.headers:
                return await handle(request)  # type: ignore[arg-type]
            return await app_handler(request)

        server.request_handler = dispatch

    async def close(self) -> None:
        pools = [pool for _, pool in self._pools.values()] + self._retired
        self._pools, self._retired = {}, []
        for pool in pools:
            await pool.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A request through aiohttp (a body, an upgrade, or a server without the front)."""
        record = _Record(request.raw_path)
        try:
            route, plan = await self._authorise(request, record)
            if upgrade_protocol(plan.client_headers) is not None:
                response = await self._upgrade(request, route, plan)
            else:
                body = await self._request_body(request, plan.headers)
                upstream = await self._send(request.method, route, plan, body)
                try:
                    response = await self._relay(request, route, upstream)
                finally:
                    upstream.close()
            record.status = response.status
            return response
        except _Answer as answer:
            record.status = answer.status
            return web.Response(
                status=answer.status, body=answer.body.encode(), headers={"Content-Type": _SNIFFED_TEXT}
            )
        finally:
            self._trace(record, request.method)

    async def exchange(self, request: ClientRequest, reply: Reply) -> None:
        """A bodiless, non-upgrade request from `ProxyFront`, answered through ``reply``."""
        record = _Record(request.raw_path)
        try:
            route, plan = await self._authorise(request, record)
            upstream = await self._send(request.method, route, plan, None)
            try:
                record.status = upstream.status
                await reply.relay(upstream)
            finally:
                upstream.close()
        except _Answer as answer:
            record.status = answer.status
            reply.answer(answer.status, answer.body.encode(), _SNIFFED_TEXT)
        finally:
            self._trace(record, request.method)

    async def _authorise(self, request: ClientRequest, record: _Record) -> tuple[Route, _Plan]:
        """The request's route and plan (`_Answer` when the proxy answers itself); the user is recorded."""
        route = record.route
        if route is None:
            raise _Answer(404, "404 page not found\n")
        identity = await self._authenticate(request, route)
        record.user = identity.name if isinstance(identity, UserInfo) else ""
        return route, await self._plan(request, route, identity)

    async def _authenticate(self, request: ClientRequest, route: Route) -> UserInfo:
        auth = AuthRequest(
            headers=request.headers, cookies=request.cookies, host=request.host, cluster=route.cluster
        )
        try:
            user = await self.authenticator.authenticate(auth)
        except AuthenticationError as exc:
            logger.debug("proxy request for cluster %r not authenticated: %s", route.cluster, exc)
            raise _forbidden(route.cluster, UNAUTHENTICATED) from None
        if not self.settings.request_extras:
            return user
        key = (id(user), request.host)
        memo = self._with_extras.get(key)
        if memo is not None and memo[0] is user:
            return memo[1]
        extras = dict(user.extras)
        extras.pop("requesttokenid", None)
        extras.pop("requesthost", None)
        if user.token_name:
            extras["requesttokenid"] = (user.token_name,)
        extras["requesthost"] = (request.host,)
        result = replace(user, extras=extras)
        if len(self._with_extras) >= _MEMO_LIMIT:
            self._with_extras.clear()
        self._with_extras[key] = (user, result)
        return result

    async def _plan(self, request: ClientRequest, route: Route, user: UserInfo) -> _Plan:
        """Who may reach which cluster, how, and with which headers; `_Answer` when the proxy answers."""
        if not route.valid_cluster:
            raise _not_found(route.cluster)
        review_cluster = route.cluster if self.settings.sar_scope == "downstream" else None
        client_headers = tuple(request.headers.items())
        asked = client_impersonation(client_headers)
        try:
            resolved = await self.policy.resolve(user, asked, review_cluster=review_cluster)
        except ImpersonationRefusedError as exc:
            raise _Answer(403, str(exc)) from None
        viewer = resolved if isinstance(resolved, UserInfo) else user
        if not await self.clusters.can_access(route.cluster, viewer):
            raise _forbidden(route.cluster, viewer.name)
        target = await self.clusters.get(route.cluster)
        if target is None:
            raise _not_found(route.cluster)
        if not target.provisioned:
            raise _norman(503, "ClusterUnavailable", "cluster not provisioned")
        if has_dot_segment(route.path):
            raise _Answer(400, "invalid path: dot segments are not proxied")
        try:
            endpoint = endpoint_of(target)
        except DialError as exc:
            raise _Answer(500, f"error trying to reach service: {exc}") from None
        token, identity = await self._credentials(route.cluster, resolved)
        client = request.remote if request.remote else None
        try:
            headers = downstream_headers(
                client_headers,
                token=token,
                identity=identity,
                client_address=client,
                own=self._own_headers(token, identity),
            )
        except HeaderValueError as exc:
            raise _Answer(500, str(exc)) from None
        return _Plan(target=target, endpoint=endpoint, headers=headers, client_headers=client_headers)

    def _own_headers(self, token: str, identity: UserInfo | None) -> list[tuple[str, str]]:
        """`own_headers`, kept per token and identity object (the memoised identities repeat)."""
        key = (token, id(identity))
        memo = self._own.get(key)
        if memo is not None and memo[0] is identity:
            return memo[1]
        own = own_headers(token, identity)
        if len(self._own) >= _MEMO_LIMIT:
            self._own.clear()
        self._own[key] = (identity, own)
        return own

    async def _credentials(
        self, cluster: str, resolved: UserInfo | ServiceAccountTarget
    ) -> tuple[str, UserInfo | None]:
        if isinstance(resolved, ServiceAccountTarget):
            try:
                token = await self.service_account_tokens.token_for(
                    cluster,
                    namespace=resolved.namespace,
                    name=resolved.name,
                    expiration_seconds=self.settings.service_account_token_seconds,
                )
            except ServiceAccountTokenError as exc:
                raise _Answer(500, f"unable to create token for impersonated ServiceAccount: {exc}") from None
            return token, None
        try:
            return await self.accounts.token_for(cluster, resolved), resolved
        except ImpersonationAccountError as exc:
            raise _Answer(500, f"unable to create impersonator account: {exc}") from None

    def _pool(self, target: ClusterTarget, endpoint: Endpoint) -> ConnectionPool:
        """One connection pool per cluster, replaced when its endpoint or CA changes."""
        cached = self._pools.get(target.name)
        if cached is not None and cached[0] == target and not cached[1].closed:
            return cached[1]
        if cached is not None:
            cached[1].retire()  # may still carry streams: those end on their own, or with the proxy
            self._retired = [p for p in self._retired if p.busy_count] + [cached[1]]
        pool = ConnectionPool(
            dialer=self.dialer,
            cluster=target.name,
            endpoint=endpoint,
            context=tls_context(target) if endpoint.tls else None,
            connect_timeout_seconds=self.settings.connect_timeout_seconds,
            buffer_bytes=self.settings.buffer_bytes,
        )
        self._pools[target.name] = (target, pool)
        return pool

    async def _send(
        self,
        method: str,
        route: Route,
        plan: _Plan,
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        """Send the request to the cluster and wait for the answer's head (`_Answer` 500 if none came)."""
        try:
            pool = self._pool(plan.target, plan.endpoint)
        except DialError as exc:
            raise _Answer(500, f"error trying to reach service: {exc}") from None
        attempts = 2 if self.settings.retry_idempotent and body is None and method in _IDEMPOTENT else 1
        path = plan.endpoint.prefix + route.target
        for attempt in range(1, attempts + 1):
            try:
                return await pool.request(method, path, plan.headers, body)
            except (DialError, UpstreamError) as exc:
                logger.info("proxy to cluster %r failed (attempt %d): %s", route.cluster, attempt, exc)
                if attempt == attempts:
                    raise _Answer(500, f"error trying to reach service: {exc}") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _request_body(
        self, request: web.Request, headers: list[tuple[str, str]]
    ) -> bytes | AsyncIterator[bytes] | None:
        """None without a body; the bytes of a small one; else a stream (chunked when of unknown length)."""
        if not request.body_exists:
            return None
        length = request.content_length
        if length is not None and length <= self.settings.buffer_bytes:
            return await request.read()
        if length is None:
            headers.append(("Transfer-Encoding", "chunked"))
        return _chunks(request)

    async def _relay(
        self, request: web.Request, route: Route, upstream: UpstreamResponse
    ) -> web.StreamResponse:
        headers = upstream_response_headers(
            upstream.headers
        )  # the response copies them into its own multidict
        if (
            upstream.complete
            and not upstream.chunked
            and request.method != "HEAD"
            and upstream.status not in _BODILESS
        ):
            # the whole answer is here: one write with the head
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=upstream.body()
            )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if upstream.chunked:
            response.headers.popall("Content-Length", None)
        await response.prepare(request)
        try:
            while chunk := await upstream.read():
                await response.write(chunk)
        except (UpstreamError, ConnectionError) as exc:
            # The status is out: all that is left is to cut the client's stream short.
            logger.info("stream from cluster %r ended early: %s", route.cluster, type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _upgrade(self, request: web.Request, route: Route, plan: _Plan) -> web.StreamResponse:
        limit = self.settings.buffer_bytes
        endpoint, headers = plan.endpoint, plan.headers
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                reader, writer = await open_streams(
                    self.dialer,
                    cluster=route.cluster,
                    endpoint=endpoint,
                    context=tls_context(plan.target),
                    limit=limit,
                )
        except (DialError, TimeoutError) as exc:
            # Go's reverse proxy answers a failed upgrade dial with an empty 502.
            logger.info("upgrade to cluster %r failed: %s", route.cluster, exc)
            return web.Response(status=502)
        try:
            body = await request.read() if request.body_exists else b""
            out = headers + ([("Content-Length", str(len(body)))] if body else [])
            host = endpoint.origin.split("://", 1)[1]
            writer.write(
                proxy_upgrade.request_head(
                    request.method, endpoint.prefix + route.target, host=host, headers=out
                )
            )
            writer.write(body)
            await writer.drain()
            head = await proxy_upgrade.read_response_head(reader)
            if head.status == 101:
                return await proxy_upgrade.pipe_upgraded(request, head, reader, writer, limit=limit)
            return await proxy_upgrade.relay_response(request, head, reader, limit=limit)
        except (ProxyError, ConnectionError) as exc:
            logger.info("upgrade to cluster %r failed: %s", route.cluster, exc)
            return web.Response(status=502)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _trace(self, record: _Record, method: str) -> None:
        route = record.route
        if self.trace_sink is None or route is None:
            return
        event = RequestCompleted(
            t=self._trace_time(),
            path="proxy",
            cluster=route.cluster,
            user=record.user,
            verb=request_verb(method, route.path, route.query),
            status=record.status,
            latency_seconds=time.monotonic() - record.started,
        )
        self.trace_sink(event)


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk

"""The server process: the v3 API, the public login and the authentication proxy on one HTTPS listener.

`run_server` prepares the upstream (`corral.server.bootstrap`), starts the state's informers and the
cluster controllers, then serves until it is told to stop. The proxy's seams come from the state:
clusters from the Cluster cache (``local`` is the upstream itself), client-impersonation reviews
as SubjectAccessReviews on the management cluster, impersonation accounts and ServiceAccount tokens
from the controllers. Several processes may serve one upstream at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiohttp import web

from corral.auth.identity import UserInfo
from corral.errors import ConfigError, CorralError, KubeAPIError
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.kubeconfig import KubeConfig
from corral.model.trace import Event, TraceWriter
from corral.server.access import Access
from corral.server.authconfigs import AuthConfigAPI, GroupRefresher
from corral.server.authn import TokenAuthenticator, TokenIssuer
from corral.server.bootstrap import BootstrapSettings, bootstrap
from corral.server.controllers import ClusterControllers
from corral.server.etcd_backups import EtcdBackups, NodeEtcd
from corral.server.localauth import LocalAuth
from corral.server.provisioning import LocalDriver, Provisioner
from corral.server.proxy import AuthProxy, ProxySettings
from corral.server.proxy_front import ProxyFront
from corral.server.proxy_interfaces import AccessReview, AccessReviewError, ClusterTarget, SARScope
from corral.server.state import JSON, ServerState
from corral.server.tunnels import Tunnels, build_tunnels
from corral.server.v3 import V3API

logger = logging.getLogger(__name__)

__all__ = ["READY_LINE", "ServerOptions", "StateClusters", "UpstreamReviewer", "build_app", "run_server"]

READY_LINE = "corral server ready on "


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """``corral server``'s options."""

    kubeconfig: Path
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path
    tls_key: Path
    tls_ca: Path | None = None
    """The CA published as ``cacerts`` (default: the last certificate of ``tls_cert``)."""
    server_url: str = ""
    bootstrap_password: str | None = field(default=None, repr=False)
    data_dir: Path | None = None
    trace: Path | None = None
    fast_failover: bool = False
    """Server-side pings and a retry of idempotent requests on another session (not Rancher's way)."""
    auth_timeout: float | None = None
    """Seconds an external provider's login may take (default: LDAP 4 x connectionTimeout, GitHub 10)."""
    impersonation_review_scope: SARScope = "management"
    """Where ``kubectl --as`` is reviewed: the management cluster (Rancher 2.15+) or the downstream one."""
    also_listen: tuple[tuple[str, int], ...] = ()
    """Further ``(host, port)`` listeners with the same app (where real nodes reach the server)."""


def _certificates(pem: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + marker + "\n" for part in pem.split(marker)[:-1] if part.strip()]


def cacerts_of(options: ServerOptions) -> str:
    """The PEM for the ``cacerts`` setting: ``--tls-ca``, or the chain's last certificate."""
    if options.tls_ca is not None:
        return options.tls_ca.read_text()
    chain = _certificates(options.tls_cert.read_text())
    if not chain:
        raise ConfigError(f"--tls-cert {options.tls_cert}: no PEM certificate in it")
    return chain[-1]


class StateClusters:
    """The proxy's `ClusterLookup` over the Cluster cache and the v3 visibility rules."""

    def __init__(self, state: ServerState, access: Access) -> None:
        self.state = state
        self.access = access
        # The target built from each cached Cluster object, rebuilt when the cache holds a new one.
        self._targets: dict[str, tuple[object, ClusterTarget]] = {}

    async def can_access(self, cluster: str, user: UserInfo) -> bool:
        return self.access.can_see_cluster(user, cluster)

    async def get(self, cluster: str) -> ClusterTarget | None:
        obj = self.state.clusters.get(cluster)
        if obj is None:
            return None
        built = self._targets.get(cluster)
        if built is not None and built[0] is obj:
            return built[1]
        target = self._target(cluster, obj)
        self._targets[cluster] = (obj, target)
        return target

    @staticmethod
    def _target(cluster: str, obj: JSON) -> ClusterTarget:
        status = obj.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        endpoint = str(status.get("apiEndpoint") or "")
        return ClusterTarget(
            name=cluster,
            api_endpoint=endpoint,
            ca_pem=_pem(str(status.get("caCert") or "")),
            provisioned=bool(endpoint) and conditions.get("Provisioned") == "True",
        )


def _pem(value: str) -> str | None:
    """``status.caCert``: base64 of the PEM as Rancher stores it (a bare PEM is accepted too)."""
    if not value:
        return None
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        logger.warning("a cluster's caCert is neither PEM nor base64 of a PEM; the system store is used")
        return None


class UpstreamReviewer:
    """Client-impersonation SubjectAccessReviews: on the management cluster (Rancher 2.15 and later),
    or, given ``downstream``, on the request's cluster through Rancher's credential there (2.10-2.14).
    """

    def __init__(
        self, upstream: AsyncKubeClient, *, downstream: Callable[[str], AsyncKubeClient | None] | None = None
    ) -> None:
        self.upstream = upstream
        self.downstream = downstream

    async def allowed(self, review: AccessReview, *, cluster: str | None) -> bool:
        client = self.upstream
        if cluster is not None:
            found = self.downstream(cluster) if self.downstream is not None else None
            if found is None:
                raise AccessReviewError(f"no client for cluster {cluster} to review the impersonation")
            client = found
        try:
            return await client.allows(
                review.user,
                list(review.groups),
                review.verb,
                review.resource,
                namespace=review.namespace,
                group=review.group,
                name=review.name,
            )
        except KubeAPIError as exc:
            raise AccessReviewError(f"SubjectAccessReview failed: {exc}") from None


class _Trace:
    """Appends trace events to a file several processes share, off the request's path.

    Events are queued and written (encoded, whole lines, one append) by a callback the event loop
    runs right after the current callbacks, so under load the requests that end in one turn of the
    loop share one system call. Outside a running loop, and at close, they are written at once.
    """

    def __init__(self, path: Path) -> None:
        self._stream: IO[str] = path.open("a", encoding="utf-8")
        self._writer = TraceWriter(self._stream, batch=1_000_000)
        self._started = time.monotonic()
        self._queued: list[Event] = []
        self._scheduled = False

    def __call__(self, event: Event) -> None:
        self._queued.append(event)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        queued, self._queued = self._queued, []
        if self._stream.closed:
            return
        self._writer.write_all(queued)
        self._writer.close()  # writes the lines and flushes the stream (which it does not own)

    def time(self) -> float:
        return time.monotonic() - self._started

    def close(self) -> None:
        self.flush()
        self._stream.close()


@dataclass(slots=True)
class Built:
    """The running pieces of one server process."""

    app: web.Application
    state: ServerState
    authenticator: TokenAuthenticator
    proxy: AuthProxy
    controllers: ClusterControllers
    tunnels: Tunnels
    admin_id: str
    auth_configs: AuthConfigAPI | None = None
    refresher: GroupRefresher | None = None
    local_driver: LocalDriver | None = None


async def build_app(
    options: ServerOptions,
    *,
    trace: Callable[[Event], None] | None = None,
    provisioner: Provisioner | None = None,
) -> Built:
    """Prepare the upstream, start the caches and the controllers, and assemble the aiohttp app.

    ``provisioner`` enables ``driver: local`` on ``POST /v3/clusters``.
    """
    config = KubeConfig.load(options.kubeconfig)
    upstream = AsyncKubeClient(config)
    state = ServerState(upstream)
    settings = BootstrapSettings(
        server_url=options.server_url,
        cacerts=cacerts_of(options),
        upstream_server=config.server,
        upstream_ca_pem=config.ca_pem.decode() if config.ca_pem else None,
        bootstrap_password=options.bootstrap_password,
        data_dir=options.data_dir,
    )
    admin_id = await bootstrap(state, settings)
    trace_time = trace.time if isinstance(trace, _Trace) else None
    authenticator = TokenAuthenticator(state)
    access = Access(state)
    clusters = StateClusters(state, access)
    # Downstream clusters are reached through their agents' tunnels (/v3/connect), `local` directly:
    # by the proxy and by the cluster controllers alike.
    tunnels = build_tunnels(
        state, clusters=clusters, fast=options.fast_failover, trace_sink=trace, trace_time=trace_time
    )
    controllers = ClusterControllers(state, trace=trace, trace_time=trace_time, routes=tunnels.dialer)
    await controllers.start()
    await tunnels.start()
    proxy = AuthProxy(
        authenticator=authenticator,
        clusters=clusters,
        accounts=controllers,
        reviewer=UpstreamReviewer(upstream, downstream=controllers.client_for),
        service_account_tokens=controllers,
        dialer=tunnels.dialer,
        settings=ProxySettings(
            sar_scope=options.impersonation_review_scope, retry_idempotent=options.fast_failover
        ),
        trace_sink=trace,
        trace_time=trace_time,
    )
    issuer = TokenIssuer(state)
    api = V3API(
        state=state,
        authenticator=authenticator,
        issuer=issuer,
        local=LocalAuth(state),
        access=access,
        etcd_backups=EtcdBackups(upstream, NodeEtcd(tunnels.endpoints)),
        local_driver=LocalDriver(state, provisioner) if provisioner is not None else None,
    )
    auth_configs = AuthConfigAPI(
        state=state, authenticator=authenticator, issuer=issuer, timeout=options.auth_timeout
    )
    await auth_configs.ensure_configs()
    refresher = GroupRefresher(auth_configs)
    refresher.start()
    app = web.Application(client_max_size=1024 * 1024)
    auth_configs.add_routes(app)
    api.add_routes(app)
    tunnels.endpoints.add_routes(app)
    proxy.add_routes(app)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/ping", _ping)
    return Built(
        app=app,
        state=state,
        authenticator=authenticator,
        proxy=proxy,
        controllers=controllers,
        tunnels=tunnels,
        admin_id=admin_id,
        auth_configs=auth_configs,
        refresher=refresher,
        local_driver=api.local_driver,
    )


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _ping(_: web.Request) -> web.Response:
    return web.Response(text="pong")


def tls_context(options: ServerOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key do not load as a certificate and its key: {exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


async def run_server(
    options: ServerOptions,
    *,
    ready: Callable[[str], None] | None = None,
    provisioner: Provisioner | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; ``ready(url)`` once the listener accepts connections."""
    trace = _Trace(options.trace) if options.trace is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    context = tls_context(options)
    built = await build_app(options, trace=trace, provisioner=provisioner)
    # Open streams (watches through the proxy) get a few seconds to end; then they are cut.
    runner = web.AppRunner(built.app, access_log=None, handle_signals=False, shutdown_timeout=3.0)
    await runner.setup()
    assert runner.server is not None
    built.proxy.serve_first(runner.server)
    front = ProxyFront(built.proxy, runner.server)
    listeners: list[asyncio.Server] = []
    try:
        for listen_host, listen_port in ((options.host, options.port), *options.also_listen):
            listeners.append(
                await loop.create_server(front, listen_host, listen_port, ssl=context, backlog=1024)
            )
        host = f"[{options.host}]" if ":" in options.host else options.host
        url = f"https://{host}:{options.port}"
        if ready is not None:
            ready(url)
        await stop.wait()
        logger.info("stopping the server on %s", url)
    finally:
        for listener in listeners:
            listener.close()
        await _quietly(front.shutdown(3.0), "the proxy's client connections")
        await _quietly(runner.cleanup(), "the listener")
        await _quietly(built.proxy.close(), "the proxy's sessions")
        if built.refresher is not None and built.auth_configs is not None:
            await _quietly(built.refresher.stop(), "the user attribute refresh")
            await _quietly(built.auth_configs.close(), "the auth providers' sessions")
        if built.local_driver is not None:
            await _quietly(built.local_driver.close(), "cluster provisioning", timeout_seconds=15.0)
        await _quietly(built.tunnels.close(), "the agents' tunnels")
        await _quietly(built.controllers.stop(), "the cluster controllers")
        await _quietly(built.authenticator.drain(), "lastUsedAt writes")
        await _quietly(built.state.stop(), "the informers")
        await _quietly(built.state.upstream.close(), "the upstream client")
        if trace is not None:
            trace.close()


async def _quietly(step: Awaitable[object], what: str, *, timeout_seconds: float = 5.0) -> None:
    """One shutdown step, bounded in time; a failure is logged and the next step still runs."""
    try:
        async with asyncio.timeout(timeout_seconds):
            await step
    except TimeoutError:
        logger.warning("stopping %s took over %gs; going on", what, timeout_seconds)
    except (CorralError, OSError) as exc:
        logger.warning("stopping %s failed: %s", what, exc)

"""`corral kube-api-auth`: the token webhook behind a cluster's Authorized Cluster Endpoint.

kube-apiserver posts each bearer token it does not know to ``POST /v1/authenticate`` as a TokenReview;
the answer comes from watch-fed caches of the cluster's ``cattle-system`` objects (no API round trip on
the way), so the cluster keeps authenticating its users while the Rancher-like server is away.
``GET /healthcheck`` answers 200 with an empty body. Failures are 401 with an empty JSON-typed body,
malformed requests 400, as Rancher's kube-api-auth; reads and writes are bounded by 30 s. Effects of a
verified token: a legacy hash is migrated into its Secret before answering (a failed migration refuses,
as upstream); ``needsRefresh`` and ``lastUsedAt`` (once per second per token) are written in the
background and their failures only logged. Logs name tokens only when they exist, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from aiohttp import web

from corral.auth import hashers
from corral.errors import AlreadyExistsError, ConfigError, CorralError, KubeAPIError, NotFoundError
from corral.k8s import KubeConfig
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth.cache import Caches
from corral.kubeapiauth.objects import (
    CLUSTER_AUTH_TOKENS,
    CLUSTER_USER_ATTRIBUTES,
    NAMESPACE,
    hash_secret_body,
    now_utc,
    paths,
)
from corral.kubeapiauth.review import (
    Accepted,
    Candidate,
    Credentials,
    Refused,
    ReviewRequestError,
    conclude,
    examine,
    parse_review,
    success_body,
    verify_secret,
)
from corral.model.trace import TokenReviewed, TraceWriter

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LISTEN",
    "IO_TIMEOUT_SECONDS",
    "KubeApiAuth",
    "ServeOptions",
    "in_cluster_config",
    "parse_listen",
    "serve",
]

DEFAULT_LISTEN = "127.0.0.1:6440"
IO_TIMEOUT_SECONDS = 30.0
"""Read and write timeouts of kube-api-auth's HTTP server."""
IDLE_TIMEOUT_SECONDS = 120.0
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) into its parts; `ConfigError` names what is wrong."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ConfigError(f"--listen {text!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


def in_cluster_config() -> KubeConfig:
    """The Pod's service account, as client-go's in-cluster config reads it."""
    import os

    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("no --kubeconfig and not in a Pod (KUBERNETES_SERVICE_HOST/PORT are unset)")
    try:
        token = (SERVICE_ACCOUNT / "token").read_text(encoding="utf-8").strip()
        ca_pem = (SERVICE_ACCOUNT / "ca.crt").read_bytes()
    except OSError as e:
        raise ConfigError(f"in-cluster config: cannot read the service account files: {e.strerror}") from e
    server_host = f"[{host}]" if ":" in host else host
    return KubeConfig(server=f"https://{server_host}:{port}", ca_pem=ca_pem, token=token)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """How `serve` runs: where it listens, which namespace and cluster it reads, where it traces."""

    listen: str = DEFAULT_LISTEN
    namespace: str = NAMESPACE
    kubeconfig: KubeConfig
    trace: Path | None = None
    cluster: str = ""
    """The cluster's name in trace events."""
    trace_epoch: float | None = None
    """Unix time that trace times count from (default: when the process started serving)."""


class KubeApiAuth:
    """The application: caches, the two routes and the effects of a verified token."""

    def __init__(
        self,
        client: AsyncKubeClient,
        *,
        namespace: str = NAMESPACE,
        cluster: str = "",
        trace: IO[str] | None = None,
        trace_epoch: float | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.cluster = cluster
        self.caches = Caches(client, namespace=namespace)
        self._paths = paths(namespace)
        self._trace_stream = trace
        self._trace = TraceWriter(trace) if trace is not None else None
        self._epoch = time.time() if trace_epoch is None else trace_epoch
        self._clock = clock
        self._last_used_written: dict[str, str] = {}
        self._background: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthcheck", self.healthcheck, allow_head=False)
        app.router.add_post("/v1/authenticate", self.authenticate)
        return app

    async def start(self) -> None:
        self.caches.start()
        await self.caches.wait_synced()

    async def stop(self) -> None:
        await self.caches.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._trace_stream is not None:
            self._trace_stream.flush()

    # -- routes -----------------------------------------------------------------------------------

    async def healthcheck(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def authenticate(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        try:
            async with asyncio.timeout(IO_TIMEOUT_SECONDS):
                body = await request.read()
        except (TimeoutError, web.HTTPRequestEntityTooLarge, ConnectionError) as e:
            logger.info("TokenReview not read: %s", type(e).__name__)
            return _failure(400)
        try:
            credentials = parse_review(body)
        except ReviewRequestError as e:
            logger.info("malformed TokenReview: %s", e)
            return _failure(400)
        try:
            async with asyncio.timeout(IO_TIMEOUT_SECONDS - (time.monotonic() - started)):
                outcome = await self.decide(credentials)
        except TimeoutError:
            # As a Go server past its write timeout: the connection ends without an answer.
            logger.warning("TokenReview not answered within %.0fs", IO_TIMEOUT_SECONDS)
            if request.transport is not None:
                request.transport.close()
            raise
        self._record(outcome, time.monotonic() - started)
        if isinstance(outcome, Refused):
            return _failure(401)
        return web.json_response(success_body(outcome.user, outcome.groups))

    # -- the decision and its effects -------------------------------------------------------------

    async def decide(self, credentials: Credentials) -> Accepted | Refused:
        """The verification steps in order, with their effects; logs say why a token was refused."""
        now = self._clock()
        candidate = examine(credentials, self.caches, now=now)
        if isinstance(candidate, Refused):
            return self._refused(credentials, candidate)
        refused = await _verify(candidate, credentials)
        if refused is not None:
            return self._refused(credentials, refused)
        if candidate.migrate:
            try:
                await self.migrate_hash(credentials.access_key)
            except KubeAPIError as e:
                return self._refused(credentials, Refused(reason=f"migrating the hash: {e}", user=""))
        outcome = conclude(candidate, debounce_seconds=self.caches.debounce_seconds(), now=now)
        if isinstance(outcome, Refused):
            return self._refused(credentials, outcome)
        if outcome.mark_needs_refresh:
            self._spawn(self._mark_needs_refresh(outcome.user))
        if outcome.last_used_at is not None:
            name, second = credentials.access_key, outcome.last_used_at
            if self._last_used_written.get(name) != second:
                self._last_used_written[name] = second
                self._spawn(self._touch_last_used(name, second))
        logger.debug("token %s authenticated user %s", credentials.access_key, outcome.user)
        return outcome

    def _refused(self, credentials: Credentials, refused: Refused) -> Refused:
        if self.caches.token(credentials.access_key) is None:
            logger.info("token refused: %s", refused.reason)
        else:
            logger.info("token %s refused: %s", credentials.access_key, refused.reason)
        return refused

    async def migrate_hash(self, name: str) -> None:
        """Move a legacy ``hash`` field into the token's Secret, then empty the field."""
        token_path = f"{self._paths[CLUSTER_AUTH_TOKENS]}/{name}"
        token = await self.client.get(token_path)
        legacy = token.get("hash")
        if not isinstance(legacy, str) or not legacy:
            return
        secret = hash_secret_body(name=name, hashed=legacy, namespace=self.namespace)
        try:
            await self.client.create(self._paths["secrets"], secret)
        except AlreadyExistsError:
            await self.client.patch(f"{self._paths['secrets']}/{name}", {"data": secret["data"]})
        # The test keeps a hash written in between from being erased unseen (it fails with 422).
        await self.client.patch(
            token_path,
            [
                {"op": "test", "path": "/hash", "value": legacy},
                {"op": "replace", "path": "/hash", "value": ""},
            ],
            kind="json",
        )
        logger.info("token %s: legacy hash moved into its Secret", name)

    async def _mark_needs_refresh(self, user: str) -> None:
        try:
            await self.client.patch(f"{self._paths[CLUSTER_USER_ATTRIBUTES]}/{user}", {"needsRefresh": True})
        except KubeAPIError as e:
            logger.warning("setting needsRefresh on clusteruserattribute %s: %s", user, e)

    async def _touch_last_used(self, name: str, second: str) -> None:
        try:
            await self.client.patch(f"{self._paths[CLUSTER_AUTH_TOKENS]}/{name}", {"lastUsedAt": second})
        except NotFoundError:
            pass  # deleted since: nothing to record
        except KubeAPIError as e:
            logger.warning("updating lastUsedAt of clusterauthtoken %s: %s", name, e)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _record(self, outcome: Accepted | Refused, latency: float) -> None:
        if self._trace is None or self._trace_stream is None:
            return
        self._trace.write(
            TokenReviewed(
                t=round(time.time() - self._epoch, 6),
                cluster=self.cluster,
                user=outcome.user,
                authenticated=isinstance(outcome, Accepted),
                latency_seconds=round(latency, 6),
            )
        )
        self._trace_stream.flush()  # each event is on disk as soon as it is answered


async def _verify(candidate: Candidate, credentials: Credentials) -> Refused | None:
    """Hash check; scrypt (tens of milliseconds of CPU) runs in a thread so the loop keeps serving."""
    try:
        slow = hashers.hash_version(candidate.hashed) is hashers.HashVersion.SCRYPT
    except hashers.HashFormatError:
        slow = False
    if slow:
        return await asyncio.to_thread(verify_secret, candidate, credentials)
    return verify_secret(candidate, credentials)


def _failure(status: int) -> web.Response:
    return web.Response(status=status, headers={"Content-Type": "application/json"})


async def serve(options: ServeOptions, *, ready: Callable[[str, int], None] | None = None) -> None:
    """Run kube-api-auth until cancelled (or SIGTERM/SIGINT through `run`); ``ready`` gets host and port."""
    host, port = parse_listen(options.listen)
    trace_stream = options.trace.open("a", encoding="utf-8") if options.trace is not None else None
    client = AsyncKubeClient(options.kubeconfig)
    auth = KubeApiAuth(
        client,
        namespace=options.namespace,
        cluster=options.cluster,
        trace=trace_stream,
        trace_epoch=options.trace_epoch,
    )
    runner = web.AppRunner(auth.app(), access_log=None, keepalive_timeout=IDLE_TIMEOUT_SECONDS)
    try:
        logger.info("waiting for the caches of %s to sync", options.namespace)
        await auth.start()
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner) or port
        logger.info("kube-api-auth listening on %s:%d", host, bound)
        if ready is not None:
            ready(host, bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await auth.stop()
        await client.close()
        if trace_stream is not None:
            trace_stream.close()


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def run(options: ServeOptions, *, ready: Callable[[str, int], None] | None = None) -> None:
    """`serve` in a fresh event loop, ended cleanly by SIGTERM or SIGINT."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(options, ready=ready)

    try:
        asyncio.run(main())
    except OSError as e:
        raise CorralError(f"kube-api-auth cannot listen on {options.listen}: {e.strerror or e}") from e

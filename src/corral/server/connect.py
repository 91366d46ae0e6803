"""The tunnel endpoints ``/v3/connect`` and ``/v3/connect/register``: Rancher's MCM tunnel authorizer.

An agent's handshake carries ``X-API-Tunnel-Token`` (a cluster registration token, which names the
cluster) and ``X-API-Tunnel-Params`` (std base64 of JSON: ``{"cluster": {address, token, caCert}}``
or ``{"node": {requestedHostname, ...}}``). Answers follow remotedialer and Rancher
(docs/rancher.md#tunnel-endpoints): no token is 401 ``failed authentication``; an unknown token is
400 ``cluster not found``; bad params are 400 with Rancher's ``invalid input, ...`` texts. A cluster
agent's params register the cluster (API endpoint, ``cattle`` token, CA) before its session is
served under the key ``<cluster>``; a node agent's session is served under ``<cluster>:<node>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiohttp import web

from corral.errors import CorralError, TunnelError
from corral.model.trace import Event
from corral.tunnel import Clock, Session, SessionManager, SessionSettings, SystemClock, tunnel_handler

logger = logging.getLogger(__name__)

__all__ = [
    "CONNECT_PATH",
    "DEFAULT_NODE_API_ADDRESS",
    "PARAMS_HEADER",
    "REGISTER_PATH",
    "TOKEN_HEADER",
    "ClusterParams",
    "ClusterRegistrar",
    "FastFailover",
    "NodeParams",
    "RegistrationTokens",
    "StateRegistrar",
    "StateRegistrationTokens",
    "TunnelEndpoints",
    "TunnelInputError",
    "TunnelParams",
    "encode_params",
    "parse_params",
]

CONNECT_PATH: Final = "/v3/connect"
REGISTER_PATH: Final = "/v3/connect/register"
TOKEN_HEADER: Final = "X-API-Tunnel-Token"  # noqa: S105 - a header name
PARAMS_HEADER: Final = "X-API-Tunnel-Params"
CLUSTER_NOT_FOUND: Final = "cluster not found"
DEFAULT_NODE_API_ADDRESS: Final = "127.0.0.1:6443"
"""Where Rancher sends a node agent's dials to the cluster's API endpoint (``pkg/dialer/factory.go``)."""

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class TunnelInputError(CorralError):
    """The handshake's params are unusable; the message is the 400 body (never a secret)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterParams:
    """A cluster agent's report: the in-cluster API address, the ``cattle`` token and the CA."""

    address: str
    token: str = field(repr=False)
    ca_cert: str
    """base64 of the CA's PEM, as the agent sends it and Rancher stores it."""

    @property
    def ca_pem(self) -> str:
        try:
            return base64.b64decode(self.ca_cert, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TunnelInputError("invalid input, caCert is not base64 of a PEM certificate") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeParams:
    """A node agent's report (Rancher v2.9 ``pkg/agent/node``), plus where its node-local API listens."""

    hostname: str
    address: str = ""
    internal_address: str = ""
    control_plane: bool = False
    etcd: bool = False
    worker: bool = False
    api_address: str = DEFAULT_NODE_API_ADDRESS
    """The node-local kube-apiserver (``apiAddress``; corral's field, Rancher's fixed 127.0.0.1:6443)."""
    operations: tuple[str, ...] = ()
    """Node operations the agent serves (``operations``, corral's field): ``etcd-snapshot``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelParams:
    """Exactly one of ``cluster`` and ``node``."""

    cluster: ClusterParams | None = None
    node: NodeParams | None = None
    node_version: int = 0


def _go_base64_error(text: str) -> str:
    """Go's ``illegal base64 data at input byte N`` for the first offending byte."""
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    stripped = text.rstrip("=")
    for index, char in enumerate(text):
        if char not in alphabet and not (char == "=" and index >= len(stripped)):
            return f"illegal base64 data at input byte {index}"
    return f"illegal base64 data at input byte {len(stripped)}"


def _string(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TunnelInputError(f"invalid input, {key} is not a string")
    return value


def parse_params(header: str) -> TunnelParams:
    """Decode and check ``X-API-Tunnel-Params`` as Rancher's ``readInput``; `TunnelInputError` if bad.

    Both sections at once are refused (Rancher would take the node and ignore the cluster).
    """
    try:
        raw = base64.b64decode(header, validate=True)
    except binascii.Error:
        raise TunnelInputError(_go_base64_error(header)) from None
    if not raw:
        raise TunnelInputError("unexpected end of JSON input")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TunnelInputError("invalid character in JSON input") from None
    if not isinstance(document, dict):
        raise TunnelInputError("json: cannot unmarshal params into a registration object")
    cluster_doc, node_doc = document.get("cluster"), document.get("node")
    if cluster_doc is None and node_doc is None:
        raise TunnelInputError("missing node or cluster registration info")
    if cluster_doc is not None and node_doc is not None:
        raise TunnelInputError("invalid input, both node and cluster registration info")
    if node_doc is not None:
        return _node_params(node_doc, document.get("nodeVersion", 0))
    return TunnelParams(cluster=_cluster_params(cluster_doc))


def _node_params(node_doc: object, version: object) -> TunnelParams:
    if not isinstance(node_doc, dict):
        raise TunnelInputError("invalid input, node is not an object")
    hostname = _string(node_doc, "requestedHostname")
    if not hostname:
        raise TunnelInputError("invalid input, hostname empty")
    if not _NODE_NAME.match(hostname):
        raise TunnelInputError("invalid input, hostname is not a valid node name")
    custom = node_doc.get("customConfig") or {}
    if not isinstance(custom, dict):
        raise TunnelInputError("invalid input, customConfig is not an object")
    return TunnelParams(
        node=NodeParams(
            hostname=hostname,
            address=_string(custom, "address"),
            internal_address=_string(custom, "internalAddress"),
            control_plane=node_doc.get("controlPlane") is True,
            etcd=node_doc.get("etcd") is True,
            worker=node_doc.get("worker") is True,
            api_address=_string(node_doc, "apiAddress") or DEFAULT_NODE_API_ADDRESS,
            operations=_operations(node_doc.get("operations")),
        ),
        node_version=version if isinstance(version, int) and not isinstance(version, bool) else 0,
    )


def _operations(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TunnelInputError("invalid input, operations is not a list of strings")
    return tuple(value)


def _cluster_params(cluster_doc: object) -> ClusterParams:
    if not isinstance(cluster_doc, dict):
        raise TunnelInputError("invalid input, cluster is not an object")
    address, token, ca = (_string(cluster_doc, k) for k in ("address", "token", "caCert"))
    for name, value in (("address", address), ("token", token), ("caCert", ca)):
        if not value:
            raise TunnelInputError(f"invalid input, {name} empty")
    return ClusterParams(address=address, token=token, ca_cert=ca)


def encode_params(document: Mapping[str, Any]) -> str:
    """``X-API-Tunnel-Params`` for a params document (what agents send)."""
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


# -- seams ------------------------------------------------------------------------------------------


class RegistrationTokens(Protocol):
    """Cluster registration tokens to the cluster they register."""

    async def cluster_for(self, token: str) -> str | None:
        """The cluster id of a registration token; None when no cluster has it."""
        ...


class ClusterRegistrar(Protocol):
    """What a cluster agent's params change on the server (Rancher's ``authorizeCluster``)."""

    async def register(self, cluster: str, params: ClusterParams) -> None: ...


class _HasState(Protocol):
    @property
    def crts(self) -> Any: ...

    @property
    def clusters(self) -> Any: ...


class StateRegistrationTokens:
    """Tokens from the server state's ClusterRegistrationToken cache (``status.token``, indexed).

    Rancher up to v2.12 indexed ``status.token`` this way; HEAD indexes Secrets ``crt-token-<name>``
    (keys ``token`` and ``previousToken``). corral stores the token on the object as v2.12 did.
    """

    def __init__(self, state: _HasState) -> None:
        self.state = state

    async def cluster_for(self, token: str) -> str | None:
        for crt in self.state.crts.by_index("token", token):
            cluster = str((crt.get("spec") or {}).get("clusterName") or crt["metadata"].get("namespace"))
            if self.state.clusters.get(cluster) is not None:
                return cluster
        return None


class StateRegistrar:
    """Registers through `corral.server.registration.register_cluster` (status, Secret, Provisioned)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    async def register(self, cluster: str, params: ClusterParams) -> None:
        from corral.server.registration import register_cluster

        try:
            await register_cluster(
                self.state,
                cluster,
                address=params.address,
                sa_token=params.token,
                ca_cert_pem=params.ca_pem,
            )
        except CorralError as exc:
            raise TunnelInputError(str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class FastFailover:
    """The opt-in faster mode: the server pings every session and drops one that stops answering.

    Rancher's server never pings and drops a silent session only after 60 s; here a frozen agent is
    noticed after ``read_deadline_seconds``. Idempotent requests caught on the dead session are
    retried on another (`corral.server.tunnel_dialer.TunnelDialer` with ``retry_sessions``).
    """

    ping_interval_seconds: float = 0.5
    read_deadline_seconds: float = 1.5


TraceSink = Callable[[Event], None]
SessionListener = Callable[[str, Session, bool], None]
"""``(client_key, session, connected)``: a session was added (True) or removed (False)."""


class TunnelEndpoints:
    """The two unauthenticated routes, their session manager and what node agents reported."""

    def __init__(
        self,
        *,
        tokens: RegistrationTokens,
        registrar: ClusterRegistrar,
        settings: SessionSettings | None = None,
        fast: FastFailover | None = None,
        clock: Clock | None = None,
        trace_sink: TraceSink | None = None,
        trace_time: Callable[[], float] | None = None,
    ) -> None:
        self.tokens = tokens
        self.registrar = registrar
        self.fast = fast
        self.clock = clock or SystemClock()
        base = settings or SessionSettings(clock=self.clock)
        if fast is not None:
            from dataclasses import replace

            base = replace(base, read_deadline_seconds=fast.read_deadline_seconds)
        self.settings = base
        self.manager = SessionManager(
            on_connect=self._connected,
            on_disconnect=self._disconnected,
            trace_sink=trace_sink,
            trace_time=trace_time,
        )
        self.nodes: dict[str, dict[str, NodeParams]] = {}
        """What each cluster's node agents reported, by cluster then node name (registration order)."""
        self._listeners: list[SessionListener] = []
        self._pingers: dict[int, asyncio.Task[None]] = {}
        self._handler = tunnel_handler(self.manager, self.authorize, settings=self.settings)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CONNECT_PATH, self._serve)
        app.router.add_get(REGISTER_PATH, self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        response = await self._handler(request)
        if isinstance(response, web.WebSocketResponse) and request.transport is not None:
            # The session is over and a websocket connection never serves HTTP again: release the
            # socket now, also when the closing handshake with a frozen peer timed out.
            request.transport.close()
        return response

    def listen(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    async def close(self) -> None:
        for task in list(self._pingers.values()):
            task.cancel()
        for key in self.manager.client_keys():
            for session in self.manager.sessions(key):
                await session.close("server stopping")

    # -- the authorizer ------------------------------------------------------------------------

    async def authorize(self, request: web.Request) -> tuple[str, bool]:
        """``(client_key, ok)``; raises (400) on an unknown token or bad params."""
        token = request.headers.get(TOKEN_HEADER, "")
        if not token:
            return "", False
        cluster = await self.tokens.cluster_for(token)
        if cluster is None:
            raise TunnelInputError(CLUSTER_NOT_FOUND)
        params = parse_params(request.headers.get(PARAMS_HEADER, ""))
        if params.node is not None:
            node = params.node
            known = self.nodes.setdefault(cluster, {})
            if node.hostname not in known and not request.path.endswith("/register"):
                logger.info("node agent %s of cluster %s connects before registering", node.hostname, cluster)
            known[node.hostname] = node
            return f"{cluster}:{node.hostname}", True
        assert params.cluster is not None
        await self.registrar.register(cluster, params.cluster)
        return cluster, True

    # -- session hooks --------------------------------------------------------------------------

    def _connected(self, key: str, session: Session) -> None:
        if self.fast is not None:
            task = asyncio.ensure_future(self._ping(session, self.fast.ping_interval_seconds))
            self._pingers[id(session)] = task
        for listener in self._listeners:
            listener(key, session, True)

    def _disconnected(self, key: str, session: Session) -> None:
        task = self._pingers.pop(id(session), None)
        if task is not None:
            task.cancel()
        for listener in self._listeners:
            listener(key, session, False)

    async def _ping(self, session: Session, interval: float) -> None:
        """Server-side pings: the agent's pongs keep the short read deadline of the fast mode met."""
        with contextlib.suppress(TunnelError, asyncio.CancelledError):
            while not session.closed:
                await self.clock.sleep(interval)
                await session.transport.ping()

"""Calibration: the service times and protocol constants the SimPy model runs on.

Kept apart from scenarios on purpose: a scenario says what the world looks like, a calibration
says how fast each part of it works. The defaults below are educated guesses documented in
``fixtures/calibration/default.yaml`` (which must equal them); measurements (of a real Rancher, or
of corral's own components once they exist) replace them by writing another file.

Service times are lognormal, given by their median and the sigma of the underlying normal:
``median_seconds * exp(sigma * z)`` for a standard normal ``z``. Every key is optional; a missing
one keeps its default, an unknown one is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from corral.errors import ConfigError
from corral.model._fields import Field
from corral.model.workload import VERBS


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTime:
    """A lognormal service time."""

    median_seconds: float
    sigma: float = 0.0

    def at(self, z: float) -> float:
        """The service time for the standard normal draw `z`."""
        return self.median_seconds * math.exp(self.sigma * z) if self.sigma else self.median_seconds


def _st(median: float, sigma: float) -> ServiceTime:
    return ServiceTime(median_seconds=median, sigma=sigma)


_APISERVER_DEFAULTS = {
    "get": _st(0.004, 0.5),
    "list": _st(0.030, 0.6),
    "create": _st(0.012, 0.5),
    "update": _st(0.012, 0.5),
    "patch": _st(0.010, 0.5),
    "delete": _st(0.012, 0.5),
}


_TOKEN_AUTHN = _st(0.0010, 0.4)
_PROXY_OVERHEAD = _st(0.0003, 0.4)
_TUNNEL_HOP = _st(0.00025, 0.4)
_REVIEW = _st(0.0012, 0.4)
_TUNNEL_AUTHORIZE = _st(0.004, 0.5)
_CPU_PER_REQUEST = _st(0.0005, 0.3)


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    bandwidth_mbps: float = 200.0
    """Throughput of every link for response bodies (streamed, so paid once per response)."""
    handshake_round_trips: float = 3.0
    """TCP + TLS 1.3 + websocket upgrade, in round trips, for an agent's tunnel connection."""
    client_timeout_seconds: float = 30.0
    """How long a client waits for an answer that never comes (a partitioned link)."""
    client_handshake_round_trips: float = 2.0
    """TCP (1 RTT) and TLS 1.3 (1 RTT, RFC 8446) before each kubectl invocation's first byte:
    every command opens a new connection."""
    initial_window_bytes: int = 14_600
    """TCP's initial congestion window (RFC 6928: 10 segments of 1,460 bytes); a body larger than
    it on a new connection takes extra round trips while the window doubles (slow start)."""
    stream_retry_seconds: float = 1.0
    """A watch, logs or exec client re-establishing a broken stream (client-go's reflector backs
    off 800 ms at first, with jitter)."""
    dead_peer_seconds: float = 45.0
    """How long a client holding a stream takes to notice its peer vanished without a close
    (client-go's HTTP/2 health check: a ping after 30 s of silence, 15 s ping timeout)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTimes:
    token_authn: ServiceTime = _TOKEN_AUTHN
    """Token lookup and hash check of `<name>:<secret>` in the proxy."""
    proxy_overhead: ServiceTime = _PROXY_OVERHEAD
    """Routing, header replacement and the impersonation headers, per request."""
    impersonation_setup_calls: int = 5
    """Downstream writes on a user's first request to a cluster (SA, secret, role, binding, ...)."""
    impersonation_check_calls: int = 1
    """Downstream reads on the first request after a server restart (the account already exists)."""
    tunnel_authorize: ServiceTime = _TUNNEL_AUTHORIZE
    """A worker's check of a connecting agent (token, cluster/node lookup) before its session opens."""
    idle_connections_per_cluster: int = 2
    """Idle connections the proxy keeps to each downstream apiserver (Go's net/http
    DefaultMaxIdleConnsPerHost); a request that finds none dials a new one through the tunnel."""
    cpu_per_request: ServiceTime = _CPU_PER_REQUEST
    """CPU time of one proxied request: TLS records both ways, framing, header rewrite (estimate)."""
    cpu_per_megabyte_seconds: float = 0.004
    """CPU time per MB of body passing through: decrypt, frame and re-encrypt (estimate: Go's
    AES-GCM runs at about 1 GB/s per core, and the body is handled about four times)."""
    cache_sync_seconds: float = 20.0
    """From a server replica's start until it serves: informers list and sync their caches
    (estimate for a small install)."""
    cache_sync_per_cluster_seconds: float = 0.005
    """Cache sync time added per downstream cluster (the cluster objects, their tokens and nodes)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelTimes:
    hop: ServiceTime = _TUNNEL_HOP
    """Frame encode/decode at one end of the tunnel, per direction."""
    agent_start_seconds: float = 5.0
    """From a restarted agent's process start to its first connect attempt (CA download, TLS
    probe, credentials): a real Rancher's agent served again 5.2 s after its process started,
    on one machine (docs/rancher.md#dialing-policy)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class APIServerTimes:
    verbs: Mapping[str, ServiceTime] = field(default_factory=lambda: dict(_APISERVER_DEFAULTS))
    system_seats: int = 30
    """Priority-and-fairness seats for the server's own calls (impersonation setup, health)."""
    workload_seats: int = 100
    """Seats for user requests, shared fairly between users (one queue per user)."""
    queue_limit: int = 200
    """Requests waiting per priority level before new ones are rejected with 429."""
    endpoint_lease_seconds: float = 15.0
    """How long a crashed apiserver stays in the cluster's `kubernetes` Service endpoints, which
    the agent uses (kube-apiserver's endpoint lease TTL, `--endpoint-reconciler-type=lease`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeAPIAuthTimes:
    review: ServiceTime = _REVIEW
    """The webhook call plus ClusterAuthToken, ClusterUserAttribute and Secret checks."""
    cache_ttl_seconds: float = 120.0
    """kube-apiserver's webhook token cache (`--authentication-token-webhook-cache-ttl`)."""
    token_sync_seconds: float = 1.0
    """From a token's change on the server (revoked, issued) to its ClusterAuthToken copy in a
    connected cluster: the clusterauthtoken controller's queue and two writes through the tunnel
    (estimate). A disconnected cluster gets it this long after its cluster agent reconnects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Protocol:
    """Rancher's and remotedialer's constants (docs/rancher.md#model-calibration)."""

    ping_interval_seconds: float = 5.0
    read_deadline_seconds: float = 60.0
    handshake_timeout_seconds: float = 10.0
    reconnect_after_close_seconds: float = 5.0
    reconnect_after_error_seconds: float = 10.0
    dial_wait_polls: int = 4
    dial_wait_min_seconds: float = 5.0
    dial_wait_max_seconds: float = 10.0
    health_tick_seconds: float = 15.0
    load_balancer_detect_seconds: float = 10.0
    """How long a load balancer keeps sending to a backend that crashed (two failed health checks
    5 s apart); a clean stop leaves it at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """All parameters of the model that are not part of a scenario."""

    network: Network = field(default_factory=Network)
    server: ServerTimes = field(default_factory=ServerTimes)
    tunnel: TunnelTimes = field(default_factory=TunnelTimes)
    apiserver: APIServerTimes = field(default_factory=APIServerTimes)
    kube_api_auth: KubeAPIAuthTimes = field(default_factory=KubeAPIAuthTimes)
    protocol: Protocol = field(default_factory=Protocol)
    source: str = field(default="<defaults>", compare=False)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read calibration: {e.strerror or e}") from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path.name}: invalid YAML: {getattr(e, 'problem', None) or e}") from e
        return cls.from_dict(data, source=path.name)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<calibration>") -> Calibration:
        root = Field({} if data is None else data, source=source)
        root.only("network", "server", "tunnel", "apiserver", "kube_api_auth", "protocol")
        base = cls()
        sections = {
            name: _read_section(root.get(name, {}), getattr(base, name))
            for name in ("network", "server", "tunnel", "apiserver", "kube_api_auth", "protocol")
        }
        return cls(**sections, source=source)

    def apiserver_time(self, verb: str) -> ServiceTime:
        return self.apiserver.verbs[verb]


def _read_section(node: Field, default: Any) -> Any:
    names = [f.name for f in fields(default)]
    node.only(*names)
    changes: dict[str, Any] = {}
    for name in names:
        if not node.has(name):
            continue
        value, child = getattr(default, name), node.get(name)
        if isinstance(value, ServiceTime):
            changes[name] = _read_service_time(child)
        elif isinstance(value, bool):
            changes[name] = child.boolean()
        elif isinstance(value, int):
            changes[name] = child.integer(min=0 if name.endswith(("calls", "per_cluster")) else 1)
        elif isinstance(value, float):
            may_be_zero = name.endswith(("round_trips", "per_cluster_seconds", "per_megabyte_seconds"))
            changes[name] = child.number(ge=0.0) if may_be_zero else child.number(gt=0.0)
        elif name == "verbs":
            verbs = dict(value)
            for verb, item in child.items():
                if verb not in VERBS:
                    item.fail(f"unknown verb {verb!r} (verbs: {', '.join(VERBS)})")
                verbs[verb] = _read_service_time(item)
            changes[name] = verbs
    return replace(default, **changes)


def _read_service_time(node: Field) -> ServiceTime:
    node.only("median_seconds", "sigma")
    return ServiceTime(
        median_seconds=node.get("median_seconds").number(gt=0.0),
        sigma=node.get("sigma", 0.0).number(ge=0.0, le=3.0),
    )

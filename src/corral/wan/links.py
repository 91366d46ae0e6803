"""WAN links between a scenario's regions: one toxiproxy proxy per (from-region -> endpoint).

A link carries the scenario's round-trip time as two latency toxics of RTT/2, one per direction
(toxiproxy applies a toxic to one stream), with optional jitter and bandwidth cap. Every endpoint a
region reaches gets its own proxy on that region's link, so a fault on a link (`latency`,
`partition`, a reset) hits exactly the connections a real one would: all those between its two
regions, in both directions, and nothing else.

A partition holds the data instead of dropping it (a latency toxic of an hour on both streams):
like a cut cable under TCP, the peers hear nothing, new connections hang, and what was sent is
delivered if the link heals before anyone gives up. ``mode="refuse"`` disables the proxies
instead (connections closed, new ones refused), a partition that peers notice at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from corral.errors import ConfigError
from corral.model import Fault, Scenario
from corral.model.faults import link_target
from corral.wan.toxiproxy import STREAMS, Toxic, ToxiproxyClient

logger = logging.getLogger(__name__)

HOLD_MS = 3_600_000
"""How long a partition holds data: longer than any bounded run."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
PartitionMode = Literal["hold", "refuse"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One proxy: traffic from `from_region` to `upstream` (host:port) enters at `listen`."""

    name: str
    from_region: str
    to_region: str
    upstream: str
    listen: str


class Wan:
    """The links of one scenario on one toxiproxy server; thread-safe (faults arrive from a timeline).

    `route` creates proxies as endpoints come up; `set_rtt`, `partition`, `heal`, `reset` and
    `apply`/`lift` (for the scenario's `latency` and `partition` faults) change links at run time.
    """

    def __init__(
        self,
        client: ToxiproxyClient,
        scenario: Scenario,
        *,
        jitter_ms: int = 0,
        bandwidth_kbps: int | None = None,
    ) -> None:
        if jitter_ms < 0:
            raise ConfigError(f"jitter must be >= 0 ms, got {jitter_ms}")
        if bandwidth_kbps is not None and bandwidth_kbps <= 0:
            raise ConfigError(f"bandwidth must be > 0 KB/s, got {bandwidth_kbps}")
        self.client = client
        self.scenario = scenario
        self.jitter_ms = jitter_ms
        self.bandwidth_kbps = bandwidth_kbps
        self._routes: dict[str, Route] = {}
        self._rtt: dict[str, float] = {}
        self._partitioned: dict[str, PartitionMode] = {}
        self._lock = threading.RLock()

    @classmethod
    def attach(
        cls,
        client: ToxiproxyClient,
        scenario: Scenario,
        *,
        jitter_ms: int = 0,
        bandwidth_kbps: int | None = None,
    ) -> Wan:
        """The links another process created on `client`'s server (``corral up --wan``), adopted:
        their routes, partitions and round-trip times as the server holds them, so faults applied
        here reach the connections that process routed (its agents' tunnels, its dials)."""
        wan = cls(client, scenario, jitter_ms=jitter_ms, bandwidth_kbps=bandwidth_kbps)
        for proxy in client.proxies().values():
            route = _parse_route(proxy.name, proxy.listen, proxy.upstream)
            if route is None or route.from_region not in scenario.regions:
                continue
            if route.to_region not in scenario.regions:
                continue
            link = wan.link_of(route.from_region, route.to_region)
            wan._routes[route.name] = route
            if not proxy.enabled:
                wan._partitioned[link] = "refuse"
            elif "partition-upstream" in proxy.toxics:
                wan._partitioned[link] = "hold"
            if link not in wan._rtt and "latency-upstream" in proxy.toxics:
                latency = client.toxics(proxy.name)["latency-upstream"].get("attributes", {}).get("latency")
                if isinstance(latency, int):
                    wan._rtt[link] = float(2 * latency)
        return wan

    # -- routes ------------------------------------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        with self._lock:
            return tuple(self._routes.values())

    def link_of(self, a: str, b: str) -> str:
        """The canonical name of the link between two regions (``a<->b``, scenario order)."""
        for region in (a, b):
            if region not in self.scenario.regions:
                raise ConfigError(
                    f"unknown region {region!r} (regions of {self.scenario.name}: "
                    f"{', '.join(self.scenario.regions)})"
                )
        return f"{a}<->{a}" if a == b else link_target(a, b, self.scenario.regions)

    def route(self, *, from_region: str, to_region: str, upstream: str) -> Route:
        """The proxy carrying traffic from `from_region` to `upstream` (in `to_region`), created once."""
        host, port = split_host_port(upstream)
        link = self.link_of(from_region, to_region)
        name = f"{from_region}->{to_region}:{host}:{port}"
        with self._lock:
            existing = self._routes.get(name)
            if existing is not None:
                return existing
            proxy = self.client.create_proxy(name=name, upstream=f"{host}:{port}")
            route = Route(
                name=name,
                from_region=from_region,
                to_region=to_region,
                upstream=f"{host}:{port}",
                listen=proxy.listen,
            )
            rtt = self._rtt.setdefault(link, self.scenario.rtt_ms[(from_region, to_region)])
            self._install(route, rtt_ms=rtt)
            if link in self._partitioned:
                self._cut(route, self._partitioned[link])
            self._routes[name] = route
            logger.info("link %s: %s -> %s (rtt %g ms)", link, route.listen, route.upstream, rtt)
            return route

    def url(self, *, from_region: str, to_region: str, url: str) -> str:
        """`url` rewritten to enter the link from `from_region` (scheme and path kept)."""
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        route = self.route(
            from_region=from_region,
            to_region=to_region,
            upstream=f"{parts.hostname}:{parts.port or default}",
        )
        return urlunsplit((parts.scheme, route.listen, parts.path, parts.query, parts.fragment))

    def _install(self, route: Route, *, rtt_ms: float) -> None:
        for stream in STREAMS:
            self.client.add_toxic(
                route.name,
                Toxic(
                    name=f"latency-{stream}",
                    type="latency",
                    stream=stream,
                    attributes={"latency": _one_way(rtt_ms), "jitter": self.jitter_ms},
                ),
            )
            if self.bandwidth_kbps is not None:
                self.client.add_toxic(
                    route.name,
                    Toxic(
                        name=f"bandwidth-{stream}",
                        type="bandwidth",
                        stream=stream,
                        attributes={"rate": self.bandwidth_kbps},
                    ),
                )

    def _on_link(self, a: str, b: str) -> tuple[str, list[Route]]:
        link = self.link_of(a, b)
        return link, [r for r in self._routes.values() if self.link_of(r.from_region, r.to_region) == link]

    # -- run-time changes ----------------------------------------------------------------------------

    def rtt_ms(self, a: str, b: str) -> float:
        with self._lock:
            link = self.link_of(a, b)
            return self._rtt.get(link, self.scenario.rtt_ms[(a, b)])

    def set_rtt(self, a: str, b: str, rtt_ms: float) -> None:
        """Change the round-trip time of the link between `a` and `b` (both directions, every proxy)."""
        if rtt_ms < 0:
            raise ConfigError(f"a round-trip time must be >= 0 ms, got {rtt_ms:g}")
        with self._lock:
            link, routes = self._on_link(a, b)
            self._rtt[link] = rtt_ms
            for route in routes:
                for stream in STREAMS:
                    self.client.update_toxic(
                        route.name,
                        f"latency-{stream}",
                        {"latency": _one_way(rtt_ms), "jitter": self.jitter_ms},
                    )

    def partition(self, a: str, b: str, *, mode: PartitionMode = "hold") -> None:
        """Cut the link between `a` and `b`: hold its data (silence) or refuse its connections."""
        if mode not in ("hold", "refuse"):
            raise ConfigError(f"partition mode must be hold or refuse, got {mode!r}")
        with self._lock:
            link, routes = self._on_link(a, b)
            if link in self._partitioned:
                return
            self._partitioned[link] = mode
            for route in routes:
                self._cut(route, mode)

    def _cut(self, route: Route, mode: PartitionMode) -> None:
        if mode == "refuse":
            self.client.set_enabled(route.name, enabled=False)
            return
        for stream in STREAMS:
            self.client.add_toxic(
                route.name,
                Toxic(
                    name=f"partition-{stream}", type="latency", stream=stream, attributes={"latency": HOLD_MS}
                ),
            )

    def heal(self, a: str, b: str) -> None:
        """Lift a partition: held data flows on, a refusing link accepts connections again."""
        with self._lock:
            link, routes = self._on_link(a, b)
            mode = self._partitioned.pop(link, None)
            for route in routes:
                if mode == "refuse":
                    self.client.set_enabled(route.name, enabled=True)
                elif mode == "hold":
                    for stream in STREAMS:
                        self.client.remove_toxic(route.name, f"partition-{stream}", missing_ok=True)

    def partitioned(self, a: str, b: str) -> bool:
        with self._lock:
            return self.link_of(a, b) in self._partitioned

    def reset(self, a: str, b: str, *, after_ms: int = 0) -> None:
        """Reset (TCP RST) the connections crossing the link when they next carry data, until `unreset`."""
        with self._lock:
            _, routes = self._on_link(a, b)
            for route in routes:
                for stream in STREAMS:
                    self.client.add_toxic(
                        route.name,
                        Toxic(
                            name=f"reset-{stream}",
                            type="reset_peer",
                            stream=stream,
                            attributes={"timeout": after_ms},
                        ),
                    )

    def unreset(self, a: str, b: str) -> None:
        with self._lock:
            _, routes = self._on_link(a, b)
            for route in routes:
                for stream in STREAMS:
                    self.client.remove_toxic(route.name, f"reset-{stream}", missing_ok=True)

    # -- the scenario's link faults ------------------------------------------------------------------

    def handles(self, fault: Fault) -> bool:
        return fault.kind in ("latency", "partition")

    def apply(self, fault: Fault) -> None:
        """Apply a `latency` or `partition` fault of the scenario."""
        a, b = fault.link
        if fault.kind == "latency":
            if fault.rtt_ms is None:
                raise ConfigError(f"latency fault on {fault.target} has no rtt_ms")
            self.set_rtt(a, b, fault.rtt_ms)
        elif fault.kind == "partition":
            self.partition(a, b)
        else:
            raise ConfigError(f"a WAN link cannot apply a {fault.kind} fault (only latency and partition)")

    def lift(self, fault: Fault) -> None:
        """Undo `apply`: the scenario's RTT again, or the link healed."""
        a, b = fault.link
        if fault.kind == "latency":
            self.set_rtt(a, b, self.scenario.rtt_ms[(a, b)])
        elif fault.kind == "partition":
            self.heal(a, b)
        else:
            raise ConfigError(f"a WAN link cannot lift a {fault.kind} fault (only latency and partition)")


def _parse_route(name: str, listen: str, upstream: str) -> Route | None:
    """The route a proxy named ``<from>-><to>:<host>:<port>`` (as `Wan.route` names them) carries."""
    regions, sep, target = name.partition(":")
    from_region, arrow, to_region = regions.partition("->")
    if not (sep and arrow and from_region and to_region) or target != upstream:
        return None
    return Route(name=name, from_region=from_region, to_region=to_region, upstream=upstream, listen=listen)


def _one_way(rtt_ms: float) -> int:
    return round(rtt_ms / 2)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` of a loopback endpoint; anything else is refused (load stays on this machine)."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected host:port, got {address!r}")
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(f"{address!r} is not on loopback: WAN links relay traffic on this machine only")
    return ("127.0.0.1" if host == "localhost" else host), int(port)

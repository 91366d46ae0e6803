"""The WAN between regions: round-trip times, latency faults, partitions and link bandwidth.

Latency faults override a link's RTT for a while; partitions drop everything on a link. Parts
that hold long-lived connections across a link (tunnel sessions) subscribe to changes with
`on_change`, so a partition reaches them at the moment it starts and ends; `on_any_change` hears
of every change of a link (latency too), for parts that wait for conditions to change.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.model import Scenario


class Network:
    """Region-to-region links of one scenario."""

    def __init__(self, scenario: Scenario, *, bandwidth_mbps: float) -> None:
        self._base = {pair: ms / 1000.0 for pair, ms in scenario.rtt_ms.items()}
        self._rtt: dict[str, dict[str, float]] = {}
        """From region -> to region -> current RTT (two lookups, no key tuple per call)."""
        for (a, b), seconds in self._base.items():
            self._rtt.setdefault(a, {})[b] = seconds
        self._cut: set[tuple[str, str]] = set()
        self.bits_per_second = bandwidth_mbps * 1e6
        self._listeners: list[Callable[[str, str, bool], None]] = []
        self._any_listeners: list[Callable[[], None]] = []

    def rtt(self, a: str, b: str) -> float:
        """Current round-trip time between two regions, in seconds."""
        return self._rtt[a][b]

    def reachable(self, a: str, b: str) -> bool:
        return not self._cut or (a, b) not in self._cut

    def transfer_seconds(self, size_bytes: int) -> float:
        return size_bytes * 8.0 / self.bits_per_second

    # -- faults ---------------------------------------------------------------------------------

    def set_rtt(self, a: str, b: str, seconds: float | None) -> None:
        """Override a link's RTT (``None`` restores the scenario's value)."""
        for pair in ((a, b), (b, a)):
            self._rtt[pair[0]][pair[1]] = self._base[pair] if seconds is None else seconds
        for any_listener in self._any_listeners:
            any_listener()

    def set_partitioned(self, a: str, b: str, cut: bool) -> None:
        for pair in ((a, b), (b, a)):
            if cut:
                self._cut.add(pair)
            else:
                self._cut.discard(pair)
        for listener in self._listeners:
            listener(a, b, cut)
        for any_listener in self._any_listeners:
            any_listener()

    def on_change(self, listener: Callable[[str, str, bool], None]) -> None:
        """Call ``listener(a, b, cut)`` whenever a link is cut or healed."""
        self._listeners.append(listener)

    def on_any_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after any link is cut, healed, slowed down or restored."""
        self._any_listeners.append(listener)

"""A toxiproxy server on loopback and a small client of its HTTP API (proxies and their toxics).

corral's WAN links are toxiproxy proxies: TCP relays whose toxics add latency, jitter, a bandwidth
cap, or cut and reset the connections crossing them. The server is the binary `corral build --all`
builds (``toxiproxy-server``); the client speaks its JSON API with the standard library, so the
links can be driven from any process, synchronous or not, without another dependency.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.controlplane.processes import ProcessGroup, free_port, tail
from corral.errors import CorralError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STREAMS = ("upstream", "downstream")
"""toxiproxy applies each toxic to one direction: upstream is client -> target, downstream the answers."""


class ToxiproxyError(CorralError):
    """The toxiproxy server did not start, or refused an API call (the message says which and why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Toxic:
    """One toxic of a proxy: its type (latency, bandwidth, timeout, reset_peer, ...) on one stream."""

    name: str
    type: str
    stream: str = "downstream"
    attributes: Mapping[str, int] = field(default_factory=dict)
    toxicity: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """A proxy as the server reports it: ``listen`` is the address it really bound."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[str, ...] = ()

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ToxiproxyClient:
    """The toxiproxy HTTP API at ``host:port`` (every call bounded by `timeout_seconds`)."""

    def __init__(self, *, host: str = LOOPBACK, port: int, timeout_seconds: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout_seconds = timeout_seconds

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_seconds)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as e:
            raise ToxiproxyError(f"toxiproxy at {self.host}:{self.port}: {method} {path}: {e}") from e
        finally:
            connection.close()
        if response.status >= 300:
            try:
                message = json.loads(data).get("error", "")
            except (ValueError, AttributeError):
                message = data[:200].decode("utf-8", "replace")
            raise ToxiproxyError(f"toxiproxy: {method} {path}: {response.status} {message}".rstrip())
        return json.loads(data) if data.strip() else None

    def version(self) -> str:
        return str(self._call("GET", "/version").get("version", ""))

    def create_proxy(self, *, name: str, upstream: str, listen: str = f"{LOOPBACK}:0") -> Proxy:
        """Create a proxy; with port 0 the server picks a free port and reports it."""
        return _proxy(self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream}))

    def proxies(self) -> dict[str, Proxy]:
        return {name: _proxy(data) for name, data in self._call("GET", "/proxies").items()}

    def toxics(self, proxy: str) -> dict[str, dict[str, Any]]:
        """The toxics of a proxy by name: type, stream and attributes as the server holds them."""
        return {str(t["name"]): dict(t) for t in self._call("GET", f"/proxies/{proxy}/toxics") or ()}

    def set_enabled(self, name: str, *, enabled: bool) -> None:
        """Disabling a proxy closes its connections and its listener (clients are refused); enabling
        listens again on the same address."""
        self._call("PATCH", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, toxic: Toxic) -> None:
        self._call("POST", f"/proxies/{proxy}/toxics", toxic.to_json())

    def update_toxic(self, proxy: str, toxic: str, attributes: Mapping[str, int]) -> None:
        self._call("PATCH", f"/proxies/{proxy}/toxics/{toxic}", {"attributes": dict(attributes)})

    def remove_toxic(self, proxy: str, toxic: str, *, missing_ok: bool = False) -> None:
        try:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")
        except ToxiproxyError as e:
            if not (missing_ok and " 404 " in f"{e} "):
                raise

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")


def _proxy(data: Mapping[str, Any]) -> Proxy:
    return Proxy(
        name=str(data["name"]),
        listen=str(data["listen"]),
        upstream=str(data["upstream"]),
        enabled=bool(data["enabled"]),
        toxics=tuple(str(t["name"]) for t in data.get("toxics") or ()),
    )


def start_in_group(
    group: ProcessGroup, binary: Path, *, name: str = "toxiproxy", ready_timeout_seconds: float = 10.0
) -> ToxiproxyClient:
    """Start ``toxiproxy-server`` as `name` of `group` (role ``toxiproxy``) on a free loopback port and
    wait until its API answers; the group stops it with the rest of its processes."""
    port = free_port()
    group.start(name, [str(binary), "-host", LOOPBACK, "-port", str(port)], role="toxiproxy")
    client = ToxiproxyClient(port=port, timeout_seconds=2.0)
    deadline = time.monotonic() + ready_timeout_seconds
    while True:
        group.check_alive(name)
        try:
            client.version()
            break
        except ToxiproxyError:
            if time.monotonic() > deadline:
                log = group.log_path(name)
                raise ToxiproxyError(
                    f"toxiproxy did not answer on {LOOPBACK}:{port} within "
                    f"{ready_timeout_seconds:g} s; last lines of {log}:\n{tail(log)}"
                ) from None
            time.sleep(0.05)
    logger.info("toxiproxy serving its API on %s:%d", LOOPBACK, port)
    return ToxiproxyClient(port=port)


class ToxiproxyServer:
    """A ``toxiproxy-server`` process on 127.0.0.1, its log in ``<run_dir>/logs/toxiproxy.log``.

    Use as a context manager: the process is stopped (SIGTERM, then SIGKILL) on exit, and it dies
    with this process if that one is killed.
    """

    def __init__(self, binary: Path, run_dir: Path, *, ready_timeout_seconds: float = 10.0) -> None:
        self.binary = binary
        self.run_dir = run_dir
        self.ready_timeout_seconds = ready_timeout_seconds
        self._group: ProcessGroup | None = None
        self.client: ToxiproxyClient | None = None

    @property
    def pid(self) -> int | None:
        records = self._group.records if self._group else ()
        return records[0].pid if records else None

    def start(self) -> ToxiproxyClient:
        if self._group is not None:
            raise ToxiproxyError("this toxiproxy server is already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._group = ProcessGroup(self.run_dir)
        try:
            self.client = start_in_group(
                self._group, self.binary, ready_timeout_seconds=self.ready_timeout_seconds
            )
        except ToxiproxyError:
            self.stop()
            raise
        return self.client

    def stop(self) -> None:
        if self._group is not None:
            self._group.stop(timeout_seconds=5.0)
            self._group = None
            self.client = None

    def __enter__(self) -> ToxiproxyClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

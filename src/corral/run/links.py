"""``corral up --wan``: the topology's own connections over toxiproxy links between its regions.

With links, every connection of the topology crosses the link a real deployment's would: each
agent dials the server from its cluster's region (the tunnel), the server dials a cluster's
kube-apiserver from its own region (the direct dial), and each user's kubeconfig reaches the server
(proxy) and the clusters (ACE) from the user's region. The toxiproxy server is one of the run's
processes; ``topology.json`` names its API and links (``wan``) so that load runs adopt the same links
and the timeline's faults hurt the tunnels too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from corral.controlplane.processes import ProcessGroup
from corral.errors import ConfigError
from corral.k8s.kubeconfig import write_private
from corral.model import Scenario
from corral.wan import ToxiproxyClient, Wan, split_host_port, start_in_group

logger = logging.getLogger(__name__)

__all__ = ["WAN_KEY", "UpLinks", "attach_links", "start_links"]

WAN_KEY: Final = "wan"
"""The key of topology.json that describes the links (absent without ``--wan``)."""


@dataclass(slots=True, kw_only=True)
class UpLinks:
    """The links of one ``corral up`` run and what each carries (for topology.json)."""

    wan: Wan
    api: str
    """``host:port`` of the toxiproxy API."""
    carries: dict[str, list[str]] = field(default_factory=dict)
    """route name -> what crosses it (``tunnel <cluster>``, ``dial <cluster>``, ``user <name>``)."""

    def _url(self, *, from_region: str, to_region: str, url: str, what: str) -> str:
        routed = self.wan.url(from_region=from_region, to_region=to_region, url=url)
        parts = urlsplit(url)
        name = f"{from_region}->{to_region}:{_address(parts.hostname or '', parts.port, parts.scheme)}"
        self.carries.setdefault(name, [])
        if what not in self.carries[name]:
            self.carries[name].append(what)
        return routed

    def agent_server(self, scenario: Scenario, cluster: str, server_url: str) -> str:
        """The server's URL as the agents of `cluster` dial it: from the cluster's region."""
        return self._url(
            from_region=_cluster_region(scenario, cluster),
            to_region=scenario.server.region,
            url=server_url,
            what=f"tunnel {cluster}",
        )

    def dial_address(self, scenario: Scenario, cluster: str, api_server: str) -> str:
        """The cluster's kube-apiserver as the server dials it directly: from the server's region."""
        return self._url(
            from_region=scenario.server.region,
            to_region=_cluster_region(scenario, cluster),
            url=api_server,
            what=f"dial {cluster}",
        )

    def route_users(self, scenario: Scenario, document: MutableMapping[str, Any]) -> None:
        """Rewrite each user's kubeconfig so that it enters the links from the user's region, then
        describe the links in `document` (topology.json's ``wan``)."""
        regions = {u.name: u.region for u in scenario.users}
        targets: dict[str, str] = {}  # host:port -> region it lives in
        server = document.get("server") or {}
        for url in [server.get("url"), *(server.get("urls") or ())]:
            if url:
                targets[_host_port(str(url))] = scenario.server.region
        for name, entry in (document.get("clusters") or {}).items():
            region = _cluster_region(scenario, name)
            for url in [entry.get("api_server"), *(entry.get("ace_endpoints") or ())]:
                if url:
                    targets.setdefault(_host_port(str(url)), region)
        for name, user in (document.get("users") or {}).items():
            if name not in regions:
                raise ConfigError(f"user {name!r} is not in scenario {scenario.name!r}")
            self._route_kubeconfig(Path(user["kubeconfig"]), name, regions[name], targets)
        document[WAN_KEY] = self.describe()

    def _route_kubeconfig(self, path: Path, user: str, region: str, targets: Mapping[str, str]) -> None:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in config.get("clusters") or ():
            cluster = item.get("cluster") or {}
            url = cluster.get("server")
            if not url or _host_port(str(url)) not in targets:
                continue
            cluster["server"] = self._url(
                from_region=region, to_region=targets[_host_port(str(url))], url=str(url), what=f"user {user}"
            )
        write_private(path, yaml.safe_dump(config, sort_keys=False).encode())

    def describe(self) -> dict[str, Any]:
        return {
            "toxiproxy": self.api,
            "links": [
                {
                    "name": r.name,
                    "link": self.wan.link_of(r.from_region, r.to_region),
                    "from_region": r.from_region,
                    "to_region": r.to_region,
                    "upstream": r.upstream,
                    "listen": r.listen,
                    "carries": list(self.carries.get(r.name, ())),
                }
                for r in self.wan.routes
            ],
        }


def start_links(group: ProcessGroup, scenario: Scenario, binary: Path) -> UpLinks:
    """A toxiproxy server among `group`'s processes and an empty set of links on it."""
    client = start_in_group(group, binary)
    return UpLinks(wan=Wan(client, scenario), api=f"{client.host}:{client.port}")


def attach_links(
    topology: Mapping[str, Any], scenario: Scenario, *, jitter_ms: int = 0, bandwidth_kbps: int | None = None
) -> Wan | None:
    """The links a ``corral up --wan`` topology runs on (None without), adopted from its toxiproxy."""
    section = topology.get(WAN_KEY)
    if not section:
        return None
    if not isinstance(section, Mapping) or not isinstance(section.get("toxiproxy"), str):
        raise ConfigError("topology: wan.toxiproxy must be the host:port of the links' toxiproxy API")
    host, port = split_host_port(str(section["toxiproxy"]))
    client = ToxiproxyClient(host=host, port=port)
    return Wan.attach(client, scenario, jitter_ms=jitter_ms, bandwidth_kbps=bandwidth_kbps)


def _cluster_region(scenario: Scenario, cluster: str) -> str:
    for item in scenario.clusters:
        if item.name == cluster:
            return item.region
    raise ConfigError(f"cluster {cluster!r} is not in scenario {scenario.name!r}")


def _address(host: str, port: int | None, scheme: str) -> str:
    host = "127.0.0.1" if host == "localhost" else host
    return f"{host}:{port or (443 if scheme == 'https' else 80)}"


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return _address(parts.hostname or "", parts.port, parts.scheme)

"""Where each party of a topology connects once WAN links are in place: every URL through its link.

Paths cross the links a real deployment's would: a proxy request goes user -> server (the user's
region to the server's) and server -> cluster (over the agent's tunnel, dialled from the cluster's
region to the server's, or a direct dial from the server's region to the cluster's); ACE and direct
requests go user -> cluster. Input is a topology.json document (or the same shape built by hand),
output the rewritten URLs, keyed by the scenario's user and cluster names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.errors import ConfigError
from corral.model import Scenario
from corral.wan.links import Wan


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    """Rewritten URLs of one topology."""

    server_for_user: Mapping[str, str] = field(default_factory=dict)
    """user -> the server's URL from the user's region (proxy path, v3 API)."""
    apiserver_for_user: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(user, cluster) -> the cluster's kube-apiserver from the user's region (direct path)."""
    ace_for_user: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    """(user, cluster) -> the cluster's ACE endpoints from the user's region."""
    server_for_cluster: Mapping[str, str] = field(default_factory=dict)
    """cluster -> the server's URL from the cluster's region (the agents' tunnel, their --server)."""
    apiserver_for_server: Mapping[str, str] = field(default_factory=dict)
    """cluster -> its kube-apiserver from the server's region (the server's direct dial)."""


def rewrite(wan: Wan, scenario: Scenario, topology: Mapping[str, Any]) -> Endpoints:
    """Route every endpoint of `topology` through `wan`; users and clusters the scenario lacks are refused."""
    regions_of_users = {user.name: user.region for user in scenario.users}
    regions_of_clusters = {cluster.name: cluster.region for cluster in scenario.clusters}
    clusters = _section(topology, "clusters")
    users = _section(topology, "users", required=False)
    server = topology.get("server")
    server_region = scenario.server.region
    for name in clusters:
        if name not in regions_of_clusters:
            raise ConfigError(f"topology: cluster {name!r} is not in scenario {scenario.name!r}")
    for name in users:
        if name not in regions_of_users:
            raise ConfigError(f"topology: user {name!r} is not in scenario {scenario.name!r}")
    # Users the topology lacks (a cluster-only run folder) still reach clusters directly.
    user_names = list(users) or list(regions_of_users)
    server_url = str(server["url"]) if isinstance(server, Mapping) and server.get("url") else None

    server_for_user, apiserver_for_user, ace_for_user = {}, {}, {}
    server_for_cluster, apiserver_for_server = {}, {}
    for user in user_names:
        region = regions_of_users[user]
        if server_url is not None:
            server_for_user[user] = wan.url(from_region=region, to_region=server_region, url=server_url)
        for cluster, entry in clusters.items():
            target = regions_of_clusters[cluster]
            apiserver_for_user[(user, cluster)] = wan.url(
                from_region=region, to_region=target, url=_string(entry, "api_server", cluster)
            )
            ace = entry.get("ace_endpoints") or ()
            ace_for_user[(user, cluster)] = tuple(
                wan.url(from_region=region, to_region=target, url=str(url)) for url in ace
            )
    for cluster, entry in clusters.items():
        region = regions_of_clusters[cluster]
        if server_url is not None:
            server_for_cluster[cluster] = wan.url(from_region=region, to_region=server_region, url=server_url)
        apiserver_for_server[cluster] = wan.url(
            from_region=server_region, to_region=region, url=_string(entry, "api_server", cluster)
        )
    return Endpoints(
        server_for_user=server_for_user,
        apiserver_for_user=apiserver_for_user,
        ace_for_user=ace_for_user,
        server_for_cluster=server_for_cluster,
        apiserver_for_server=apiserver_for_server,
    )


def _section(topology: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = topology.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"topology: {key} must be a mapping keyed by the scenario's names")
    return value


def _string(entry: Any, key: str, cluster: str) -> str:
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"topology: clusters.{cluster}.{key} must be a URL")
    return value

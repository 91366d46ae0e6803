"""The extra kubeconfig contexts of the Authorized Cluster Endpoint, as Rancher's generator adds them.

Given a generated kubeconfig (an entry ``<cluster>`` through the server, a user named after the
cluster holding the cluster-scoped token), `add_ace_contexts` adds either one ``<cluster>-fqdn`` entry
(``https://<fqdn>``, CA from the FQDN's CA certificates) when the cluster has an ACE FQDN, or one
``<cluster>-<node>`` entry per control-plane node (the node's apiserver, CA = the cluster's CA).
Every new context uses the cluster's existing user. A pure function: no file, no network.
"""

from __future__ import annotations

import base64
import copy
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["ControlPlaneEndpoint", "add_ace_contexts", "node_context_name"]

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlPlaneEndpoint:
    """One control-plane node's apiserver: the node's requested hostname and its ``https://`` URL."""

    node: str
    server: str
    """``https://<ExternalIP, else InternalIP>:6443`` in Rancher; here whatever the node serves on."""


def node_context_name(cluster_name: str, node: str) -> str:
    """``<cluster>-<node>``, the node's name without a leading ``<cluster>-`` (Rancher trims it once)."""
    return f"{cluster_name}-{node.removeprefix(cluster_name + '-')}"


def add_ace_contexts(
    kubeconfig: Mapping[str, Any],
    *,
    cluster_name: str,
    cluster_ca_pem: bytes | None = None,
    nodes: Iterable[ControlPlaneEndpoint] = (),
    fqdn: str = "",
    fqdn_ca_pem: bytes | None = None,
    switch_to_fqdn: bool = False,
) -> dict[str, Any]:
    """A copy of ``kubeconfig`` with the ACE entries of ``cluster_name`` added.

    With ``fqdn`` set the node entries are not written (Rancher uses them only without an FQDN).
    ``switch_to_fqdn`` makes ``<cluster>-fqdn`` the current context, as the ext Kubeconfig API does;
    the legacy action keeps ``<cluster>``. A CA is written only when given. `ConfigError` when the
    cluster's user is missing, an endpoint is not ``https://``, or a name would be taken twice.
    """
    document = copy.deepcopy(dict(kubeconfig))
    users = {u.get("name") for u in document.get("users") or [] if isinstance(u, Mapping)}
    if cluster_name not in users:
        raise ConfigError(f"kubeconfig has no user {cluster_name!r} to share with the ACE contexts")
    entries: list[tuple[str, str, bytes | None]] = []
    if fqdn:
        if not _HOST.fullmatch(fqdn):
            raise ConfigError(f"ACE fqdn {fqdn!r} must be a host name, optionally with :port")
        entries.append((f"{cluster_name}-fqdn", f"https://{fqdn}", fqdn_ca_pem))
    else:
        for endpoint in nodes:
            if not endpoint.node:
                raise ConfigError(f"a control-plane node of {cluster_name!r} has no name")
            url = urllib.parse.urlsplit(endpoint.server)
            if url.scheme != "https" or not url.hostname:
                raise ConfigError(
                    f"control-plane node {endpoint.node!r}: {endpoint.server!r} is no https URL"
                )
            entries.append((node_context_name(cluster_name, endpoint.node), endpoint.server, cluster_ca_pem))
    clusters = document.setdefault("clusters", [])
    contexts = document.setdefault("contexts", [])
    taken = {c.get("name") for c in clusters} | {c.get("name") for c in contexts}
    for name, server, ca_pem in entries:
        if name in taken:
            raise ConfigError(f"kubeconfig already has a cluster or context named {name!r}")
        taken.add(name)
        cluster: dict[str, Any] = {"server": server}
        if ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode("ascii")
        clusters.append({"name": name, "cluster": cluster})
        contexts.append({"name": name, "context": {"cluster": name, "user": cluster_name}})
    if fqdn and switch_to_fqdn:
        document["current-context"] = f"{cluster_name}-fqdn"
    return document

"""The kubeconfig that ``generateKubeconfig`` returns, rendered as Rancher's token template renders it.

One cluster entry ``https://<host>/k8s/clusters/<id>`` named by the cluster's display name, the
``cacerts`` setting base64-encoded and folded with ``\\`` continuations (49 characters, then lines of
up to 76), one user with the token, one context (``pkg/kubeconfig``); with ACE on, the cluster's
``-fqdn`` or per-control-plane-node entries after it, sharing that user. Pure text: the v3 API and
``corral kubeconfig`` both call it.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from corral.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "ACE_ENDPOINTS_ANNOTATION",
    "ACE_NODE_PORT",
    "AceEndpointsError",
    "AceEntry",
    "ace_entries",
    "format_cert_string",
    "kubeconfig_host",
    "token_kubeconfig",
    "wants_nodes",
]

ACE_ENDPOINTS_ANNOTATION: Final = "ace.corral.io/control-plane-endpoints"
"""On a management Cluster: JSON ``[{"node": <name>, "server": "https://host:port"}, ...]``, the
apiserver of each control-plane node in order. corral's apiservers listen on loopback with a port
each, so ``corral up`` writes it; Rancher would use the node's address and port 6443 instead."""
ACE_NODE_PORT: Final = 6443
EXTERNAL_ADDRESS_ANNOTATION: Final = "rke.cattle.io/external-ip"

_FIRST: Final = 49
_LINE: Final = 76
_DELIMITER: Final = "\\\n      "


def format_cert_string(data: str) -> str:
    """Rancher's FormatCertString: 49 characters, then runs of up to 76, joined by ``\\`` and a newline."""
    if len(data) <= _FIRST:
        return data
    head, rest = data[:_FIRST], data[_FIRST:]
    runs = [run for word in rest.split() for run in (word[i : i + _LINE] for i in range(0, len(word), _LINE))]
    return head + "".join(_DELIMITER + run for run in runs)


def kubeconfig_host(server_url: str, request_host: str) -> str:
    """The host of the ``server-url`` setting, or the request's Host when the setting is empty or bad."""
    if not server_url:
        return request_host
    parsed = urllib.parse.urlsplit(server_url)
    return parsed.netloc or request_host


class AceEndpointsError(ConfigError):
    """A Cluster's ACE endpoints annotation is not the list of https URLs it must be."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AceEntry:
    """One extra cluster and context of an ACE kubeconfig; ``cert`` is folded base64 or empty."""

    name: str
    server: str
    cert: str = ""


def _b64_folded(pem: str) -> str:
    return format_cert_string(base64.b64encode(pem.encode()).decode()) if pem else ""


def _https(server: object, *, what: str) -> str:
    url = urllib.parse.urlsplit(server) if isinstance(server, str) else None
    if url is None or url.scheme != "https" or not url.hostname or url.path not in ("", "/"):
        raise AceEndpointsError(f"{what}: {server!r} is no https://host[:port] URL")
    return str(server)


def _annotated(cluster: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(node, server) pairs of the ACE endpoints annotation, or None when the annotation is absent."""
    text = ((cluster.get("metadata") or {}).get("annotations") or {}).get(ACE_ENDPOINTS_ANNOTATION)
    if text is None:
        return None
    what = f"annotation {ACE_ENDPOINTS_ANNOTATION} of cluster {(cluster.get('metadata') or {}).get('name')}"
    try:
        items = json.loads(text)
    except (TypeError, ValueError):
        raise AceEndpointsError(f"{what} is not JSON") from None
    if not isinstance(items, list):
        raise AceEndpointsError(f"{what} must be a list of {{node, server}}")
    out: list[tuple[str, str]] = []
    for item in items:
        node = item.get("node") if isinstance(item, dict) else None
        if not isinstance(node, str) or not node:
            raise AceEndpointsError(f"{what}: an entry has no node name")
        out.append((node, _https(item.get("server"), what=f"{what}, node {node!r}")))
    return out


def _node_address(node: Mapping[str, Any]) -> str:
    """Rancher's GetEndpointNodeIP: the first ExternalIP, else the external-ip node annotation, else
    the last InternalIP."""
    status = node.get("status") or {}
    external = internal = ""
    for address in (status.get("internalNodeStatus") or {}).get("addresses") or ():
        kind, value = address.get("type"), str(address.get("address") or "")
        if kind == "ExternalIP" and value:
            external = value
            break
        if kind == "InternalIP" and value:
            internal = value
    return (
        external
        or str((status.get("nodeAnnotations") or {}).get(EXTERNAL_ADDRESS_ANNOTATION) or "")
        or internal
    )


def _from_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(requestedHostname, ``https://<address>:6443``) of each control-plane management Node."""
    out: list[tuple[str, str]] = []
    for node in nodes:
        spec = node.get("spec") or {}
        if spec.get("controlPlane") is not True:
            continue
        host = str(spec.get("requestedHostname") or "")
        address = _node_address(node)
        if not address:
            logger.warning("control-plane node %s has no address: no ACE entry for it", host)
            continue
        address = f"[{address}]" if ":" in address else address
        out.append((host, f"https://{address}:{ACE_NODE_PORT}"))
    return out


def wants_nodes(cluster: Mapping[str, Any]) -> bool:
    """Whether `ace_entries` of ``cluster`` would read management Node objects (ACE on, no FQDN, no
    endpoints annotation), so a caller lists them only then."""
    endpoint = (cluster.get("spec") or {}).get("localClusterAuthEndpoint") or {}
    annotations = (cluster.get("metadata") or {}).get("annotations") or {}
    return (
        isinstance(endpoint, Mapping)
        and endpoint.get("enabled") is True
        and not endpoint.get("fqdn")
        and ACE_ENDPOINTS_ANNOTATION not in annotations
    )


def ace_entries(cluster: Mapping[str, Any], *, nodes: Iterable[Mapping[str, Any]] = ()) -> list[AceEntry]:
    """The ACE entries Rancher's legacy action adds for ``cluster`` (none unless
    ``spec.localClusterAuthEndpoint.enabled``).

    With ``fqdn``: ``<name>-fqdn`` at ``https://<fqdn>``, CA base64(``caCerts``). Otherwise one entry per
    control-plane node, ``<name>-<node without a leading "<name>-">``, CA ``status.caCert`` (already
    base64): the nodes of the `ACE_ENDPOINTS_ANNOTATION` when the cluster has it, else the
    control-plane ones of ``nodes`` (management Node objects) at their address and port 6443.
    """
    endpoint = (cluster.get("spec") or {}).get("localClusterAuthEndpoint") or {}
    if not isinstance(endpoint, Mapping) or endpoint.get("enabled") is not True:
        return []
    name = str((cluster.get("spec") or {}).get("displayName") or (cluster.get("metadata") or {}).get("name"))
    fqdn = str(endpoint.get("fqdn") or "")
    if fqdn:
        return [
            AceEntry(
                name=f"{name}-fqdn",
                server=f"https://{fqdn}",
                cert=_b64_folded(str(endpoint.get("caCerts") or "")),
            )
        ]
    ca = format_cert_string(str((cluster.get("status") or {}).get("caCert") or ""))
    pairs = _annotated(cluster)
    if pairs is None:
        pairs = _from_nodes(nodes)
    return [
        AceEntry(name=f"{name}-{node.removeprefix(name + '-')}", server=server, cert=ca)
        for node, server in pairs
    ]


def token_kubeconfig(
    *, cluster_name: str, cluster_id: str, host: str, token: str, cacerts: str, ace: Sequence[AceEntry] = ()
) -> str:
    """The kubeconfig of Rancher's ``tokenTemplateText`` for one cluster, its ACE entries and a token user."""
    name = cluster_name or cluster_id
    entries = [
        AceEntry(name=name, server=f"https://{host}/k8s/clusters/{cluster_id}", cert=_b64_folded(cacerts))
    ]
    entries += ace
    lines = ["apiVersion: v1", "kind: Config", "clusters:"]
    for entry in entries:
        lines += [f'- name: "{entry.name}"', "  cluster:", f'    server: "{entry.server}"']
        if entry.cert:
            lines.append(f'    certificate-authority-data: "{entry.cert}"')
    lines += [
        "",
        "users:",
        f'- name: "{name}"',
        "  user:",
        f'    token: "{token}"',
        "",
        "",
        "contexts:",
    ]
    for entry in entries:
        lines += [
            f'- name: "{entry.name}"',
            "  context:",
            f'    user: "{name}"',
            f'    cluster: "{entry.name}"',
        ]
    lines += ["", f'current-context: "{name}"', ""]
    return "\n".join(lines)

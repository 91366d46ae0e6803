"""The ``rancher`` target: a real Rancher, given its URL, an admin token and its clusters' admin kubeconfigs.

Users, tokens and bindings are made through Rancher's v3 API and removed afterwards; with
``--corral-read-only`` nothing is made at all, and the tests that would need to are deselected. The
Rancher version (``/v3/settings/server-version``, or ``--rancher-version``) decides which requirements
hold. The token comes from a file or the environment, never from the command line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conformance.targets.base import Capability, ClusterAccess, ServerAccess, Target
from conformance.targets.v3 import V3Client
from corral.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_URL = "CORRAL_RANCHER_URL"
ENV_TOKEN = "CORRAL_RANCHER_TOKEN"
ENV_TOKEN_FILE = "CORRAL_RANCHER_TOKEN_FILE"
ENV_CA = "CORRAL_RANCHER_CA"
ENV_CLUSTERS = "CORRAL_RANCHER_CLUSTERS"
"""``name=kubeconfig`` pairs separated by commas, as ``--rancher-cluster`` takes them one by one."""

#: RKE1 (and so node agents) left Rancher in this version.
NO_NODE_AGENTS_FROM = (2, 12, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RancherSettings:
    url: str
    token: str = field(repr=False)
    ca_file: str | None
    clusters: Mapping[str, Path]
    read_only: bool
    version: str | None


def settings_from(
    *,
    url: str | None,
    token_file: str | None,
    ca_file: str | None,
    clusters: Sequence[str],
    read_only: bool,
    version: str | None,
    environ: Mapping[str, str] = os.environ,
) -> RancherSettings:
    """Settings from options and ``CORRAL_RANCHER_*``; a `ConfigError` names what is missing."""
    url = url or environ.get(ENV_URL)
    if not url:
        raise ConfigError(f"the rancher target needs the server's URL: --rancher-url or {ENV_URL}")
    if not url.startswith("https://"):
        raise ConfigError(f"--rancher-url must be an https URL, got {url!r}")
    token_file = token_file or environ.get(ENV_TOKEN_FILE)
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"--rancher-token-file {token_file}: {e.strerror}") from e
    else:
        token = environ.get(ENV_TOKEN, "")
    if not token:
        raise ConfigError(
            f"the rancher target needs an admin token: --rancher-token-file, {ENV_TOKEN_FILE} or {ENV_TOKEN}"
        )
    pairs = list(clusters) or [p for p in environ.get(ENV_CLUSTERS, "").split(",") if p.strip()]
    kubeconfigs: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--rancher-cluster takes NAME=KUBECONFIG, got {pair!r}")
        if not Path(path.strip()).is_file():
            raise ConfigError(f"--rancher-cluster {name.strip()}: no kubeconfig at {path.strip()}")
        kubeconfigs[name.strip()] = Path(path.strip())
    if not kubeconfigs:
        raise ConfigError(
            "the rancher target needs at least one downstream cluster: "
            f"--rancher-cluster NAME=KUBECONFIG or {ENV_CLUSTERS}"
        )
    return RancherSettings(
        url=url.rstrip("/"),
        token=token,
        ca_file=ca_file or environ.get(ENV_CA) or None,
        clusters=kubeconfigs,
        read_only=read_only,
        version=version,
    )


def rancher_target(settings: RancherSettings, *, api: V3Client | None = None) -> Target:
    """Ask the server for its version and the clusters' ids; the target with its capabilities."""
    api = api or V3Client(url=settings.url, token=settings.token, ca_file=settings.ca_file, read_only=True)
    version = settings.version or api.server_version()
    listed = api.clusters()
    clusters: dict[str, ClusterAccess] = {}
    capabilities: set[Capability] = set() if settings.read_only else {Capability.WRITE}
    for name, kubeconfig in settings.clusters.items():
        found = [c for c in listed if name in (c.get("id"), c.get("name"))]
        if len(found) != 1:
            known = ", ".join(sorted(f"{c.get('name')} ({c.get('id')})" for c in listed)) or "none"
            raise ConfigError(
                f"--rancher-cluster {name}: Rancher has no one cluster of that name or id (it has: {known})"
            )
        entry = found[0]
        clusters[name] = ClusterAccess(name=name, id=str(entry["id"]), admin_kubeconfig=kubeconfig)
        if (entry.get("localClusterAuthEndpoint") or {}).get("enabled"):
            capabilities.add(Capability.ACE)
        if entry.get("driver") == "rancherKubernetesEngine" and _before(version, NO_NODE_AGENTS_FROM):
            capabilities.add(Capability.NODE_AGENTS)
    return Target(
        name="rancher",
        server=ServerAccess(url=settings.url, ca_file=settings.ca_file, admin_token=settings.token),
        clusters=clusters,
        capabilities=frozenset(capabilities),
        rancher_version=version,
    )


def _before(version: str | None, bound: tuple[int, int, int]) -> bool:
    from corral.report.catalogue import parse_version

    return version is not None and parse_version(version) < bound

"""What every provider hands back: running clusters, the set of one scenario, and the provider protocol.

A `ClusterHandle` names one cluster, its server URL, CA and admin kubeconfig path, and a way to get
credentials for any user and groups (client certificates where the provider holds the client CA,
impersonation by the admin otherwise). Providers, the CLI and the test fixtures share these types;
which provider runs is decided in `corral.controlplane.providers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from corral.errors import ConfigError
from corral.k8s import KubeClient, KubeConfig
from corral.model import Scenario

Progress = Callable[[str], None]
"""Called with one human-readable line per bring-up step."""

Minter = Callable[[str, tuple[str, ...]], KubeConfig]


def kubeconfig_name(cluster: str) -> str:
    """The admin kubeconfig's file name, as Rancher names it."""
    return f"kube_config_{cluster}.yml"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterHandle:
    """One running cluster and how to reach it."""

    name: str
    server: str
    ca_pem: bytes | None = field(repr=False)
    kubeconfig: Path
    nodes: tuple[str, ...] = ()
    mint: Minter | None = field(default=None, repr=False, compare=False)
    apiservers: Mapping[str, str] = field(default_factory=dict)
    """Control-plane node -> that node's kube-apiserver URL, where each node runs its own (ACE);
    empty when one kube-apiserver (``server``) serves the cluster."""

    def admin_config(self) -> KubeConfig:
        return KubeConfig.load(self.kubeconfig)

    def credentials(self, user: str, groups: tuple[str, ...] | list[str] = ()) -> KubeConfig:
        """Credentials that authenticate as ``user`` in ``groups``."""
        groups = tuple(groups)
        if self.mint is not None:
            return self.mint(user, groups)
        return self.admin_config().impersonating(user, groups)

    def client(self, user: str | None = None, groups: tuple[str, ...] | list[str] = ()) -> KubeClient:
        """A client as admin (no user) or as the given user and groups."""
        config = self.admin_config() if user is None else self.credentials(user, tuple(groups))
        return KubeClient(config)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSet:
    """The clusters of one scenario, brought up (or adopted) by one provider in one run folder."""

    provider: str
    run_dir: Path
    clusters: Mapping[str, ClusterHandle]
    kubectl: Path | None = None

    def __getitem__(self, name: str) -> ClusterHandle:
        try:
            return self.clusters[name]
        except KeyError:
            known = ", ".join(self.clusters) or "none"
            raise ConfigError(f"no cluster named {name!r} in {self.run_dir} (known: {known})") from None

    def __iter__(self) -> Iterator[ClusterHandle]:
        return iter(self.clusters.values())

    def __len__(self) -> int:
        return len(self.clusters)


class Provider(Protocol):
    """Brings the clusters of a scenario up in a run folder, and down again."""

    @property
    def name(self) -> str: ...

    def up(self, scenario: Scenario, run_dir: Path, *, progress: Progress | None = None) -> ClusterSet: ...

    def down(self, run_dir: Path) -> None: ...

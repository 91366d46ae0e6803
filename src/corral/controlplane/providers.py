"""Where clusters come from: one interface, three providers, chosen by name or ``CORRAL_PROVIDER``.

* ``local`` (default): etcd, kube-apiserver and kube-controller-manager as processes of this
  machine, built from pinned Go modules (`corral.controlplane.local`).
* ``kind``: one kind cluster per scenario cluster, where kind and a container engine exist.
* ``kubeconfig``: adopts running clusters from ``kube_config_<cluster>.yml`` files.

Every provider returns a `ClusterSet`: per cluster its name, server URL, CA, admin kubeconfig
path and a way to get credentials for any user and groups (client certificates where the
provider holds the client CA, impersonation by the admin otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.errors import ConfigError
from corral.k8s import KubeClient, KubeConfig
from corral.model import Scenario

Progress = Callable[[str], None]
"""Called with one human-readable line per bring-up step."""

Minter = Callable[[str, tuple[str, ...]], KubeConfig]

PROVIDERS = ("local", "kind", "kubeconfig")
DEFAULT_PROVIDER = "local"


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


def select_provider(name: str | None = None, **options: Any) -> Provider:
    """The provider named by ``name``, else by ``CORRAL_PROVIDER``, else ``local``."""
    chosen = name or os.environ.get("CORRAL_PROVIDER") or DEFAULT_PROVIDER
    if chosen == "local":
        from corral.controlplane.local import LocalProvider

        return LocalProvider(**options)
    if chosen == "kind":
        from corral.controlplane.kind import KindProvider

        return KindProvider(**options)
    if chosen == "kubeconfig":
        from corral.controlplane.adopt import KubeconfigProvider

        return KubeconfigProvider(**options)
    raise ConfigError(f"unknown provider {chosen!r}; choose one of: {', '.join(PROVIDERS)}")

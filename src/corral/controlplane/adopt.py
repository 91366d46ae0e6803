"""The ``kubeconfig`` provider: adopt clusters that already run, from their admin kubeconfigs.

The clusters of a scenario are found as ``kube_config_<cluster>.yml`` files in a folder (the
``source`` setting, else ``CORRAL_KUBECONFIG_DIR``, else the run folder itself) or in an explicit
mapping. corral did not start them, so ``down`` leaves them alone, and credentials for other users
are the admin's identity with impersonation headers (no client CA key is at hand).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.controlplane.clusters import ClusterHandle, ClusterSet, Progress, kubeconfig_name
from corral.errors import ConfigError, ControlPlaneError, KubeAPIError
from corral.k8s import KubeClient, KubeConfig
from corral.model import Scenario


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeconfigProvider:
    """Clusters given by kubeconfig files."""

    source: Path | None = None
    """A folder of ``kube_config_<cluster>.yml`` files."""
    kubeconfigs: Mapping[str, Path] = field(default_factory=dict)
    """Explicit kubeconfig per cluster name; wins over ``source``."""
    name: str = "kubeconfig"

    def locate(self, cluster: str, run_dir: Path) -> Path:
        """The kubeconfig file of one cluster."""
        if cluster in self.kubeconfigs:
            return Path(self.kubeconfigs[cluster])
        folder = self.source or Path(os.environ.get("CORRAL_KUBECONFIG_DIR") or run_dir)
        return folder / kubeconfig_name(cluster)

    def up(self, scenario: Scenario, run_dir: Path, *, progress: Progress | None = None) -> ClusterSet:
        report = progress or (lambda _line: None)
        handles: dict[str, ClusterHandle] = {}
        for cluster in scenario.clusters:
            path = self.locate(cluster.name, run_dir)
            if not path.is_file():
                raise ConfigError(
                    f"provider kubeconfig: no kubeconfig for cluster {cluster.name!r} at {str(path)!r}"
                )
            config = KubeConfig.load(path)
            try:
                with KubeClient(config, timeout_seconds=10) as client:
                    version = client.get("/version").get("gitVersion", "?")
            except KubeAPIError as e:
                raise ControlPlaneError(
                    f"cluster {cluster.name!r} from {str(path)!r} is not reachable: {e}"
                ) from e
            report(f"adopted {cluster.name} at {config.server} (Kubernetes {version})")
            handles[cluster.name] = ClusterHandle(
                name=cluster.name,
                server=config.server,
                ca_pem=config.ca_pem,
                kubeconfig=path,
                nodes=tuple(node.name for node in cluster.nodes),
            )
        return ClusterSet(provider=self.name, run_dir=run_dir, clusters=handles)

    def down(self, run_dir: Path) -> None:
        """Adopted clusters belong to someone else: nothing to stop."""

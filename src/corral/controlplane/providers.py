"""The provider registry: which provider runs, chosen by name, else ``CORRAL_PROVIDER``, else ``local``.

* ``local`` (default): etcd, kube-apiserver and kube-controller-manager as processes of this
  machine, built from pinned Go modules (`corral.controlplane.local`).
* ``kind``: one kind cluster per scenario cluster, where kind and a container engine exist.
* ``kubeconfig``: adopts running clusters from ``kube_config_<cluster>.yml`` files.

`provider_name` is the one place that reads ``CORRAL_PROVIDER`` and applies the default; the CLI
and the test fixtures go through it. Providers are imported only when chosen.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from corral.errors import ConfigError

if TYPE_CHECKING:
    from corral.controlplane.clusters import Provider

PROVIDERS = ("local", "kind", "kubeconfig")
DEFAULT_PROVIDER = "local"
ENV_VAR = "CORRAL_PROVIDER"


def provider_name(explicit: str | None = None, *, recorded: str | None = None) -> str:
    """The provider to use: ``explicit``, else ``CORRAL_PROVIDER``, else ``recorded``, else ``local``.

    ``recorded`` is what a run folder says started its clusters (``corral cluster down``). An
    unknown name is refused, wherever it came from.
    """
    from_env = os.environ.get(ENV_VAR)
    chosen = explicit or from_env or recorded or DEFAULT_PROVIDER
    if chosen not in PROVIDERS:
        source = f" (from {ENV_VAR})" if not explicit and from_env else ""
        raise ConfigError(f"unknown provider {chosen!r}{source}; choose one of: {', '.join(PROVIDERS)}")
    return chosen


def select_provider(name: str | None = None, **options: Any) -> Provider:
    """The provider named by `provider_name`, built with ``options``."""
    chosen = provider_name(name)
    if chosen == "local":
        from corral.controlplane.local import LocalProvider

        return LocalProvider(**options)
    if chosen == "kind":
        from corral.controlplane.kind import KindProvider

        return KindProvider(**options)
    from corral.controlplane.adopt import KubeconfigProvider

    return KubeconfigProvider(**options)

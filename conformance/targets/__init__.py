"""Targets of the conformance suites: ``reference`` (corral up), ``kind`` and ``rancher`` (a real Rancher)."""

from conformance.targets.base import (
    Capability,
    ClusterAccess,
    ServerAccess,
    Target,
    TargetUnavailableError,
    UserAccess,
)
from conformance.targets.v3 import Exchange, ReadOnlyTargetError, V3Client, V3Error

TARGETS = ("reference", "kind", "rancher")
DEFAULT_TARGET = "reference"

__all__ = [
    "DEFAULT_TARGET",
    "TARGETS",
    "Capability",
    "ClusterAccess",
    "Exchange",
    "ReadOnlyTargetError",
    "ServerAccess",
    "Target",
    "TargetUnavailableError",
    "UserAccess",
    "V3Client",
    "V3Error",
]

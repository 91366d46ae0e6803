"""A plain in-memory snapshot of a cluster's ACE objects, for the decision tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.kubeapiauth.objects import ClusterAuthToken, ClusterUserAttribute


@dataclass
class Objects:
    tokens: dict[str, ClusterAuthToken] = field(default_factory=dict)
    attributes: dict[str, ClusterUserAttribute] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    debounce: int = -1

    def token(self, name: str) -> ClusterAuthToken | None:
        return self.tokens.get(name)

    def attribute(self, name: str) -> ClusterUserAttribute | None:
        return self.attributes.get(name)

    def secret_hash(self, name: str) -> str | None:
        return self.hashes.get(name)

    def debounce_seconds(self) -> int:
        return self.debounce

"""Shared helpers of the control-plane suite: a fresh namespace per test on the first cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.k8s import KubeClient


@pytest.fixture
def cluster_name(cluster_set: ClusterSet) -> str:
    return next(iter(cluster_set)).name


@pytest.fixture
def admin(cluster_set: ClusterSet, cluster_name: str) -> Iterator[KubeClient]:
    with cluster_set[cluster_name].client() as client:
        yield client


@pytest.fixture
def namespace(admin: KubeClient) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    admin.delete(f"/api/v1/namespaces/{name}")

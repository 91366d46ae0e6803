"""Fixtures of the client suite: the first smoke cluster, its admin client and a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.k8s import KubeClient


@pytest.fixture
def handle(cluster_set: ClusterSet) -> ClusterHandle:
    return next(iter(cluster_set))


@pytest.fixture
def admin(handle: ClusterHandle) -> Iterator[KubeClient]:
    with handle.client() as client:
        yield client


@pytest.fixture
def namespace(admin: KubeClient) -> Iterator[str]:
    """A namespace of its own for one test, deleted afterwards (without waiting)."""
    name = f"k-{uuid.uuid4().hex[:10]}"
    admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    admin.delete(f"/api/v1/namespaces/{name}")

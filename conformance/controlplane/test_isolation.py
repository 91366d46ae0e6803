"""The clusters of one scenario are separate worlds, even when they share one etcd."""

from __future__ import annotations

import uuid

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.errors import KubeAPIError
from corral.k8s import KubeClient, KubeConfig


def test_an_object_created_in_one_cluster_is_absent_from_the_other(cluster_set: ClusterSet) -> None:
    first, second = list(cluster_set)[:2]
    name = f"only-{uuid.uuid4().hex[:8]}"
    with first.client() as a, second.client() as b:
        a.create("/api/v1/namespaces", {"metadata": {"name": name}})
        try:
            assert a.exists(f"/api/v1/namespaces/{name}")
            assert not b.exists(f"/api/v1/namespaces/{name}")
            assert {n["metadata"]["name"] for n in b.get("/api/v1/nodes")["items"]} == set(second.nodes)
        finally:
            a.delete(f"/api/v1/namespaces/{name}")


def test_a_client_certificate_of_one_cluster_is_refused_by_another(cluster_set: ClusterSet) -> None:
    first, second = list(cluster_set)[:2]
    stolen = first.credentials("admin", ("system:masters",))
    foreign = second.admin_config()
    config = KubeConfig(
        server=foreign.server, ca_pem=foreign.ca_pem, cert_pem=stolen.cert_pem, key_pem=stolen.key_pem
    )
    with KubeClient(config) as client, pytest.raises(KubeAPIError) as refused:
        client.get("/api/v1/namespaces")
    assert refused.value.status == 401

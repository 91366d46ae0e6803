"""The clusters of one scenario are separate worlds, even when they share one etcd.

Node names come from each cluster's API (kind names its nodes itself); only the local provider
registers the scenario's nodes as they are written, and mints client certificates per cluster.
"""

from __future__ import annotations

import uuid

import pytest

from corral.controlplane.clusters import ClusterSet
from corral.errors import KubeAPIError
from corral.k8s import KubeClient, KubeConfig
from corral.model import Scenario


def node_names(client: KubeClient) -> set[str]:
    return {node["metadata"]["name"] for node in client.get("/api/v1/nodes")["items"]}


@pytest.mark.requirement("CP-004")
def test_an_object_created_in_one_cluster_is_absent_from_the_other(cluster_set: ClusterSet) -> None:
    first, second = list(cluster_set)[:2]
    name = f"only-{uuid.uuid4().hex[:8]}"
    with first.client() as a, second.client() as b:
        a.create("/api/v1/namespaces", {"metadata": {"name": name}})
        try:
            assert a.exists(f"/api/v1/namespaces/{name}")
            assert not b.exists(f"/api/v1/namespaces/{name}")
            assert node_names(a).isdisjoint(node_names(b))
        finally:
            a.delete(f"/api/v1/namespaces/{name}")


@pytest.mark.local_only
@pytest.mark.requirement("CP-005")
def test_each_local_cluster_lists_exactly_the_nodes_of_its_scenario_cluster(
    cluster_set: ClusterSet, corral_scenario: Scenario
) -> None:
    for cluster in corral_scenario.clusters:
        handle = cluster_set[cluster.name]
        with handle.client() as client:
            listed = node_names(client)
        assert listed == {node.name for node in cluster.nodes}
        assert set(handle.nodes) == listed


@pytest.mark.local_only
@pytest.mark.requirement("CP-004")
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

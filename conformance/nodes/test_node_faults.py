"""Node faults on real nodes: a killed node turns NotReady on Kubernetes' schedule and its
Deployment's Pod comes back on another node; a stopped node starts again and is Ready; ``down``
leaves nothing of the run on the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.nodes.conftest import container, running_pods, wait_until
from corral.controlplane import build, hostnet, nodes
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.local import LocalProvider
from corral.k8s import KubeClient
from corral.model import Scenario


def _ready(client: KubeClient, node: str) -> bool:
    return nodes.node_ready(client, node)


@pytest.mark.requirement("CP-017")
def test_a_killed_node_turns_not_ready_and_its_deployment_pod_comes_back_elsewhere(
    real_cluster: ClusterHandle, real_admin: KubeClient, ns: str, real_scenario: Scenario
) -> None:
    run_dir = real_cluster.kubeconfig.parent
    workers = [n.name for n in real_scenario.clusters[0].nodes if "worker" in n.roles]
    real_admin.create(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mover"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "mover"}},
                "template": {
                    "metadata": {"labels": {"app": "mover"}},
                    "spec": {
                        "nodeSelector": {"node-role.kubernetes.io/worker": "true"},
                        "terminationGracePeriodSeconds": 1,
                        "containers": [container("main", ["sleep", "infinity"])],
                    },
                },
            },
        },
    )
    first = wait_until(lambda: running_pods(real_admin, ns, "app=mover"), timeout=120, what="the pod")[0]
    victim = first["spec"]["nodeName"]
    assert victim in workers
    nodes.kill_node(run_dir, victim)
    try:
        assert not nodes.node_running(run_dir, victim)
        wait_until(lambda: not _ready(real_admin, victim), timeout=90, what=f"{victim} NotReady")
        moved = wait_until(
            lambda: [p for p in running_pods(real_admin, ns, "app=mover") if p["spec"]["nodeName"] != victim],
            timeout=180,
            what="the Deployment's pod Running on another node",
        )
        assert moved[0]["spec"]["nodeName"] in set(workers) - {victim}
    finally:
        nodes.start_node(run_dir, victim)
    wait_until(lambda: _ready(real_admin, victim), timeout=90, what=f"{victim} Ready again")


@pytest.mark.requirement("CP-017")
def test_a_stopped_node_starts_again_and_is_ready(
    real_cluster: ClusterHandle, real_admin: KubeClient, real_scenario: Scenario
) -> None:
    run_dir = real_cluster.kubeconfig.parent
    node = real_scenario.clusters[0].nodes[-1].name
    nodes.stop_node(run_dir, node)
    assert not nodes.node_running(run_dir, node)
    wait_until(lambda: not _ready(real_admin, node), timeout=90, what=f"{node} NotReady")
    nodes.start_node(run_dir, node)
    assert nodes.node_running(run_dir, node)
    wait_until(lambda: _ready(real_admin, node), timeout=90, what=f"{node} Ready again")


@pytest.mark.requirement("CP-018")
def test_down_removes_every_namespace_interface_cgroup_and_mount_of_the_run(
    node_binaries: build.Built, tmp_path: Path, real_clusters: object
) -> None:
    scenario = Scenario.from_dict(
        {
            "name": "one-node",
            "node_mode": "real",
            "regions": ["us"],
            "clusters": [
                {"name": "c-one", "region": "us", "nodes": [{"name": "c-one-cp", "roles": ["controlplane"]}]}
            ],
        }
    )
    provider = LocalProvider(binaries=node_binaries)
    run_dir = tmp_path / "run"
    provider.up(scenario, run_dir)
    try:
        ledger = hostnet.Ledger.load(run_dir.resolve())
        assert ledger.netns
        assert ledger.links
        assert ledger.cgroups
        assert ledger.folders
        assert hostnet.leftovers(run_dir, [*ledger.netns, *ledger.links]) == [*ledger.netns, *ledger.links]
        assert any(hostnet.mounts_below(root) for root in ledger.mount_roots)
    finally:
        LocalProvider(binaries=node_binaries).down(run_dir)  # as another interpreter would
    assert hostnet.leftovers(run_dir, [*ledger.netns, *ledger.links]) == []
    assert [point for root in ledger.mount_roots for point in hostnet.mounts_below(root)] == []
    assert [folder for folder in ledger.folders if Path(folder).exists()] == []
    assert hostnet.cgroup_pids(ledger.cgroups[0]) == set()
    assert all(not (h / ledger.cgroups[0].strip("/")).exists() for h in hostnet.v1_hierarchies())
    assert not (run_dir / hostnet.LEDGER_FILE).exists()

"""``corral up``'s process list: real nodes' kubelets and containerds carry their node and cluster."""

from __future__ import annotations

from pathlib import Path

from corral.controlplane.processes import ProcessRecord, write_state
from corral.model import Scenario
from corral.run.up import CLUSTERS_DIR, _processes

SCENARIO = """
name: t
node_mode: real
regions: [us]
clusters:
  - name: c-real
    region: us
    nodes:
      - {name: c-real-cp, roles: [controlplane, etcd]}
      - {name: c-real-w1, roles: [worker]}
"""


def _record(name: str, pid: int, role: str, node: str = "") -> ProcessRecord:
    return ProcessRecord(name=name, pid=pid, start_ticks=1, executable="x", log="x.log", role=role, node=node)


def test_real_node_processes_name_their_node_and_cluster(tmp_path: Path) -> None:
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(SCENARIO)
    scenario = Scenario.load(scenario_file)
    clusters = tmp_path / CLUSTERS_DIR
    clusters.mkdir()
    write_state(
        clusters,
        [
            _record("kube-apiserver-local", 10, "kube-apiserver"),
            _record("kube-apiserver-c-real", 11, "kube-apiserver"),
            _record("containerd-c-real-cp", 12, "containerd", "c-real-cp"),
            _record("kubelet-c-real-cp", 13, "kubelet", "c-real-cp"),
            _record("kubelet-c-real-w1", 14, "kubelet", "c-real-w1"),
        ],
    )
    listed = {p["pid"]: p for p in _processes(tmp_path, scenario)}
    assert listed[10] == {"role": "upstream-apiserver", "cluster": None, "node": None, "pid": 10}
    assert listed[11] == {"role": "kube-apiserver", "cluster": "c-real", "node": None, "pid": 11}
    assert listed[12] == {"role": "containerd", "cluster": "c-real", "node": "c-real-cp", "pid": 12}
    assert listed[13] == {"role": "kubelet", "cluster": "c-real", "node": "c-real-cp", "pid": 13}
    assert listed[14] == {"role": "kubelet", "cluster": "c-real", "node": "c-real-w1", "pid": 14}

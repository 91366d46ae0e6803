"""Real nodes refuse to start where they cannot work, in one sentence, and node faults name bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.controlplane import hostnet, nodes
from corral.errors import ConfigError, ControlPlaneError


def test_real_nodes_need_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes.os, "geteuid", lambda: 1000)
    with pytest.raises(
        ControlPlaneError, match=r"^real nodes need root: run as root, or use --nodes virtual$"
    ):
        nodes.check_host()


def test_real_nodes_need_the_cgroup_v1_hierarchies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes.os, "geteuid", lambda: 0)
    monkeypatch.setattr(hostnet, "v1_hierarchies", lambda: [Path("/sys/fs/cgroup/memory")])
    with pytest.raises(ControlPlaneError, match="lacks cpu, cpuacct, cpuset, pids, devices, freezer"):
        nodes.check_host()


def test_a_fault_on_a_node_the_run_does_not_have_names_the_nodes_it_has(tmp_path: Path) -> None:
    (tmp_path / "nodes" / "n1").mkdir(parents=True)
    (tmp_path / "nodes" / "n1" / "launch.json").write_text(json.dumps({"node": "n1"}))
    for fault in (nodes.stop_node, nodes.kill_node, nodes.start_node):
        with pytest.raises(ConfigError, match=r"no real node 'n9' in .* \(real nodes: n1\)"):
            fault(tmp_path, "n9")


def test_a_virtual_run_has_no_real_nodes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(real nodes: none\)"):
        nodes.kill_node(tmp_path, "n1")

"""ACE planned for real nodes: kube-api-auth on port 6440 of each control-plane node's address."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from corral.errors import ControlPlaneError
from corral.model import Scenario
from corral.run import ace

SCENARIO = {
    "name": "t",
    "regions": ["us"],
    "clusters": [
        {
            "name": "a",
            "region": "us",
            "ace": True,
            "nodes": [
                {"name": "a-cp{i}", "count": 2, "roles": ["controlplane", "etcd"]},
                {"name": "a-w", "roles": ["worker"]},
            ],
        },
        {"name": "b", "region": "us", "nodes": [{"name": "b-cp", "roles": ["controlplane"]}]},
    ],
}


def _server(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"])


def test_real_nodes_wait_for_addresses_then_name_each_node(tmp_path: Path) -> None:
    plans = ace.plan(Scenario.from_dict(SCENARIO), tmp_path, real_nodes=True)
    plan = plans["a"]
    assert plan.daemonset
    assert plan.auth_ports == {"a-cp1": 6440, "a-cp2": 6440}
    assert not any(path.exists() for path in plan.webhooks.values())  # no address known yet
    ace.place(plans, {"a": {"a-cp1": "10.201.0.1", "a-cp2": "10.201.1.1", "a-w": "10.201.2.1"}})
    assert _server(plan.webhooks["a-cp1"]) == "http://10.201.0.1:6440/v1/authenticate"
    assert _server(plan.webhooks["a-cp2"]) == "http://10.201.1.1:6440/v1/authenticate"
    assert ace.entries(plans, "a")["kube_api_auth"] == ["http://10.201.0.1:6440", "http://10.201.1.1:6440"]


def test_a_control_plane_node_without_an_address_is_named(tmp_path: Path) -> None:
    plans = ace.plan(Scenario.from_dict(SCENARIO), tmp_path, real_nodes=True)
    with pytest.raises(ControlPlaneError, match="a-cp2"):
        ace.place(plans, {"a": {"a-cp1": "10.201.0.1"}})


def test_virtual_nodes_keep_loopback_processes(tmp_path: Path) -> None:
    plans = ace.plan(Scenario.from_dict(SCENARIO), tmp_path)
    plan = plans["a"]
    assert not plan.daemonset
    ace.place(plans, {"a": {"a-cp1": "10.201.0.1", "a-cp2": "10.201.1.1"}})  # not theirs: ignored
    for node, port in plan.auth_ports.items():
        assert _server(plan.webhooks[node]) == f"http://127.0.0.1:{port}/v1/authenticate"

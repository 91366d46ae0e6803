"""Scenario files: the canonical ones load, and every kind of bad value is located precisely."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ConfigError
from corral.model import Scenario

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"

VALID: dict[str, Any] = {
    "name": "t",
    "regions": ["us", "au"],
    "rtt_ms": {"us": {"au": 150, "us": 1}},
    "clusters": [
        {"name": "c1", "region": "us", "nodes": [{"name": "n1", "roles": ["controlplane"]}]},
        {
            "name": "c2",
            "region": "au",
            "agent": "rke1",
            "nodes": [{"name": "n2", "roles": ["controlplane", "etcd"]}, {"name": "n3", "roles": ["worker"]}],
        },
    ],
    "users": [{"name": "alice", "region": "au", "groups": ["devs"]}],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of VALID with the value at a dotted path (list indices as numbers) replaced."""
    data = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is _DELETE:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


def test_smoke_scenario_loads_with_two_clusters() -> None:
    scenario = Scenario.load(SCENARIOS / "smoke.yaml")
    assert scenario.name == "smoke"
    assert [c.name for c in scenario.clusters] == ["c-us", "c-au"]
    assert scenario.rtt_seconds("au", "us") == pytest.approx(0.150)
    assert scenario.rtt_seconds("us", "au") == scenario.rtt_seconds("au", "us")
    assert [n.name for n in scenario.cluster("c-au").control_plane_nodes] == ["c-au-cp"]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_is_valid(path: Path) -> None:
    assert Scenario.load(path).clusters


def test_valid_dict_round_trip_defaults() -> None:
    scenario = Scenario.from_dict(VALID, source="t.yaml")
    assert scenario.clusters[0].agent == "rke2"
    assert scenario.rtt_seconds("au", "au") == 0.0
    assert scenario.users[0].groups == ("devs",)
    assert scenario.node_mode == "virtual"
    assert Scenario.from_dict({**VALID, "node_mode": "real"}).node_mode == "real"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("clusters.1.nodes", [], "t.yaml: clusters[1].nodes: must not be empty"),
        ("clusters.0.region", "eu", "t.yaml: clusters[0].region: must be one of us, au, got 'eu'"),
        ("clusters.1.agent", "rke3", "t.yaml: clusters[1].agent: must be one of rke1, rke2, got 'rke3'"),
        ("clusters.0.name", "C_1", "t.yaml: clusters[0].name: must be a DNS label"),
        ("clusters.1.name", "c1", "t.yaml: clusters[1].name: duplicate cluster 'c1' (first at clusters[0])"),
        ("clusters.1.nodes.0.name", "n1", "t.yaml: clusters[1].nodes[0].name: duplicate node 'n1'"),
        ("clusters.0.nodes.0.roles", ["boss"], "t.yaml: clusters[0].nodes[0].roles[0]: must be one of"),
        (
            "clusters.0.nodes.0.roles",
            ["worker"],
            "t.yaml: clusters[0].nodes: needs at least one node with role",
        ),
        ("clusters.0.nodz", [], "t.yaml: clusters[0].nodz: unknown field"),
        ("rtt_ms.us.au", -1, "t.yaml: rtt_ms.us.au: must be >= 0, got -1"),
        ("rtt_ms.us.au", "fast", "t.yaml: rtt_ms.us.au: must be a number, got str 'fast'"),
        ("rtt_ms", {}, "t.yaml: rtt_ms: missing round-trip time between 'us' and 'au'"),
        ("rtt_ms.au", {"us": 99}, "t.yaml: rtt_ms.au.us: must equal rtt_ms.us.au (150)"),
        ("rtt_ms.eu", {"us": 1}, "t.yaml: rtt_ms.eu: unknown region 'eu'"),
        ("regions", [], "t.yaml: regions: must not be empty"),
        ("regions", ["us", "us"], "t.yaml: regions[1]: duplicate region 'us'"),
        ("users.0.region", "mars", "t.yaml: users[0].region: must be one of us, au, got 'mars'"),
        ("users.0.groups", "devs", "t.yaml: users[0].groups: must be a list, got str 'devs'"),
        ("node_mode", "physical", "t.yaml: node_mode: must be one of virtual, real, got 'physical'"),
        ("name", _DELETE, "t.yaml: name: is required"),
        ("clusters", _DELETE, "t.yaml: clusters: is required"),
    ],
)
def test_invalid_scenario_is_rejected_with_a_located_message(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Scenario.from_dict(with_change(path, value), source="t.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_non_mapping_document_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^t.yaml: must be a mapping, got list"):
        Scenario.from_yaml("- a\n- b\n", source="t.yaml")


def test_broken_yaml_names_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"^t.yaml:2:11: invalid YAML: mapping values are not allowed"):
        Scenario.from_yaml("name: x\nregions: a: b\n", source="t.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read scenario"):
        Scenario.load(tmp_path / "nope.yaml")

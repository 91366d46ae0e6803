"""The server, workload, faults and expectations sections, generators, and the calibration file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.errors import ConfigError
from corral.model import Calibration, Scenario, Server

ROOT = Path(__file__).parents[2]

BASE: dict[str, Any] = {
    "name": "t",
    "regions": ["us", "au"],
    "rtt_ms": {"us": {"au": 150}},
    "server": {"region": "us", "replicas": 2, "workers": 8},
    "clusters": [
        {"name": "c1", "region": "us", "nodes": [{"name": "n1", "roles": ["controlplane"]}]},
        {
            "name": "c2",
            "region": "au",
            "agent": "rke1",
            "nodes": [{"name": "n2", "roles": ["controlplane"]}, {"name": "n3", "roles": ["worker"]}],
        },
    ],
    "users": [{"name": "alice", "region": "au", "groups": ["devs"]}, {"name": "bob", "region": "us"}],
    "workload": [
        {
            "users": ["alice"],
            "path": "ace",
            "clusters": ["c2"],
            "rate_per_second": 2,
            "duration_seconds": 60,
            "mix": [{"verb": "get", "weight": 3, "response_bytes": 100}, {"verb": "list"}],
        },
        {"groups": ["devs"], "region": "au", "path": "proxy", "rate_per_second": 1, "duration_seconds": 30},
    ],
    "faults": [
        {"kind": "kill-cluster-agent", "target": "c2", "at_seconds": 10, "duration_seconds": 5},
        {"kind": "kill-node-agent", "target": "c2/n3", "at_seconds": 10, "duration_seconds": 5},
        {"kind": "server-down", "at_seconds": 20, "duration_seconds": 5},
        {"kind": "latency", "target": ["au", "us"], "rtt_ms": 400, "at_seconds": 0, "duration_seconds": 5},
        {"kind": "partition", "target": "us<->au", "at_seconds": 30, "duration_seconds": 50},
    ],
    "expectations": {
        "latency_p95_seconds": {"proxy": 1.0, "ace": 0.2},
        "availability": {"ace": 1.0},
        "failover_max_seconds": 30,
    },
}


def changed(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[int(last) if last.isdigit() else last] = value
    return data


def test_every_section_is_read_into_typed_values() -> None:
    scenario = Scenario.from_dict(BASE, source="t.yaml")
    assert scenario.server == Server(region="us", replicas=2, workers=8)
    assert scenario.server.capacity == 16
    ace, proxy = scenario.workload
    assert [u.name for u in ace.select_users(scenario.users)] == ["alice"]
    assert [c.name for c in ace.select_clusters(scenario.clusters)] == ["c2"]
    assert [c.name for c in proxy.select_clusters(scenario.clusters)] == ["c1", "c2"]
    assert [(k.verb, k.weight, k.response_bytes) for k in ace.mix] == [("get", 3.0, 100), ("list", 1.0, 2000)]
    assert [f.target for f in scenario.faults] == ["c2", "c2/n3", "server", "us<->au", "us<->au"]
    assert scenario.faults[3].rtt_ms == 400.0
    assert scenario.faults[4].link == ("us", "au")
    assert scenario.horizon_seconds == 80.0
    assert scenario.expectations.latency_seconds == {"p95": {"proxy": 1.0, "ace": 0.2}}
    assert scenario.expectations.failover_max_seconds == 30.0


def test_a_scenario_without_the_new_sections_gets_defaults() -> None:
    data = {k: v for k, v in BASE.items() if k not in ("server", "workload", "faults", "expectations")}
    scenario = Scenario.from_dict(data, source="t.yaml")
    assert scenario.server == Server(region="us")
    assert (scenario.workload, scenario.faults, scenario.expectations.empty) == ((), (), True)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("workload.0.rate_per_second", -1, "t.yaml: workload[0].rate_per_second: must be > 0, got -1"),
        ("workload.0.path", "ssh", "t.yaml: workload[0].path: must be one of proxy, ace, direct, got 'ssh'"),
        ("workload.0.users", ["carol"], "t.yaml: workload[0].users[0]: unknown user 'carol'"),
        ("workload.0.clusters", ["c9"], "t.yaml: workload[0].clusters[0]: unknown cluster 'c9'"),
        ("workload.1.region", "us", "t.yaml: workload[1]: selects no user"),
        ("workload.0.mix", [], "t.yaml: workload[0].mix: must not be empty"),
        ("workload.0.mix.0.verb", "watch", "t.yaml: workload[0].mix[0].verb: must be one of get, list"),
        ("workload.0.duration_seconds", 0, "t.yaml: workload[0].duration_seconds: must be > 0, got 0"),
        ("workload.0.clusters_per_user", 0, "t.yaml: workload[0].clusters_per_user: must be >= 1, got 0"),
        ("workload.0.rate", 1, "t.yaml: workload[0].rate: unknown field"),
        ("server.region", "eu", "t.yaml: server.region: must be one of us, au, got 'eu'"),
        ("server.workers", 0, "t.yaml: server.workers: must be >= 1, got 0"),
        ("faults.0.kind", "meteor", "t.yaml: faults[0].kind: must be one of kill-cluster-agent"),
        ("faults.0.target", "c9", "t.yaml: faults[0].target: must be one of c1, c2, got 'c9'"),
        ("faults.1.target", "c1/n1", "t.yaml: faults[1].target: cluster 'c1' has agent profile rke2"),
        ("faults.1.target", "c2/n9", "t.yaml: faults[1].target: cluster 'c2' has no node 'n9'"),
        ("faults.3.target", ["au", "eu"], "t.yaml: faults[3].target: unknown region 'eu'"),
        ("faults.4.target", "us-au", "t.yaml: faults[4].target: must be a link [a, b] or 'a<->b'"),
        ("faults.4.target", ["us", "us"], "t.yaml: faults[4].target: a link joins two different regions"),
        ("faults.2.at_seconds", -5, "t.yaml: faults[2].at_seconds: must be >= 0, got -5"),
        ("faults.2.rtt_ms", 5, "t.yaml: faults[2].rtt_ms: unknown field"),
        (
            "expectations.availability",
            {"ace": 1.5},
            "t.yaml: expectations.availability.ace: must be <= 1, got 1.5",
        ),
        (
            "expectations.latency_p95_seconds",
            {"ssh": 1},
            "t.yaml: expectations.latency_p95_seconds.ssh: unknown",
        ),
        (
            "expectations.failover_max_seconds",
            0,
            "t.yaml: expectations.failover_max_seconds: must be > 0, got 0",
        ),
    ],
)
def test_a_bad_section_value_is_rejected_with_a_located_message(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Scenario.from_dict(changed(path, value), source="t.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_the_alice_au_file_reports_a_negative_rate_with_its_file_name(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "fixtures" / "scenarios" / "alice-au.yaml").read_text())
    data["workload"][0]["rate_per_second"] = -1
    path = tmp_path / "alice-au.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        ConfigError, match=r"^alice-au.yaml: workload\[0\].rate_per_second: must be > 0, got -1$"
    ):
        Scenario.load(path)


# -- generators ---------------------------------------------------------------------------------


def _fleet(**cluster: Any) -> dict[str, Any]:
    entry = {
        "name": "c-{i:03d}",
        "count": 3,
        "region": "us",
        "nodes": [
            {"name": "{cluster}-cp", "roles": ["controlplane"]},
            {"name": "{cluster}-w{i}", "count": 2, "roles": ["worker"]},
        ],
    }
    entry.update(cluster)
    return {
        "name": "f",
        "regions": ["us"],
        "clusters": [entry],
        "users": [{"name": "u{i}", "count": 4, "region": "us", "groups": ["devs"]}],
    }


def test_generators_expand_to_named_clusters_nodes_and_users() -> None:
    scenario = Scenario.from_dict(_fleet(), source="f.yaml")
    assert [c.name for c in scenario.clusters] == ["c-001", "c-002", "c-003"]
    assert [n.name for n in scenario.clusters[1].nodes] == ["c-002-cp", "c-002-w1", "c-002-w2"]
    assert [u.name for u in scenario.users] == ["u1", "u2", "u3", "u4"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"name": "c-fixed"},
            "f.yaml: clusters[0].name: with count, the cluster name needs the placeholder {i}",
        ),
        ({"name": "c-{i}-{n}"}, "f.yaml: clusters[0].name: unknown placeholder {n}"),
        ({"name": "C-{i}"}, "f.yaml: clusters[0].name: must be a DNS label"),
        ({"count": 0}, "f.yaml: clusters[0].count: must be >= 1, got 0"),
        (
            {"nodes": [{"name": "cp", "roles": ["controlplane"]}]},
            "f.yaml: clusters[0].nodes[0].name: duplicate node 'cp'",
        ),
    ],
)
def test_a_bad_generator_is_rejected_with_a_located_message(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Scenario.from_dict(_fleet(**change), source="f.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_the_fleet_scenario_holds_two_thousand_clusters_twenty_thousand_nodes_and_five_thousand_users() -> (
    None
):
    scenario = Scenario.load(ROOT / "fixtures" / "scenarios" / "fleet-2000.yaml")
    assert len(scenario.clusters) == 2000
    assert sum(len(c.nodes) for c in scenario.clusters) == 20_000
    assert len(scenario.users) == 5000
    assert scenario.horizon_seconds == 3600


# -- calibration --------------------------------------------------------------------------------


def test_the_default_calibration_file_documents_the_built_in_defaults() -> None:
    assert Calibration.load(ROOT / "fixtures" / "calibration" / "default.yaml") == Calibration()


def test_a_calibration_file_overrides_only_what_it_names() -> None:
    calibration = Calibration.from_dict(
        {"apiserver": {"verbs": {"get": {"median_seconds": 0.5}}}, "protocol": {"health_tick_seconds": 30}}
    )
    assert calibration.apiserver_time("get").median_seconds == 0.5
    assert calibration.apiserver_time("get").sigma == 0.0
    assert calibration.apiserver_time("list") == Calibration().apiserver_time("list")
    assert calibration.protocol.health_tick_seconds == 30.0
    assert calibration.protocol.read_deadline_seconds == 60.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"apiserver": {"verbs": {"watch": {"median_seconds": 1}}}},
            "c.yaml: apiserver.verbs.watch: unknown verb",
        ),
        (
            {"server": {"token_authn": {"median_seconds": 0}}},
            "c.yaml: server.token_authn.median_seconds: must be > 0",
        ),
        ({"protocol": {"dial_wait_polls": 0}}, "c.yaml: protocol.dial_wait_polls: must be >= 1, got 0"),
        ({"tunnel": {"hops": 1}}, "c.yaml: tunnel.hops: unknown field"),
        ({"disk": {}}, "c.yaml: disk: unknown field"),
    ],
)
def test_a_bad_calibration_is_rejected_with_a_located_message(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Calibration.from_dict(data, source="c.yaml")
    assert str(info.value).startswith(message), str(info.value)

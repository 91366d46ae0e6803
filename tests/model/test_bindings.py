"""Users' role-template bindings in a scenario: parsed and checked, and ignored by the SimPy model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ConfigError
from corral.model import Binding, Scenario

SMOKE = Path(__file__).parents[2] / "fixtures" / "scenarios" / "smoke.yaml"


def smoke_with(bindings: list[dict[str, Any]]) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(SMOKE.read_text())
    data = copy.deepcopy(data)
    for user in data["users"]:
        user.pop("bindings", None)
    data["users"][0]["bindings"] = bindings
    return data


def test_the_smoke_scenario_binds_both_users() -> None:
    alice, bob = Scenario.load(SMOKE).users
    assert Binding(cluster="c-au", role="cluster-member") in alice.bindings
    assert bob.bindings == (Binding(cluster="c-us", role="cluster-owner"),)


def test_bindings_are_read() -> None:
    scenario = Scenario.from_dict(
        smoke_with(
            [
                {"cluster": "c-au", "role": "cluster-member"},
                {"cluster": "c-us", "role": "project-member", "project": "team-a", "namespaces": ["team-a"]},
            ]
        )
    )
    alice = scenario.users[0]
    assert alice.bindings == (
        Binding(cluster="c-au", role="cluster-member"),
        Binding(cluster="c-us", role="project-member", project="team-a", namespaces=("team-a",)),
    )
    assert scenario.users[1].bindings == ()


@pytest.mark.parametrize(
    ("bindings", "message"),
    [
        ([{"cluster": "c-nowhere", "role": "cluster-member"}], r"users\[0\]\.bindings\[0\]\.cluster"),
        ([{"cluster": "c-au"}], r"users\[0\]\.bindings\[0\]: role: is required"),
        ([{"cluster": "c-au", "role": "cluster-member", "verb": "x"}], "verb"),
        ([{"cluster": "c-au", "role": "project-member", "namespaces": ["a"]}], "add `project`"),
        ([{"cluster": "c-au", "role": "Cluster_Member"}], r"bindings\[0\]\.role"),
        ([{"cluster": "c-au", "role": "cluster-member"}] * 2, "duplicate binding"),
    ],
)
def test_bad_bindings_are_located(bindings: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Scenario.from_dict(smoke_with(bindings), source="smoke.yaml")


def test_the_simpy_model_ignores_bindings() -> None:
    pytest.importorskip("simpy")
    from corral.sim.run import run_scenario

    plain = Scenario.from_dict(smoke_with([]))
    bound = Scenario.from_dict(smoke_with([{"cluster": "c-au", "role": "cluster-owner"}]))
    assert bound.users[0].bindings
    assert run_scenario(bound, seed=3).summary == run_scenario(plain, seed=3).summary

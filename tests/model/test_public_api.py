"""The public surface of corral.model: the names the SimPy model, the checks and the control plane import."""

from __future__ import annotations

import importlib

import pytest

import corral.model
from tests._public_api import NO_PROBLEMS, all_problems

# Where each public name is defined; `corral.model` re-exports them all.
HOMES = {
    "corral.model.topology": ["AGENT_PROFILES", "AgentProfile", "Cluster", "Node", "User"],
    "corral.model.scenario": ["Scenario"],
    "corral.model.server": ["Server"],
    "corral.model.workload": ["ACCESS_PATHS", "VERBS", "AccessPath", "RequestKind", "Verb", "WorkloadEntry"],
    "corral.model.faults": ["FAULT_KINDS", "Fault", "FaultKind"],
    "corral.model.expectations": ["Expectations"],
    "corral.model.calibration": ["Calibration", "ServiceTime"],
    "corral.model.trace": ["Event", "TraceWriter", "TunnelClosed", "TunnelOpened", "event", "read_trace"],
}


def test_the_package_exports_exactly_what_its_all_lists() -> None:
    assert all_problems(corral.model) == NO_PROBLEMS


@pytest.mark.parametrize("module", sorted(HOMES))
def test_each_name_is_the_object_defined_in_its_module(module: str) -> None:
    loaded = importlib.import_module(module)
    assert [name for name in HOMES[module] if getattr(corral.model, name) is not getattr(loaded, name)] == []


def test_every_trace_event_type_is_exported() -> None:
    assert sorted(set(corral.model.event_types()) - set(corral.model.__all__)) == []

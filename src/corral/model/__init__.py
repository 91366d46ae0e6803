"""The shared model of the world: scenarios in, traces out. Pure data, no I/O beyond files.

`corral.model` is imported by every other part (the reference implementation, the SimPy model
in `sim/`, the load runs and the conformance checks) and imports nothing of theirs.
"""

from corral.model.scenario import AGENT_PROFILES, AgentProfile, Cluster, Node, Scenario, User
from corral.model.trace import (
    ClusterConditionChanged,
    Event,
    FailoverCompleted,
    FaultInjected,
    ImpersonationAccountEnsured,
    RequestCompleted,
    TokenReviewed,
    TraceWriter,
    TunnelClosed,
    TunnelOpened,
    event,
    event_types,
    parse_event,
    parse_trace,
    read_trace,
    write_trace,
)

__all__ = [
    "AGENT_PROFILES",
    "AgentProfile",
    "Cluster",
    "ClusterConditionChanged",
    "Event",
    "FailoverCompleted",
    "FaultInjected",
    "ImpersonationAccountEnsured",
    "Node",
    "RequestCompleted",
    "Scenario",
    "TokenReviewed",
    "TraceWriter",
    "TunnelClosed",
    "TunnelOpened",
    "User",
    "event",
    "event_types",
    "parse_event",
    "parse_trace",
    "read_trace",
    "write_trace",
]

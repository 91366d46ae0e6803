"""The shared model of the world: scenarios in, traces out. Pure data, no I/O beyond files.

`corral.model` is imported by every other part (the control-plane providers, the tunnel's trace events,
the SimPy model in `corral.sim`, the load runs and the trace checks in `corral.checks`) and imports nothing of
theirs. It re-exports `ConfigError`, the error its validation raises, so those parts need
nothing else of corral.
"""

from corral.errors import ConfigError
from corral.model.calibration import Calibration, ServiceTime
from corral.model.expectations import Expectations
from corral.model.faults import FAULT_KINDS, Fault, FaultKind
from corral.model.scenario import Scenario
from corral.model.server import Server
from corral.model.stats import Summariser, availability, fault_windows, quantile, succeeded, summarise
from corral.model.topology import AGENT_PROFILES, AgentProfile, Binding, Cluster, Node, User
from corral.model.trace import (
    ClusterConditionChanged,
    ClusterTokenSynced,
    Event,
    FailoverCompleted,
    FaultInjected,
    ImpersonationAccountEnsured,
    RequestCompleted,
    StreamBroken,
    StreamEnded,
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
from corral.model.workload import (
    ACCESS_PATHS,
    STREAM_KINDS,
    VERBS,
    AccessPath,
    RequestKind,
    StreamKind,
    Verb,
    WorkloadEntry,
)

__all__ = [
    "ACCESS_PATHS",
    "AGENT_PROFILES",
    "FAULT_KINDS",
    "STREAM_KINDS",
    "VERBS",
    "AccessPath",
    "AgentProfile",
    "Binding",
    "Calibration",
    "Cluster",
    "ClusterConditionChanged",
    "ClusterTokenSynced",
    "ConfigError",
    "Event",
    "Expectations",
    "FailoverCompleted",
    "Fault",
    "FaultInjected",
    "FaultKind",
    "ImpersonationAccountEnsured",
    "Node",
    "RequestCompleted",
    "RequestKind",
    "Scenario",
    "Server",
    "ServiceTime",
    "StreamBroken",
    "StreamEnded",
    "StreamKind",
    "Summariser",
    "TokenReviewed",
    "TraceWriter",
    "TunnelClosed",
    "TunnelOpened",
    "User",
    "Verb",
    "WorkloadEntry",
    "availability",
    "event",
    "event_types",
    "fault_windows",
    "parse_event",
    "parse_trace",
    "quantile",
    "read_trace",
    "succeeded",
    "summarise",
    "write_trace",
]

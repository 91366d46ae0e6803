"""corral's SimPy model of Rancher-style multi-cluster management: scenario in, trace out.

Built from the same scenario file as the reference implementation, it predicts latency,
availability and failover times at scales no machine can host, and writes the shared trace events
(`corral.model.trace`) so the same checks and summaries apply to simulated and measured runs.

    corral sim run fixtures/scenarios/alice-au.yaml --seed 1 --out reports/alice-au/sim-seed1
    corral sim sweep fixtures/scenarios/smoke.yaml --grid rtt_ms=50,150,300 --out reports/sweep

Parts are named after what they model: `tunnel` (agents, sessions, keepalive), `dialer` (the
server's dial policy), `proxy` (authentication proxy, impersonation), `ace` (ACE and direct
paths), `webhook` (kube-api-auth), `apiserver` (service times, priority and fairness),
`controller` (health tick), `server`, `network`, `faults`, `users` (workload). `build` assembles
them, `run` writes a run's files, `plots` draws traces, `sweep` runs grids, `cli` is the command
line. It imports only `corral.model` of corral, and needs the ``sim`` extra (SimPy, numpy,
matplotlib, Dask, tqdm); the package itself imports none of them until a name below is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.sim.build import Simulation
    from corral.sim.run import RunResult, run_scenario

__all__ = ["RunResult", "Simulation", "run_scenario"]

_HOMES = {"RunResult": "corral.sim.run", "Simulation": "corral.sim.build", "run_scenario": "corral.sim.run"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)

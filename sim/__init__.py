"""corral's SimPy model of Rancher-style multi-cluster management: scenario in, trace out.

Built from the same scenario file as the reference implementation, it predicts latency,
availability and failover times at scales no machine can host, and writes the shared trace events
(`corral.model.trace`) so the same checks and summaries apply to simulated and measured runs.

    python -m sim run fixtures/scenarios/alice-au.yaml --seed 1 --out reports/alice-au/sim-seed1
    python -m sim sweep fixtures/scenarios/smoke.yaml --grid rtt_ms=50,150,300 --out reports/sweep

Parts are named after what they model: `tunnel` (agents, sessions, keepalive), `dialer` (the
server's dial policy), `proxy` (authentication proxy, impersonation), `ace` (ACE and direct
paths), `webhook` (kube-api-auth), `apiserver` (service times, priority and fairness),
`controller` (health tick), `server`, `network`, `faults`, `users` (workload). `build` assembles
them, `run` writes a run's files, `summary`/`plots` read traces, `sweep` runs grids. It imports
only `corral.model` of corral.
"""

from sim.build import Simulation
from sim.run import RunResult, run_scenario

__all__ = ["RunResult", "Simulation", "run_scenario"]

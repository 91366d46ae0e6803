"""Load runs on real topologies: locust traffic over WAN links, faults on the timeline, checks after.

`run_load` drives one run (see `corral.load.runner`); `corral load run` is its command. The pieces
stand alone: `plan` (targets and credentials from a topology), `faults` (the timeline and the
process-fault interface), `writes` (nothing lost), `gate` (SLOs).
"""

from corral.load.faults import CliProcessFaults, FaultError, ProcessFaults, RunFolderFaults, Timeline
from corral.load.gate import Verdict, gate, kubernetes_slos
from corral.load.plan import Bounds, Plan, Target, build_plan, read_topology, topology_from_cluster_dir
from corral.load.runner import LoadResult, LoadSettings, run_load
from corral.load.writes import Finding, WriteReport, check_writes, read_write_logs

__all__ = [
    "Bounds",
    "CliProcessFaults",
    "FaultError",
    "Finding",
    "LoadResult",
    "LoadSettings",
    "Plan",
    "ProcessFaults",
    "RunFolderFaults",
    "Target",
    "Timeline",
    "Verdict",
    "WriteReport",
    "build_plan",
    "check_writes",
    "gate",
    "kubernetes_slos",
    "read_topology",
    "read_write_logs",
    "run_load",
    "topology_from_cluster_dir",
]

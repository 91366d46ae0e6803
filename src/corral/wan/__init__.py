"""WAN links between a scenario's regions on a local toxiproxy server, and topologies routed through them.

    with ToxiproxyServer(binary, run_dir) as client:
        wan = Wan(client, scenario)
        endpoints = rewrite(wan, scenario, json.loads(Path("RUN/topology.json").read_text()))
        wan.apply(fault)      # a latency or partition fault of the scenario

Each link is a toxiproxy proxy per (from-region -> endpoint) with RTT/2 of latency per direction;
`corral.load` drives runs over them.
"""

from corral.wan.endpoints import Endpoints, rewrite
from corral.wan.links import HOLD_MS, PartitionMode, Route, Wan, split_host_port
from corral.wan.toxiproxy import (
    Proxy,
    Toxic,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyServer,
    start_in_group,
)

__all__ = [
    "HOLD_MS",
    "Endpoints",
    "PartitionMode",
    "Proxy",
    "Route",
    "Toxic",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyServer",
    "Wan",
    "rewrite",
    "split_host_port",
    "start_in_group",
]

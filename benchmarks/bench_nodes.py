"""Benchmark of real nodes: build cost, time to a Ready node and a Running Pod, memory and CPU per node.

Brings up one cluster of real nodes (``--nodes N``: a control-plane node and N-1 workers) next to
the smoke scenario's virtual clusters, then measures: the bring-up; a node restarted from cold
(containerd and kubelet started, images already imported) until its Node is Ready; Pods created
until Running (scheduled by kube-scheduler, sandbox and container by containerd); the resident
memory and idle CPU of each node's kubelet and containerd, and of everything in its cgroups.
From the memory left it estimates how many more real nodes this machine holds beside the smoke
topology. Needs root (real nodes); results as JSON in ``reports/bench/nodes.json`` and Markdown.

    python benchmarks/bench_nodes.py [--nodes 3] [--pods 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from corral.bundled import scenario_path
from corral.controlplane import build, hostnet, images, nodes
from corral.controlplane.local import LocalProvider
from corral.controlplane.processes import read_state
from corral.k8s import KubeClient
from corral.model import Scenario

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "bench" / "nodes.json"
MIB = 1024 * 1024


def real_scenario(count: int) -> Scenario:
    nodes_ = [{"name": "bn-cp", "roles": ["controlplane", "etcd"]}]
    nodes_ += [{"name": f"bn-w{i}", "roles": ["worker"]} for i in range(1, count)]
    return Scenario.from_dict(
        {
            "name": "bench-nodes",
            "node_mode": "real",
            "regions": ["us"],
            "clusters": [{"name": "c-bench", "region": "us", "nodes": nodes_}],
        }
    )


def build_numbers() -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in build.NODES:
        item = build.component(name)
        stamp = build.output_dir(item) / f".{name}.stamp"
        if stamp.is_file():
            result[name] = json.loads(stamp.read_text()).get("seconds")
    return result


def wait(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def node_restart_to_ready(client: KubeClient, run_dir: Path, node: str) -> float:
    nodes.stop_node(run_dir, node)
    wait(lambda: not nodes.node_ready(client, node), 120, f"{node} NotReady")
    started = time.monotonic()
    nodes.start_node(run_dir, node)
    wait(lambda: nodes.node_ready(client, node), 120, f"{node} Ready")
    return time.monotonic() - started


def pod_to_running(client: KubeClient, namespace: str) -> float:
    name = f"p-{uuid.uuid4().hex[:6]}"
    spec = {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "c",
                    "image": images.CORRAL_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                }
            ],
        },
    }
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    started = time.monotonic()
    client.create(f"/api/v1/namespaces/{namespace}/pods", spec)
    wait(lambda: client.get(path).get("status", {}).get("phase") == "Running", 120, f"pod {name} Running")
    return time.monotonic() - started


def node_resources(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per node: RSS of kubelet and containerd, RSS of everything in its cgroups, idle CPU over 10 s."""
    per_node: dict[str, dict[str, float]] = {}
    procs: dict[str, list[psutil.Process]] = {}
    for record in read_state(run_dir):
        if record.node:
            proc = psutil.Process(record.pid)
            per_node.setdefault(record.node, {})[f"{record.role}_mib"] = proc.memory_info().rss / MIB
            procs.setdefault(record.node, []).append(proc)
    for proc_list in procs.values():
        for proc in proc_list:
            proc.cpu_percent(None)
    time.sleep(10)
    ledger = hostnet.Ledger.load(run_dir)
    for node, proc_list in procs.items():
        per_node[node]["idle_cpu_percent_of_a_core"] = sum(p.cpu_percent(None) for p in proc_list)
        total = 0.0
        for top in ledger.cgroups:
            for pid in hostnet.cgroup_pids(f"{top}/{node}") | hostnet.cgroup_pids(f"{top}/{node}.runtime"):
                try:
                    total += psutil.Process(pid).memory_info().rss / MIB
                except psutil.Error:
                    continue
        per_node[node]["all_processes_mib"] = total
    return per_node


def control_plane_mib(run_dir: Path) -> float:
    total = 0.0
    for record in read_state(run_dir):
        if not record.node:
            try:
                total += psutil.Process(record.pid).memory_info().rss / MIB
            except psutil.Error:
                continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--pods", type=int, default=5)
    options = parser.parse_args()
    nodes.check_host()
    binaries = build.ensure_built((*build.CONTROL_PLANE, *build.NODES))
    started = time.monotonic()
    images.ensure_images(report=lambda line: print(line, file=sys.stderr))
    image_seconds = time.monotonic() - started
    result: dict[str, Any] = {
        "builds_seconds": build_numbers(),
        "images_seconds_this_run": round(image_seconds, 1),
    }
    with tempfile.TemporaryDirectory(prefix="corral-bench-nodes-") as tmp:
        smoke_dir, real_dir = Path(tmp) / "smoke", Path(tmp) / "real"
        smoke = LocalProvider(binaries=binaries, node_mode="virtual")
        real = LocalProvider(binaries=binaries, node_mode="real")
        smoke.up(Scenario.load(scenario_path()), smoke_dir)
        try:
            started = time.monotonic()
            clusters = real.up(real_scenario(options.nodes), real_dir)
            result["bring_up_seconds"] = round(time.monotonic() - started, 1)
            handle = next(iter(clusters))
            with handle.client() as client:
                workers = [n for n in handle.nodes if n != handle.nodes[0]] or list(handle.nodes)
                result["node_restart_to_ready_seconds"] = round(
                    node_restart_to_ready(client, real_dir, workers[-1]), 2
                )
                client.create("/api/v1/namespaces", {"metadata": {"name": "bench"}})
                pods = [pod_to_running(client, "bench") for _ in range(options.pods)]
                result["pod_to_running_seconds"] = {
                    "median": round(statistics.median(pods), 2),
                    "max": round(max(pods), 2),
                    "n": len(pods),
                }
                time.sleep(3)
                per_node = node_resources(real_dir)
            result["per_node"] = {n: {k: round(v, 1) for k, v in d.items()} for n, d in per_node.items()}
            base = [d["kubelet_mib"] + d["containerd_mib"] for d in per_node.values()]
            result["kubelet_plus_containerd_mib_median"] = round(statistics.median(base), 1)
            result["control_plane_mib"] = {
                "smoke_virtual": round(control_plane_mib(smoke_dir), 1),
                "real_cluster": round(control_plane_mib(real_dir), 1),
            }
            available = psutil.virtual_memory().available / MIB
            per_node_total = statistics.median(d["all_processes_mib"] for d in per_node.values())
            idle_cpu = statistics.median(d["idle_cpu_percent_of_a_core"] for d in per_node.values())
            result["available_mib_with_smoke_and_real_up"] = round(available)
            result["more_nodes_by_memory"] = int(available * 0.8 // max(per_node_total, 1))
            result["nodes_by_idle_cpu"] = int(psutil.cpu_count() * 100 * 0.5 // max(idle_cpu, 0.1))
        finally:
            real.down(real_dir)
            smoke.down(smoke_dir)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {json.dumps(value)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

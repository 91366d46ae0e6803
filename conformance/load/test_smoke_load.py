"""A short load run on real kube-apiservers: locust (a master and two workers) over toxiproxy links,
the link faults of the timeline, nothing lost, SLO gates, and the run's own exit status.

The run drives fixtures/scenarios/load-smoke.yaml (the smoke scenario's clusters, the direct path)
at a time scale of 0.1: about 20 s of traffic, bounded by time and request count. What holds the
verdicts is ordering and lower bounds (a request caught by the partition completes only after the
heal; a slowed link adds at least its round-trip time), never the speed of this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.controlplane.clusters import ClusterSet
from corral.load import check_writes, read_write_logs
from corral.model import FaultInjected, RequestCompleted, Scenario, read_trace

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "fixtures" / "scenarios" / "load-smoke.yaml"
CORRAL = [sys.executable, "-c", "from corral.cli import main; main()"]

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def topology_file(cluster_set: ClusterSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario = Scenario.load(SCENARIO)
    missing = [c.name for c in scenario.clusters if c.name not in cluster_set.clusters]
    if missing:
        pytest.fail(f"the session's clusters lack {missing} of {SCENARIO.name}: run with the smoke scenario")
    topology = {
        "clusters": {
            c.name: {
                "id": c.name,
                "api_server": cluster_set[c.name].server,
                "admin_kubeconfig": str(cluster_set[c.name].kubeconfig),
            }
            for c in scenario.clusters
        },
        "users": {},
        "processes": [],
    }
    path = tmp_path_factory.mktemp("load") / "topology.json"
    path.write_text(json.dumps(topology))
    return path


def load_run(scenario: Path, topology: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CORRAL, "load", "run", str(scenario), "--topology", str(topology), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=dict(os.environ),
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def smoke(topology_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("smoke-load")
    done = load_run(
        SCENARIO,
        topology_file,
        out,
        "--time-scale",
        "0.1",
        "--max-seconds",
        "30",
        "--max-requests",
        "3000",
        "--workers",
        "2",
        "--users",
        "8",
    )
    return {
        "done": done,
        "out": out,
        "summary": json.loads((out / "summary.json").read_text())
        if (out / "summary.json").exists()
        else None,
    }


@pytest.mark.requirement("LOAD-003", "LOAD-004")
def test_the_smoke_load_passes_its_gates_with_nothing_lost(smoke: dict[str, Any]) -> None:
    done = smoke["done"]
    assert done.returncode == 0, done.stderr[-3000:]
    summary = smoke["summary"]
    assert summary["passed"] is True
    assert summary["paths_carried"] == ["direct"]
    writes = summary["writes"]
    assert writes["acknowledged"] > 0
    assert (writes["lost"], writes["phantom"]) == (0, 0)
    assert summary["slo"] == {"source": "scenario", "violations": [], "not_checked": []}
    assert "lost 0, phantom 0" in done.stderr


@pytest.mark.requirement("LOAD-001")
def test_every_verb_reaches_both_clusters_from_both_workers(smoke: dict[str, Any]) -> None:
    out: Path = smoke["out"]
    rows = smoke["summary"]["by_path_and_verb"]
    assert set(rows) == {
        f"direct {v}" for v in ("get", "list", "create", "update", "patch", "delete", "watch")
    }
    events = [e for e in read_trace(out / "trace.jsonl") if isinstance(e, RequestCompleted)]
    assert {e.cluster for e in events} == {"c-us", "c-au"}
    assert {e.user for e in events} == {"alice", "bob"}
    for worker in ("worker-1", "worker-2"):
        assert any(isinstance(e, RequestCompleted) for e in read_trace(out / f"trace-{worker}.jsonl")), worker
        assert (out / f"writes-{worker}.jsonl").exists()
    stats = (out / "locust_stats.csv").read_text()
    assert "direct create" in stats
    assert "Aggregated" in stats
    assert (out / "locust.html").stat().st_size > 0
    assert "Stream" in (out / "trace.jsonl").read_text()


def _window(events: list[Any], kind: str) -> tuple[float, float]:
    (applied,) = [e.t for e in events if isinstance(e, FaultInjected) and e.fault == kind and not e.lifted]
    (lifted,) = [e.t for e in events if isinstance(e, FaultInjected) and e.fault == kind and e.lifted]
    return applied, lifted


def _crosses(e: RequestCompleted) -> bool:
    return (e.user, e.cluster) in {("alice", "c-us"), ("bob", "c-au")}


@pytest.mark.requirement("LOAD-002")
def test_the_partition_held_every_request_across_the_link_until_it_healed(smoke: dict[str, Any]) -> None:
    events = list(read_trace(smoke["out"] / "trace.jsonl"))
    applied, lifted = _window(events, "partition")
    requests = [e for e in events if isinstance(e, RequestCompleted)]
    caught = [e for e in requests if _crosses(e) and applied < e.t - e.latency_seconds < lifted - 0.05]
    assert caught, "no request crossed the partitioned link"
    assert all(e.t >= lifted - 0.01 for e in caught), [(e.t, e.verb) for e in caught if e.t < lifted]
    # the same region's link stayed up: some of its requests completed during the cut
    assert any(not _crosses(e) and e.user == "bob" and applied < e.t < lifted for e in requests)


@pytest.mark.requirement("LOAD-002")
def test_the_latency_fault_slowed_the_link_by_at_least_its_round_trip_time(smoke: dict[str, Any]) -> None:
    events = list(read_trace(smoke["out"] / "trace.jsonl"))
    applied, lifted = _window(events, "latency")
    scenario = Scenario.load(SCENARIO)
    rtt = scenario.faults[0].rtt_ms / 1000  # type: ignore[operator]
    inside = [
        e
        for e in events
        if isinstance(e, RequestCompleted)
        and _crosses(e)
        and e.verb != "watch"
        and applied < e.t - e.latency_seconds
        and e.t < lifted
    ]
    assert inside, "no request crossed the slowed link"
    assert min(e.latency_seconds for e in inside) >= rtt - 0.005


@pytest.mark.requirement("LOAD-003")
def test_nothing_lost_catches_an_acknowledged_write_removed_afterwards(
    smoke: dict[str, Any], kube: Any
) -> None:
    out: Path = smoke["out"]
    records = read_write_logs(sorted(out.glob("writes-*.jsonl")))
    plan = json.loads((out / "plan.json").read_text())
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        last[(record["cluster"], record["name"])] = record
    cluster, name = next(k for k, r in last.items() if r["acked"] and r["verb"] != "delete")
    path = f"/api/v1/namespaces/{plan['namespace']}/configmaps"

    def read(c: str) -> dict[str, dict[str, str]]:
        items = kube.admin(c).list(path, label_selector=f"corral-load/run={plan['run_id']}")["items"]
        return {i["metadata"]["name"]: dict(i.get("data") or {}) for i in items}

    assert check_writes(records, read).findings == ()
    kube.admin(cluster).delete(f"{path}/{name}")
    report = check_writes(records, read)
    assert (report.lost, report.phantom) == (1, 0)
    assert f"{cluster}/{name}: an acknowledged write is gone" in str(report.findings[0])


@pytest.mark.requirement("LOAD-004")
def test_a_run_that_misses_its_slo_exits_non_zero(topology_file: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(SCENARIO.read_text())
    data["faults"] = []
    data["expectations"] = {"latency_p50_seconds": {"direct": 0.000001}}
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(data))
    done = load_run(
        strict, topology_file, tmp_path / "out", "--no-wan", "--time-scale", "0.02", "--max-seconds", "4"
    )
    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passed"] is False
    assert any("direct p50 latency" in v for v in summary["slo"]["violations"])
    assert summary["writes"]["lost"] == 0

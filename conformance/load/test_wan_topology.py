"""A whole ``corral up --wan`` topology (fixtures/scenarios/load-faults.yaml: the smoke scenario's world
with WAN links), brought up once for this module.

First the isolation and impersonation checks of conformance/server/test_topology.py run again while
a locust run drives the scenario's traffic (without its faults) in another process: they must give
the same verdicts, and the load run loses nothing. Then the scenario's own fault run: a frozen
cluster agent, a cut link that the users' requests and the agents' tunnels both cross, and a server
replica killed and started again by `corral fault server`; nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.server import test_topology as checks
from conformance.server.test_topology import Topology
from corral.controlplane import build
from corral.k8s import wait_for
from corral.model import FaultInjected, RequestCompleted, Scenario, read_trace
from corral.run.up import down, up
from corral.wan import ToxiproxyClient

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "fixtures" / "scenarios" / "load-faults.yaml"
CORRAL = [sys.executable, "-c", "from corral.cli import main; main()"]

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, corral_binaries: build.Built) -> Iterator[Topology]:
    run_dir = tmp_path_factory.mktemp("wan-topology")
    doc = up(SCENARIO, run_dir, binaries=corral_binaries, detached=False, wan=True)
    try:
        yield Topology(
            run_dir=run_dir, doc=doc, kubectl=corral_binaries["kubectl"], scenario=Scenario.load(SCENARIO)
        )
    finally:
        down(run_dir)


def load_command(scenario: Path, topology: Topology, out: Path, *args: str) -> list[str]:
    return [
        *CORRAL, "load", "run", str(scenario), "--topology", str(topology.run_dir / "topology.json"),
        "--out", str(out), *args,
    ]  # fmt: skip


def requests_of(out: Path) -> list[RequestCompleted]:
    events: list[RequestCompleted] = []
    for path in sorted(out.glob("trace-*.jsonl")):
        events.extend(e for e in read_trace(path) if isinstance(e, RequestCompleted))
    return events


@pytest.mark.requirement("LOAD-005")
def test_every_connection_crosses_its_link(topology: Topology) -> None:
    wan = topology.doc["wan"]
    carried = {what: link["link"] for link in wan["links"] for what in link["carries"]}
    assert carried["tunnel c-au"] == "us<->au"
    assert carried["tunnel c-us"] == "us<->us"
    assert carried["dial c-au"] == "us<->au"
    assert carried["user alice"] == "us<->au"
    assert carried["user bob"] == "us<->us"
    entrances = {link["listen"] for link in wan["links"]}
    for user in ("alice", "bob"):
        config = yaml.safe_load(Path(topology.doc["users"][user]["kubeconfig"]).read_text())
        servers = {c["cluster"]["server"].split("/")[2] for c in config["clusters"]}
        assert servers <= entrances, (user, servers)
    credentials = sorted((topology.run_dir / "agents").glob("*/credentials/url"))
    assert credentials
    assert {p.read_text().split("/")[2] for p in credentials} <= entrances
    host, _, port = wan["toxiproxy"].rpartition(":")
    assert set(ToxiproxyClient(host=host, port=int(port)).proxies()) == {
        link["name"] for link in wan["links"]
    }


@pytest.mark.requirement("LOAD-006", "PROXY-022", "PROXY-009", "PROXY-008", "IMP-001")
def test_isolation_and_impersonation_verdicts_hold_under_load(topology: Topology, tmp_path: Path) -> None:
    data = yaml.safe_load(SCENARIO.read_text())
    data["faults"] = []
    calm = tmp_path / "calm.yaml"
    calm.write_text(yaml.safe_dump(data))
    out = tmp_path / "load"
    log = (tmp_path / "load.log").open("w")
    command = load_command(calm, topology, out, "--time-scale", "0.1", "--max-seconds", "20", "--users", "8")
    load = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 90
        while not requests_of(out) and load.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert requests_of(out), (
            "the load run sent nothing before the checks: " + (tmp_path / "load.log").read_text()
        )
        before = len(requests_of(out))
        checks.test_isolation_between_users_and_group_bindings(topology)
        checks.test_as_is_allowed_to_the_admin_and_refused_to_a_user(topology)
        checks.test_header_attacks_gain_nothing(topology)
        checks.test_the_five_objects_after_a_first_request(topology)
        checks.test_auth_can_i_list_through_the_proxy(topology)
        during = len(requests_of(out)) - before
        assert load.wait(timeout=180) in (0, 1), (tmp_path / "load.log").read_text()[-3000:]
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
        log.close()
    assert during > 0, "no request of the load completed while the checks ran"
    summary = json.loads((out / "summary.json").read_text())
    assert {"proxy", "direct"} <= set(summary["paths_carried"])
    assert summary["writes"]["acknowledged"] > 0
    assert (summary["writes"]["lost"], summary["writes"]["phantom"]) == (0, 0)


@pytest.fixture(scope="module")
def fault_run(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fault-load")
    done = subprocess.run(
        load_command(SCENARIO, topology, out, "--fault-dir", str(topology.run_dir), "--time-scale", "0.1",
                     "--max-seconds", "30", "--users", "48"),
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    return {"done": done, "out": out, "summary": summary}


@pytest.mark.requirement("LOAD-003", "LOAD-007")
def test_the_fault_run_loses_nothing(fault_run: dict[str, Any], topology: Topology) -> None:
    done, summary = fault_run["done"], fault_run["summary"]
    assert summary is not None, done.stderr[-3000:]
    assert summary["faults"] == {"errors": [], "skipped": []}
    writes = summary["writes"]
    assert writes["acknowledged"] > 0
    assert (writes["lost"], writes["phantom"]) == (0, 0), writes["findings"]
    assert "lost 0, phantom 0" in done.stderr
    run_trace = list(read_trace(topology.run_dir / "trace.jsonl"))
    frozen = [e for e in run_trace if isinstance(e, FaultInjected) and e.fault == "freeze-cluster-agent"]
    assert [e.lifted for e in frozen] == [False, True]


@pytest.mark.requirement("LOAD-002", "LOAD-005")
def test_the_cut_link_held_the_tunnel_of_the_far_cluster(fault_run: dict[str, Any]) -> None:
    events = list(read_trace(fault_run["out"] / "trace.jsonl"))
    (applied,) = [
        e.t for e in events if isinstance(e, FaultInjected) and e.fault == "partition" and not e.lifted
    ]
    (lifted,) = [e.t for e in events if isinstance(e, FaultInjected) and e.fault == "partition" and e.lifted]
    requests = [e for e in events if isinstance(e, RequestCompleted) and e.user == "bob"]
    # bob is in the server's region: of his requests, only those to c-au cross the cut link, inside
    # the tunnel its agents dialled from Australia
    tunnel = [e for e in requests if e.path == "proxy" and e.cluster == "c-au"]
    caught = [e for e in tunnel if applied < e.t - e.latency_seconds < lifted - 0.05]
    local = [e for e in requests if e.cluster == "c-us" and applied < e.t < lifted]
    assert caught, "no request of bob's went through c-au's tunnel during the cut"
    assert all(e.t >= lifted - 0.01 for e in caught), [(e.t, e.verb, e.status) for e in caught]
    assert local, "nothing of bob's reached c-us during the cut"


@pytest.mark.requirement("LOAD-007")
def test_a_killed_server_replica_starts_again(topology: Topology, fault_run: dict[str, Any]) -> None:
    def fault(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [*CORRAL, "fault", "server", *args, "--dir", str(topology.run_dir)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)

    missing = fault("stop", "--replica", "7")
    assert missing.returncode != 0
    assert "no server replica 7" in missing.stderr
    for action in ("kill", "start"):
        done = fault(action, "--replica", "0")
        assert done.returncode == 0, done.stderr
        assert f"{action}: server/0" in done.stderr
        if action == "start":
            wait_for(
                lambda: checks.proxy_get(topology, topology.admin_token, "c-us", "/version") == 200,
                timeout_seconds=120,
                what="the restarted server to proxy to c-us again",
            )
    events = [e for e in read_trace(topology.run_dir / "trace.jsonl") if isinstance(e, FaultInjected)]
    server = [(e.fault, e.lifted) for e in events if e.target == "server/0"]
    assert server == [("kill-server", False), ("kill-server", True)]

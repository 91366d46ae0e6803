"""SLO gating of load runs: the scenario's expectations on the carried paths, else Kubernetes' SLOs."""

from __future__ import annotations

from typing import Any

from corral.load.gate import gate, kubernetes_slos
from corral.model import FailoverCompleted, FaultInjected, RequestCompleted, Scenario

BASE: dict[str, Any] = {
    "name": "g",
    "regions": ["us"],
    "clusters": [{"name": "c1", "region": "us", "nodes": [{"name": "n1", "roles": ["controlplane"]}]}],
    "users": [{"name": "a", "region": "us"}],
}


def scenario(expectations: dict[str, Any] | None = None) -> Scenario:
    return Scenario.from_dict({**BASE, **({"expectations": expectations} if expectations else {})})


def request(
    latency: float, *, path: str = "direct", verb: str = "get", status: int = 200, t: float = 1.0
) -> RequestCompleted:
    return RequestCompleted(
        t=t, path=path, cluster="c1", user="a", verb=verb, status=status, latency_seconds=latency
    )


def test_the_scenarios_expectations_gate_the_run() -> None:
    strict = scenario({"availability": {"direct": 0.99}, "latency_p95_seconds": {"direct": 0.5}})
    good = [request(0.1) for _ in range(100)]
    verdict = gate(strict, good, paths=["direct"])
    assert verdict.passed
    assert verdict.slo_source == "scenario"
    slow = good[:90] + [request(2.0) for _ in range(10)]
    assert [v.check for v in gate(strict, slow, paths=["direct"]).violations] == ["slo-latency"]
    failing = good[:95] + [request(0.1, status=503) for _ in range(5)]
    assert [v.check for v in gate(strict, failing, paths=["direct"]).violations] == ["slo-availability"]


def test_expectations_on_paths_the_run_did_not_carry_are_reported_not_judged() -> None:
    both = scenario(
        {
            "availability": {"direct": 0.9, "proxy": 0.99},
            "latency_p50_seconds": {"proxy": 0.2},
            "failover_max_seconds": 30,
        }
    )
    verdict = gate(both, [request(0.1)], paths=["direct"])
    assert verdict.passed
    assert verdict.not_checked == (
        "latency p50 on proxy",
        "availability on proxy",
        "failover bound (the run did not carry the proxy path)",
    )
    # no latency objective left on the carried paths: Kubernetes' SLOs apply
    assert verdict.slo_source == "kubernetes"


def test_without_latency_expectations_kubernetes_slos_apply() -> None:
    fine = [request(0.2) for _ in range(100)] + [request(20.0, verb="list") for _ in range(10)]
    verdict = gate(scenario(), fine, paths=["direct"])
    assert verdict.passed
    assert verdict.slo_source == "kubernetes"
    slow_gets = [request(0.2) for _ in range(95)] + [request(1.5) for _ in range(5)]
    messages = [str(v) for v in gate(scenario(), slow_gets, paths=["direct"]).violations]
    assert len(messages) == 1
    assert "direct single-object calls p99" in messages[0]
    slow_lists = [request(31.0, verb="list") for _ in range(3)]
    assert "lists p99" in str(kubernetes_slos(slow_lists, paths=["direct"])[0])
    # watches are streams, failures are not latencies, other paths are not judged
    others = [request(100.0, verb="watch"), request(5.0, status=500), request(5.0, path="ace")]
    assert kubernetes_slos(others, paths=["direct"]) == []


def test_the_failover_bound_gates_runs_that_carry_the_proxy_path() -> None:
    bounded = scenario({"failover_max_seconds": 10})
    lost = FaultInjected(t=5.0, fault="kill-cluster-agent", target="c1")
    never = gate(bounded, [request(0.1, path="proxy"), lost], paths=["proxy"])
    assert [v.check for v in never.violations] == ["failover"]
    slow = FailoverCompleted(t=30.0, cluster="c1", from_agent="a1", to_agent="a2", duration_seconds=25.0)
    assert {
        v.check for v in gate(bounded, [request(0.1, path="proxy"), lost, slow], paths=["proxy"]).violations
    } == {"failover", "slo-failover"}
    quick = FailoverCompleted(t=8.0, cluster="c1", from_agent="a1", to_agent="a2", duration_seconds=3.0)
    assert gate(bounded, [request(0.1, path="proxy"), lost, quick], paths=["proxy"]).passed

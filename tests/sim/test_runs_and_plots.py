"""Runs of several seeds, compressed and sampled traces, and the data the plots draw."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.checks import check_all
from corral.model import (
    AvailabilityBin,
    Event,
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    Scenario,
    Summariser,
    TunnelClosed,
    TunnelOpened,
    read_trace,
)
from corral.sim.cli import main
from corral.sim.plots import outage_spans, plotted_fractions, timeline_clusters, worst_clusters
from corral.sim.recorder import RequestSample
from corral.sim.run import run_scenario, run_seeds

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"


def test_several_seeds_give_a_summary_of_their_spread(tmp_path: Path) -> None:
    smoke = Scenario.load(SCENARIOS / "smoke.yaml")
    result = run_seeds(smoke, seeds=[1, 2, 3], out=tmp_path, plots=False, trace=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == result.summary
    assert (summary["seeds"], summary["seed_count"]) == ([1, 2, 3], 3)
    for seed in (1, 2, 3):
        single = json.loads((tmp_path / f"seed-{seed}" / "summary.json").read_text())
        assert (single["seed"], single["seed_count"]) == (seed, 1)
        assert (
            summary["per_seed"][str(seed)]["paths"]["proxy"]["requests"]
            == single["paths"]["proxy"]["requests"]
        )
    counts = [result.runs[seed].summary["paths"]["proxy"]["requests"] for seed in (1, 2, 3)]
    requests = summary["spread"]["paths"]["proxy"]["requests"]
    assert requests["n"] == 3
    assert requests["mean"] == pytest.approx(sum(counts) / 3)
    assert (requests["min"], requests["max"]) == (min(counts), max(counts))
    assert len(set(counts)) > 1  # different seeds draw different arrivals
    assert requests["stdev"] > 0


def test_the_run_command_runs_n_seeds_from_the_first(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(SCENARIOS / "smoke.yaml"),
            "--seed",
            "4",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "seed-4", "seed-5", "summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [4, 5]


def test_a_compressed_trace_holds_the_same_events_and_the_checks_read_it(tmp_path: Path) -> None:
    outage = Scenario.load(SCENARIOS / "server-outage.yaml")
    run_scenario(outage, seed=1, out=tmp_path / "plain", plots=False)
    run_scenario(outage, seed=1, out=tmp_path / "packed", plots=False, compress=True)
    plain = list(read_trace(tmp_path / "plain" / "trace.jsonl"))
    packed = list(read_trace(tmp_path / "packed" / "trace.jsonl.gz"))
    assert packed == plain
    assert check_all(outage, packed) == check_all(outage, plain)
    run_info = json.loads((tmp_path / "packed" / "run.json").read_text())
    assert run_info["trace"] == {
        "file": "trace.jsonl.gz",
        "compressed": True,
        "requests_kept_one_in": 1,
        "events_written": len(plain),
    }


def test_a_sampled_trace_keeps_one_request_in_n_and_every_other_event(tmp_path: Path) -> None:
    scenario = Scenario.load(SCENARIOS / "agent-loss-rke1.yaml")
    full = run_scenario(scenario, seed=1, out=tmp_path / "full", plots=False)
    sampled = run_scenario(scenario, seed=1, out=tmp_path / "sampled", plots=False, sample_requests=4)
    everything = list(read_trace(tmp_path / "full" / "trace.jsonl"))
    kept = list(read_trace(tmp_path / "sampled" / "trace.jsonl"))
    requests = [e for e in everything if isinstance(e, RequestCompleted)]
    assert [e for e in kept if isinstance(e, RequestCompleted)] == requests[::4]
    assert [e for e in kept if not isinstance(e, RequestCompleted)] == [
        e for e in everything if not isinstance(e, RequestCompleted)
    ]
    # The summary counts every request, and says what the trace beside it holds.
    assert sampled.summary["paths"] == full.summary["paths"]
    assert sampled.summary["trace_sampling"] == {"requests_kept_one_in": 4, "events_written": len(kept)}
    assert "trace_sampling" not in full.summary
    assert json.loads((tmp_path / "sampled" / "run.json").read_text())["trace"]["requests_kept_one_in"] == 4


def test_request_sampling_needs_a_positive_rate() -> None:
    seen: list[Event] = []
    with pytest.raises(ValueError, match="one in n >= 1"):
        RequestSample(seen.append, one_in=0)
    with pytest.raises(ValueError, match="sample_requests must be >= 1"):
        run_scenario(Scenario.load(SCENARIOS / "smoke.yaml"), seed=1, sample_requests=0)


def _bins(*cells: tuple[int, int]) -> list[AvailabilityBin]:
    return [AvailabilityBin(10.0 * i, 10.0, served, total) for i, (served, total) in enumerate(cells)]


def test_empty_bins_are_drawn_as_outages_not_carried_over() -> None:
    series = _bins((5, 5), (0, 0), (0, 0), (2, 4), (0, 0), (3, 3))
    assert plotted_fractions(series) == [1.0, 0.0, 0.0, 0.5, 0.0, 1.0]
    assert outage_spans(series) == [(10.0, 30.0), (40.0, 50.0)]
    assert outage_spans(_bins((1, 1))) == []


def _request(t: float, cluster: str, status: int) -> RequestCompleted:
    return RequestCompleted(
        t=t, path="proxy", cluster=cluster, user="u", verb="get", status=status, latency_seconds=0.1
    )


def test_the_tunnel_timeline_has_rows_for_clusters_with_agents_only() -> None:
    summariser = Summariser()
    for item in [
        TunnelOpened(t=0.1, cluster="c-quiet", agent="cluster-agent"),
        TunnelOpened(t=0.2, cluster="c-hit", agent="cluster-agent"),
        FaultInjected(t=5.0, fault="server-down", target="server"),
        FaultInjected(t=6.0, fault="partition", target="us<->eu"),
        FaultInjected(t=7.0, fault="kill-cluster-agent", target="c-hit"),
        TunnelClosed(t=7.1, cluster="c-hit", agent="cluster-agent"),
        FailoverCompleted(
            t=9.0, cluster="c-other", from_agent="cluster-agent", to_agent="x", duration_seconds=1.0
        ),
    ]:
        summariser.add(item)
    # The server and the link are fault targets, not clusters; c-other has no tunnel to draw.
    assert timeline_clusters(summariser) == ["c-hit", "c-quiet"]
    assert timeline_clusters(summariser, limit=1) == ["c-hit"]


def test_the_worst_clusters_are_those_with_the_most_failed_requests() -> None:
    summariser = Summariser()
    statuses = {"a": [200] * 9 + [503], "b": [503, 503, 200], "c": [200] * 4, "d": [0, 0, 200, 200, 200, 200]}
    for cluster, codes in statuses.items():
        for index, status in enumerate(codes):
            summariser.add(_request(float(index), cluster, status))
    ranked = worst_clusters(summariser, "proxy")
    assert [(r.cluster, r.failed, r.requests) for r in ranked] == [("b", 2, 3), ("d", 2, 6), ("a", 1, 10)]
    assert math.isclose(ranked[0].availability, 1 / 3)
    assert worst_clusters(summariser, "proxy", count=1)[0].cluster == "b"
    assert worst_clusters(summariser, "ace") == []

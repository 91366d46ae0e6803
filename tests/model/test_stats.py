"""The statistics every part of corral counts with: quantiles, availability and the run summary."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.model import (
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    Summariser,
    TunnelOpened,
    availability,
    availability_series,
    quantile,
    seed_spread,
    succeeded,
    summarise,
)


def test_quantiles_interpolate_linearly_between_the_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert quantile(values, 50) == 2.5
    assert quantile(values, 95) == pytest.approx(3.85)
    assert quantile(values, 0) == 1.0
    assert quantile(values, 100) == 4.0
    assert quantile([7.0], 99) == 7.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 50, presorted=True) == 2.5


@pytest.mark.parametrize(
    ("values", "percent", "message"),
    [
        ([], 50.0, "quantile of no values"),
        ([1.0], -1.0, "quantile: percent must be within [0, 100], got -1.0"),
        ([1.0], 100.5, "quantile: percent must be within [0, 100], got 100.5"),
    ],
)
def test_a_quantile_of_nothing_or_beyond_the_range_is_an_error(
    values: list[float], percent: float, message: str
) -> None:
    with pytest.raises(ValueError, match=r"^" + message.replace("[", r"\[").replace("]", r"\]") + "$"):
        quantile(values, percent)


@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=60),
    percent=st.floats(min_value=0, max_value=100),
)
def test_quantiles_are_numpys_default_to_the_last_bit(values: list[float], percent: float) -> None:
    numpy = pytest.importorskip("numpy")
    assert quantile(values, percent) == float(numpy.percentile(numpy.asarray(values), percent))


@given(
    values=st.lists(st.floats(min_value=0, max_value=1e3, allow_nan=False), min_size=1, max_size=40),
    low=st.floats(min_value=0, max_value=100),
    high=st.floats(min_value=0, max_value=100),
)
def test_quantiles_grow_with_the_percent_and_stay_within_the_sample(
    values: list[float], low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    assert min(values) <= quantile(values, low) <= quantile(values, high) <= max(values)


def test_success_is_a_2xx_or_3xx_answer_and_availability_needs_requests() -> None:
    assert [succeeded(s) for s in (0, 199, 200, 304, 399, 400, 429, 503)] == [
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert availability(3, 4) == 0.75
    with pytest.raises(ValueError, match="availability of 0 served out of 0 requests is undefined"):
        availability(0, 0)
    with pytest.raises(ValueError, match="availability of 5 served out of 4 requests is undefined"):
        availability(5, 4)


def _request(t: float, path: str, status: int, latency: float) -> RequestCompleted:
    return RequestCompleted(
        t=t, path=path, cluster="c", user="u", verb="get", status=status, latency_seconds=latency
    )


def test_a_trace_summarises_per_access_path_with_failovers_and_event_counts() -> None:
    trace = [
        TunnelOpened(t=0.5, cluster="c", agent="cluster-agent"),
        _request(1.0, "proxy", 200, 0.4),
        _request(2.0, "proxy", 503, 9.0),
        _request(3.0, "proxy", 200, 0.2),
        _request(4.0, "proxy", 0, 30.0),
        _request(5.0, "ace", 200, 0.1),
        FaultInjected(t=6.0, fault="kill-cluster-agent", target="c"),
        FailoverCompleted(
            t=8.0, cluster="c", from_agent="cluster-agent", to_agent="node-agent/n", duration_seconds=2.0
        ),
        FailoverCompleted(
            t=9.0, cluster="c", from_agent="cluster-agent", to_agent="node-agent/n", duration_seconds=3.0
        ),
    ]
    summary = summarise(trace, scenario="hand-made")
    assert summary["scenario"] == "hand-made"
    assert list(summary["paths"]) == ["ace", "proxy"]
    proxy = summary["paths"]["proxy"]
    assert proxy["requests"] == 4
    assert (proxy["served"], proxy["failed"], proxy["availability"]) == (2, 2, 0.5)
    assert proxy["statuses"] == {"0": 1, "200": 2, "503": 1}
    assert proxy["latency_seconds"]["p50"] == pytest.approx(0.3)
    assert proxy["latency_seconds"]["mean"] == pytest.approx(0.3)
    assert proxy["latency_seconds"]["max"] == 0.4
    assert summary["paths"]["ace"]["availability"] == 1.0
    failovers = summary["failovers"]
    assert (failovers["count"], failovers["max_seconds"], failovers["mean_seconds"]) == (2, 3.0, 2.5)
    assert failovers["each"][0] == {
        "t": 8.0,
        "cluster": "c",
        "from": "cluster-agent",
        "to": "node-agent/n",
        "seconds": 2.0,
    }
    assert summary["events"] == {
        "FailoverCompleted": 2,
        "FaultInjected": 1,
        "RequestCompleted": 5,
        "TunnelOpened": 1,
    }


def test_a_path_whose_requests_all_failed_has_no_latency_figures() -> None:
    summary = summarise([_request(1.0, "direct", 0, 30.0)])
    direct = summary["paths"]["direct"]
    assert direct["availability"] == 0.0
    assert "latency_seconds" not in direct
    assert summary["failovers"]["max_seconds"] is None
    assert direct["failed"] == 1


def test_requests_are_binned_by_start_time_and_an_empty_bin_stays_empty() -> None:
    # Served every second until 35 s; a request sent at 35 s times out at 65 s; nothing starts from
    # 40 s to 60 s (every client is stuck); served again from 60 s.
    trace = [_request(t + 0.1, "proxy", 200, 0.1) for t in range(35)]
    trace.append(_request(65.0, "proxy", 0, 30.0))
    trace += [_request(t + 0.1, "proxy", 200, 0.1) for t in range(60, 80)]
    summariser = Summariser()
    for item in sorted(trace, key=lambda e: e.t):
        summariser.add(item)
    series = summariser.availability_series("proxy")
    assert [b.start for b in series] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    assert [(b.served, b.requests) for b in series] == [
        (10, 10),
        (10, 10),
        (10, 10),
        (5, 6),  # the timed-out request counts when it was sent, not when it gave up
        (0, 0),
        (0, 0),
        (10, 10),
        (10, 10),
    ]
    assert [b.fraction for b in series[3:6]] == [pytest.approx(5 / 6), None, None]
    times, fractions = summariser.availability_timeline("proxy")
    assert times[4:6] == [40.0, 50.0]
    assert fractions[4:6] == [0.0, 0.0]


def test_an_availability_series_fills_the_bins_between_first_and_last() -> None:
    series = availability_series({2: [1, 2], 5: [3, 3]}, bin_seconds=5.0)
    assert [(b.start, b.served, b.requests) for b in series] == [
        (10.0, 1, 2),
        (15.0, 0, 0),
        (20.0, 0, 0),
        (25.0, 3, 3),
    ]
    assert availability_series({}, bin_seconds=5.0) == []
    widened = availability_series({1: [1, 1]}, bin_seconds=1.0, first=0, last=2)
    assert [b.requests for b in widened] == [0, 1, 0]


def test_per_region_and_per_cluster_counts_follow_the_target_cluster() -> None:
    summariser = Summariser(cluster_regions={"a": "us", "b": "eu"}, cluster_bin_seconds=60.0)
    for item in [
        RequestCompleted(
            t=1.0, path="proxy", cluster="a", user="u", verb="get", status=200, latency_seconds=0.5
        ),
        RequestCompleted(
            t=2.0, path="proxy", cluster="b", user="u", verb="get", status=503, latency_seconds=1
        ),
        RequestCompleted(
            t=70.0, path="proxy", cluster="b", user="u", verb="get", status=200, latency_seconds=1
        ),
        RequestCompleted(t=3.0, path="ace", cluster="c", user="u", verb="get", status=200, latency_seconds=1),
    ]:
        summariser.add(item)
    assert summariser.regions == ["us", "eu", "?"]
    assert [(b.served, b.requests) for b in summariser.availability_series("proxy", region="eu")] == [
        (0, 1),
        *[(0, 0)] * 5,
        (1, 1),
    ]
    assert summariser.cluster_availability("proxy") == {"a": (1, 1), "b": (1, 2)}
    assert [(b.start, b.served, b.requests) for b in summariser.cluster_series("proxy", "b")] == [
        (0.0, 0, 1),
        (60.0, 1, 1),
    ]
    assert summariser.cluster_series("proxy", "c") == []


def _one_seed(seed: int, availability_value: float, p95: float | None, failovers: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"requests": 100 + seed, "availability": availability_value}
    if p95 is not None:
        entry["latency_seconds"] = {"p50": p95 / 2, "p95": p95, "p99": p95 * 2, "mean": p95 / 2}
    return {
        "seed": seed,
        "paths": {"proxy": entry},
        "failovers": {"count": failovers, "max_seconds": 2.0 * failovers or None, "mean_seconds": None},
    }


def test_the_spread_over_seeds_has_mean_stdev_min_and_max_of_each_headline_figure() -> None:
    spread = seed_spread([_one_seed(1, 0.9, 0.2, 1), _one_seed(2, 1.0, 0.4, 0), _one_seed(3, 0.8, None, 2)])
    proxy = spread["paths"]["proxy"]
    assert proxy["availability"] == {"n": 3, "mean": 0.9, "stdev": pytest.approx(0.1), "min": 0.8, "max": 1.0}
    assert proxy["requests"]["mean"] == 102.0
    # The third seed served nothing, so it has no latency: the spread is over the two that do.
    assert proxy["p95"] == {
        "n": 2,
        "mean": 0.3,
        "stdev": pytest.approx(0.141421, abs=1e-6),
        "min": 0.2,
        "max": 0.4,
    }
    assert spread["failovers"]["count"]["max"] == 2
    assert spread["failovers"]["max_seconds"]["n"] == 2
    assert spread["failovers"]["mean_seconds"] is None
    single = seed_spread([_one_seed(7, 0.5, 0.1, 0)])
    assert single["paths"]["proxy"]["availability"]["stdev"] is None
    with pytest.raises(ValueError, match="spread of no summaries"):
        seed_spread([])


class _OneEventAtATime:
    """The summariser's counting as first written: every request looked up path by path, key by key.

    `Summariser.request` keeps a path's and a cluster's counters at hand instead; both must count
    exactly the same.
    """

    def __init__(self, cluster_regions: dict[str, str]) -> None:
        self.cluster_regions = cluster_regions
        self.latencies: dict[str, list[float]] = {}
        self.totals: dict[str, int] = {}
        self.statuses: dict[str, dict[int, int]] = {}
        self.bins: dict[str, dict[int, list[int]]] = {}
        self.region_bins: dict[tuple[str, str], dict[int, list[int]]] = {}
        self.cluster_bins: dict[tuple[str, str], list[int]] = {}
        self.events: dict[str, int] = {}
        self.last_t = 0.0

    def add(self, item: RequestCompleted | TunnelOpened) -> None:
        self.events[item.type_name] = self.events.get(item.type_name, 0) + 1
        self.last_t = max(self.last_t, item.t)
        if not isinstance(item, RequestCompleted):
            return
        path, ok = item.path, succeeded(item.status)
        self.totals[path] = self.totals.get(path, 0) + 1
        statuses = self.statuses.setdefault(path, {})
        statuses[item.status] = statuses.get(item.status, 0) + 1
        if ok:
            self.latencies.setdefault(path, []).append(item.latency_seconds)
        started = max(item.t - item.latency_seconds, 0.0)
        number = int(started // 10.0)
        region = self.cluster_regions.get(item.cluster, "?")
        for cells in (self.bins.setdefault(path, {}), self.region_bins.setdefault((path, region), {})):
            cell = cells.setdefault(number, [0, 0])
            cell[0] += ok
            cell[1] += 1
        counts = self.cluster_bins.setdefault((path, item.cluster), [])
        index = 2 * int(started // 60.0)
        counts.extend([0] * max(0, index + 2 - len(counts)))
        counts[index] += ok
        counts[index + 1] += 1


_REQUESTS = st.builds(
    RequestCompleted,
    t=st.floats(0.0, 500.0),
    path=st.sampled_from(["proxy", "ace"]),
    cluster=st.sampled_from(["c-1", "c-2", "c-3"]),
    user=st.just("u"),
    verb=st.just("get"),
    status=st.sampled_from([0, 200, 204, 302, 403, 429, 500]),
    latency_seconds=st.floats(0.0, 600.0),
)
_TUNNELS = st.builds(TunnelOpened, t=st.floats(0.0, 500.0), cluster=st.just("c-1"), agent=st.just("a"))


@given(st.lists(_REQUESTS | _TUNNELS, max_size=60), st.booleans())
def test_a_request_by_its_fields_counts_as_the_event_counted_field_by_field(
    items: list[RequestCompleted | TunnelOpened], by_fields: bool
) -> None:
    regions = {"c-1": "us", "c-2": "eu"}  # c-3 counts under "?"
    summariser, reference = Summariser(cluster_regions=regions), _OneEventAtATime(regions)
    for item in items:
        reference.add(item)
        if by_fields and isinstance(item, RequestCompleted):
            summariser.request(
                t=item.t,
                path=item.path,
                cluster=item.cluster,
                status=item.status,
                latency_seconds=item.latency_seconds,
            )
        else:
            summariser.add(item)
    latencies = {path: list(values) for path, values in summariser.latencies.items() if values}
    assert latencies == reference.latencies
    assert dict(summariser.totals) == reference.totals
    assert {path: dict(counts) for path, counts in summariser.statuses.items()} == reference.statuses
    assert dict(summariser.bins) == reference.bins
    assert dict(summariser.region_bins) == reference.region_bins
    assert {key: list(counts) for key, counts in summariser.cluster_bins.items()} == reference.cluster_bins
    assert list(summariser.cluster_bins) == list(reference.cluster_bins)  # first requests first
    for path in ("proxy", "ace"):
        clusters = [cluster for on, cluster in reference.cluster_bins if on == path]
        assert list(summariser.cluster_availability(path)) == clusters
    for (path, cluster), counts in reference.cluster_bins.items():
        series = summariser.cluster_series(path, cluster)
        assert [(b.served, b.requests) for b in series] == list(zip(counts[0::2], counts[1::2], strict=True))
        assert summariser.cluster_availability(path)[cluster] == (sum(counts[0::2]), sum(counts[1::2]))
    assert dict(summariser.events) == reference.events
    assert summariser.last_t == reference.last_t
    assert summariser.summary() == summarise(items)

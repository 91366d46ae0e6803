"""The statistics every part of corral counts with: quantiles, availability and the run summary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.model import (
    FailoverCompleted,
    FaultInjected,
    RequestCompleted,
    TunnelOpened,
    availability,
    quantile,
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

"""Traces: every event round-trips through JSONL, and malformed lines are located."""

from __future__ import annotations

import dataclasses
import gzip
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import ConfigError
from corral.model import (
    Event,
    FaultInjected,
    RequestCompleted,
    TraceWriter,
    TunnelClosed,
    event_types,
    fault_windows,
    parse_event,
    read_trace,
    write_trace,
)

_SCALARS = {
    "str": st.text(max_size=20),
    "int": st.integers(min_value=-(2**31), max_value=2**31),
    "float": st.floats(allow_nan=False, allow_infinity=False, width=64),
    "bool": st.booleans(),
}


def _event_strategy(cls: type[Event]) -> st.SearchStrategy[Event]:
    return st.builds(cls, **{f.name: _SCALARS[str(f.type)] for f in dataclasses.fields(cls)})


events = st.one_of([_event_strategy(cls) for cls in sorted(event_types().values(), key=lambda c: c.__name__)])


@given(st.lists(events, max_size=20))
def test_any_sequence_of_events_round_trips(
    tmp_path_factory: pytest.TempPathFactory, items: list[Event]
) -> None:
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    write_trace(path, items)
    assert list(read_trace(path)) == items


def test_written_line_is_compact_json_with_type_first(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as writer:
        writer.write(TunnelClosed(t=2.5, cluster="c1", agent="cluster-agent", reason="EOF"))
    assert path.read_text() == (
        '{"type":"TunnelClosed","t":2.5,"cluster":"c1","agent":"cluster-agent","reason":"EOF"}\n'
    )


def test_a_writer_writes_each_event_through_unless_asked_to_batch() -> None:
    closed = TunnelClosed(t=1.0, cluster="c1", agent="cluster-agent", reason="EOF")
    through, batched = io.StringIO(), io.StringIO()
    plain, joined = TraceWriter(through), TraceWriter(batched, batch=3)
    plain.write(closed)
    joined.write(closed)
    joined.write(closed)
    assert through.getvalue().count("\n") == 1
    assert batched.getvalue() == ""
    joined.write(closed)
    assert batched.getvalue().count("\n") == 3
    with pytest.raises(ValueError, match="batch must be at least 1"):
        TraceWriter(io.StringIO(), batch=0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "t.jsonl:3: not JSON"),
        ("[1, 2]", "t.jsonl:3: an event must be a JSON object, got list"),
        ('{"type": "Nope", "t": 1}', "t.jsonl:3: unknown event type 'Nope'"),
        ('{"t": 1}', "t.jsonl:3: unknown event type None"),
        ('{"type": "TunnelOpened", "t": 1, "cluster": "c"}', "t.jsonl:3: TunnelOpened.agent: is required"),
        (
            '{"type": "TunnelOpened", "t": 1, "cluster": "c", "agent": "a", "x": 1}',
            "t.jsonl:3: TunnelOpened: unknown field 'x'",
        ),
        (
            '{"type": "TunnelOpened", "t": "soon", "cluster": "c", "agent": "a"}',
            "t.jsonl:3: TunnelOpened.t: must be a number, got 'soon'",
        ),
        (
            '{"type": "RequestCompleted", "t": 1, "path": "proxy", "cluster": "c", "user": "u",'
            ' "verb": "get",'
            ' "status": true, "latency_seconds": 0.1}',
            "t.jsonl:3: RequestCompleted.status: must be an integer, got True",
        ),
    ],
)
def test_malformed_line_is_rejected_with_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_event(line, where="t.jsonl:3")
    assert str(info.value).startswith(message), str(info.value)


def test_blank_lines_are_skipped_and_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    ok = RequestCompleted(
        t=0.0, path="ace", cluster="c", user="u", verb="list", status=200, latency_seconds=0.01
    )
    path.write_text(
        "\n".join(["", '{"type":"TunnelOpened","t":0,"cluster":"c","agent":"a"}', "garbage"]) + "\n"
    )
    reader = read_trace(path)
    assert next(reader).type_name == "TunnelOpened"
    with pytest.raises(ConfigError, match=r"^trace.jsonl:3: not JSON"):
        next(reader)
    write_trace(path, [ok])
    assert list(read_trace(path)) == [ok]


def test_fault_windows_nest_overlapping_faults_and_run_unlifted_ones_to_the_end() -> None:
    events = [
        FaultInjected(t=1.0, fault="kill-cluster-agent", target="c1"),
        FaultInjected(t=2.0, fault="kill-cluster-agent", target="c1"),
        TunnelClosed(t=2.5, cluster="c1", agent="cluster-agent"),
        FaultInjected(t=3.0, fault="kill-cluster-agent", target="c1", lifted=True),
        FaultInjected(t=4.0, fault="kill-cluster-agent", target="c1", lifted=True),
        FaultInjected(t=5.0, fault="server-down", target="server"),
        FaultInjected(t=6.0, fault="latency", target="us-au", lifted=True),  # never applied: ignored
    ]
    assert fault_windows(events, end=9.0) == {
        ("kill-cluster-agent", "c1"): [(1.0, 4.0)],
        ("server-down", "server"): [(5.0, 9.0)],
    }


def test_a_gz_trace_is_written_compressed_and_read_back_alike(tmp_path: Path) -> None:
    items: list[Event] = [
        RequestCompleted(
            t=float(i), path="proxy", cluster="c", user="u", verb="get", status=200, latency_seconds=0.1
        )
        for i in range(5000)
    ]
    items.append(TunnelClosed(t=5000.0, cluster="c", agent="cluster-agent", reason="EOF"))
    plain, packed = tmp_path / "trace.jsonl", tmp_path / "trace.jsonl.gz"
    write_trace(plain, items)
    with TraceWriter(packed) as writer:
        writer.write_all(items)
    assert writer.written == len(items)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    assert packed.stat().st_size * 5 < plain.stat().st_size
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert list(read_trace(packed)) == items
    # Recognised by content, not by name.
    renamed = packed.rename(tmp_path / "trace.data")
    assert list(read_trace(renamed)) == items


def test_the_same_events_give_the_same_compressed_bytes(tmp_path: Path) -> None:
    items = [TunnelClosed(t=1.0, cluster="c", agent="cluster-agent")]
    write_trace(tmp_path / "a.jsonl.gz", items)
    write_trace(tmp_path / "b.jsonl.gz", items)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_a_truncated_compressed_trace_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl.gz"
    write_trace(path, [TunnelClosed(t=float(i), cluster="c", agent="cluster-agent") for i in range(2000)])
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ConfigError, match=r"^trace.jsonl.gz: corrupt or truncated gzip trace"):
        list(read_trace(path))


def test_a_missing_trace_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read trace"):
        list(read_trace(tmp_path / "nowhere.jsonl"))

"""Nothing lost: the check of a run's write log against the objects found afterwards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ConfigError
from corral.load.writes import check_writes, content_digest, read_write_logs


def data(version: int) -> dict[str, str]:
    return {"v": str(version), "pad": "xx"}


def write(
    verb: str, status: int, *, name: str = "o1", attempts: int = 1, version: int | None = 1
) -> dict[str, Any]:
    acked = 200 <= status < 300 or (
        attempts > 1 and ((verb == "create" and status == 409) or (verb == "delete" and status == 404))
    )
    outcome = None if verb == "delete" or version is None else content_digest(data(version))
    return {
        "cluster": "c1",
        "name": name,
        "verb": verb,
        "status": status,
        "attempts": attempts,
        "acked": acked,
        "outcome": outcome,
        "user": "a",
        "path": "direct",
    }


def reader(objects: Mapping[str, Mapping[str, str]]) -> Any:
    return lambda cluster: objects if cluster == "c1" else {}


def test_acknowledged_writes_found_with_their_content_pass() -> None:
    log = [
        write("create", 201),
        write("update", 200, version=2),
        write("patch", 200, version=3),
        write("create", 201, name="o2"),
        write("delete", 200, name="o2"),
    ]
    report = check_writes(log, reader({"o1": data(3)}))
    assert (report.writes, report.acknowledged, report.objects, report.lost, report.phantom) == (
        5,
        5,
        2,
        0,
        0,
    )


def test_an_acknowledged_write_that_is_gone_or_stale_is_lost() -> None:
    log = [write("create", 201), write("update", 200, version=2)]
    gone = check_writes(log, reader({}))
    stale = check_writes(log, reader({"o1": data(1)}))
    assert (gone.lost, stale.lost) == (1, 1)
    assert "an acknowledged write is gone" in str(gone.findings[0])
    assert "found absent" in str(gone.findings[0])


def test_a_deleted_object_that_is_back_is_lost() -> None:
    log = [write("create", 201), write("delete", 200)]
    assert check_writes(log, reader({"o1": data(1)})).lost == 1


def test_an_unretried_error_that_took_effect_is_a_phantom() -> None:
    log = [write("create", 201), write("update", 503, version=2)]
    assert check_writes(log, reader({"o1": data(1)})).findings == ()
    report = check_writes(log, reader({"o1": data(2)}))
    assert (report.lost, report.phantom) == (0, 1)
    assert "took effect" in str(report.findings[0])
    assert check_writes([write("create", 0)], reader({"o1": data(1)})).phantom == 1


def test_a_retried_write_without_an_answer_may_or_may_not_have_landed() -> None:
    log = [write("create", 201), write("update", 503, attempts=3, version=2)]
    assert check_writes(log, reader({"o1": data(1)})).findings == ()
    assert check_writes(log, reader({"o1": data(2)})).findings == ()
    assert check_writes(log, reader({"o1": data(9)})).lost == 1
    assert check_writes([write("create", 0, attempts=3)], reader({})).findings == ()


def test_a_retried_create_answered_409_counts_as_acknowledged() -> None:
    log = [write("create", 409, attempts=2)]
    report = check_writes(log, reader({}))
    assert (report.acknowledged, report.retried, report.lost) == (1, 1, 1)


def test_a_rejected_write_leaves_the_state_as_it_was() -> None:
    log = [write("create", 201), write("patch", 404, version=2)]
    assert check_writes(log, reader({"o1": data(1)})).findings == ()
    assert check_writes(log, reader({"o1": data(2)})).lost == 1
    assert check_writes(log, reader({})).rejected == 1


def test_write_logs_are_read_in_order_and_bad_lines_named(tmp_path: Path) -> None:
    good = tmp_path / "writes-a.jsonl"
    good.write_text("\n".join(json.dumps(w) for w in [write("create", 201), write("delete", 200)]) + "\n")
    assert [r["verb"] for r in read_write_logs([good])] == ["create", "delete"]
    bad = tmp_path / "writes-b.jsonl"
    bad.write_text('{"cluster": "c1"}\n')
    with pytest.raises(ConfigError, match=r"writes-b.jsonl:1: not a write record"):
        read_write_logs([bad])

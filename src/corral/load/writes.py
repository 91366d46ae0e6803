"""Nothing lost: what the objects of a run hold afterwards, against what its write log says they may.

Each object is written by one greenlet only, so its lines in the write log are in the order the
writes were made. Walking them gives the states the object may be in at the end:

* an acknowledged write (2xx, or on a retry the 409 to a create or 404 to a delete that says an
  earlier attempt landed) leaves exactly its outcome;
* a rejected write (a definite 4xx) leaves the states as they were;
* a write without a clear answer (no answer, 408, 429, 5xx) may have landed only if the client
  retried it idempotently: then either state is fine; a single attempt must have left no trace.

An object whose actual state is outside that set is a `phantom` when it holds the outcome of a
write answered with an error that nobody retried (it took effect anyway), else `lost` (an
acknowledged write is gone, or the object holds content no write of the run gave it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import ConfigError

ABSENT = "absent"
Reader = Callable[[str], Mapping[str, Mapping[str, str]]]
"""cluster -> {object name: its data} of the run's objects (read with admin credentials)."""


def content_digest(data: Mapping[str, str]) -> str:
    """The digest the write log records (the same function as loadtests/kubetraffic.py)."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:32]


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500 and status not in (408, 429):
        return "rejected"
    return "uncertain"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    cluster: str
    name: str
    kind: str  # "lost" or "phantom"
    expected: tuple[str, ...]
    actual: str
    last_write: Mapping[str, Any]

    def __str__(self) -> str:
        what = (
            "an acknowledged write is gone" if self.kind == "lost" else "an unacknowledged write took effect"
        )
        w = self.last_write
        return (
            f"{self.cluster}/{self.name}: {what} (last: {w.get('verb')} by {w.get('user')} over "
            f"{w.get('path')}, status {w.get('status')}, {w.get('attempts')} attempt(s)); "
            f"expected {' or '.join(self.expected)}, found {self.actual}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteReport:
    writes: int
    acknowledged: int
    rejected: int
    uncertain: int
    retried: int
    objects: int
    findings: tuple[Finding, ...] = field(default=())

    @property
    def lost(self) -> int:
        return sum(1 for f in self.findings if f.kind == "lost")

    @property
    def phantom(self) -> int:
        return sum(1 for f in self.findings if f.kind == "phantom")

    def to_json(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "acknowledged": self.acknowledged,
            "rejected": self.rejected,
            "uncertain": self.uncertain,
            "retried": self.retried,
            "objects": self.objects,
            "lost": self.lost,
            "phantom": self.phantom,
            "findings": [str(f) for f in self.findings[:50]],
        }


def read_write_logs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The lines of every write log, in file order (which is write order per object)."""
    records = []
    for path in paths:
        with path.open(encoding="utf-8") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise ConfigError(f"{path.name}:{number}: not JSON: {e}") from e
                if not isinstance(record, dict) or not {"cluster", "name", "verb", "status"} <= set(record):
                    raise ConfigError(f"{path.name}:{number}: not a write record")
                records.append(record)
    return records


def check_writes(records: Iterable[Mapping[str, Any]], read: Reader) -> WriteReport:
    """Compare the final state of every written object with what its writes allow."""
    by_object: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    counts = {"writes": 0, "acknowledged": 0, "rejected": 0, "uncertain": 0, "retried": 0}
    for record in records:
        by_object.setdefault((str(record["cluster"]), str(record["name"])), []).append(record)
        counts["writes"] += 1
        status = int(record["status"])
        if record.get("acked"):
            counts["acknowledged"] += 1
        elif classify(status) == "rejected":
            counts["rejected"] += 1
        else:
            counts["uncertain"] += 1
        counts["retried"] += int(record.get("attempts", 1)) > 1
    actual_by_cluster: dict[str, dict[str, str]] = {}
    findings = []
    for (cluster, name), writes in sorted(by_object.items()):
        if cluster not in actual_by_cluster:
            actual_by_cluster[cluster] = {n: content_digest(d) for n, d in read(cluster).items()}
        actual = actual_by_cluster[cluster].get(name, ABSENT)
        states: set[str] = {ABSENT}
        unretried: set[str] = set()
        for write in writes:
            outcome = write.get("outcome") or ABSENT
            if write.get("acked"):
                states, unretried = {outcome}, set()
            elif classify(int(write["status"])) == "uncertain":
                if int(write.get("attempts", 1)) > 1:
                    states = states | {outcome}
                else:
                    unretried.add(outcome)
        if actual not in states:
            findings.append(
                Finding(
                    cluster=cluster,
                    name=name,
                    kind="phantom" if actual in unretried else "lost",
                    expected=tuple(sorted(states)),
                    actual=actual,
                    last_write=writes[-1],
                )
            )
    return WriteReport(objects=len(by_object), findings=tuple(findings), **counts)

"""Trace: typed, past-tense events as JSON lines, the common output of every part of corral.

The SimPy model writes them, the tunnel's session manager writes its `TunnelOpened` and
`TunnelClosed`, and anything that measures a real system is to write the same events, so a check
written once (a pure function of scenario and trace) runs on simulated and measured traces alike.
Each line is one JSON object with ``"type"`` naming the event class and ``"t"`` the time in
seconds since the scenario started:

    {"type": "TunnelOpened", "t": 0.41, "cluster": "c-us", "agent": "cluster-agent"}

Events are frozen dataclasses registered by `event`; reading a trace back gives the same
objects, and a malformed line ends in a `ConfigError` naming the file and line. A trace file
whose name ends in ``.gz`` is written gzip-compressed (a fleet's trace shrinks about tenfold);
the reader recognises compressed files by their content, whatever their name.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import types
import typing
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

from corral.errors import ConfigError

_EVENT_TYPES: dict[str, type[Event]] = {}
E = TypeVar("E", bound="Event")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all trace events; ``t`` is seconds since the start of the scenario."""

    t: float
    type_name: ClassVar[str] = "Event"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type_name}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            data[name] = list(value) if isinstance(value, tuple) else value
        return data


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    """The field names of an event class, looked up once (writing a fleet's trace is hot)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def event(cls: type[E]) -> type[E]:
    """Register an event class by its name so the reader can rebuild it."""
    if cls.__name__ in _EVENT_TYPES:
        raise TypeError(f"trace event {cls.__name__} is already registered")
    cls.type_name = cls.__name__
    _EVENT_TYPES[cls.__name__] = cls
    return cls


def event_types() -> dict[str, type[Event]]:
    """All registered event classes by name."""
    return dict(_EVENT_TYPES)


# -- the vocabulary ---------------------------------------------------------------------------


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted(Event):
    """A user request finished (successfully or not) on one access path."""

    path: str  # "proxy", "ace" or "direct"
    cluster: str
    user: str
    verb: str
    status: int  # HTTP status; 0 when no response arrived (connection failure, timeout)
    latency_seconds: float


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelOpened(Event):
    """An agent's tunnel session to the server was established."""

    cluster: str
    agent: str  # "cluster-agent" or "node-agent/<node>"


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelClosed(Event):
    """An agent's tunnel session ended."""

    cluster: str
    agent: str
    reason: str = ""


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverCompleted(Event):
    """Requests to a cluster are served again through another agent after one was lost."""

    cluster: str
    from_agent: str
    to_agent: str
    duration_seconds: float


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConditionChanged(Event):
    """The server's view of a cluster's Connected condition changed (health tick)."""

    cluster: str
    connected: bool


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenReviewed(Event):
    """kube-api-auth answered a TokenReview for a cluster (the ACE path)."""

    cluster: str
    user: str  # empty when the token was not recognised
    authenticated: bool
    latency_seconds: float


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class ImpersonationAccountEnsured(Event):
    """The per-user impersonation service account exists downstream (created or found)."""

    cluster: str
    user: str
    created: bool


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(Event):
    """A fault from the scenario's timeline was applied (or lifted)."""

    fault: str  # for example "kill-cluster-agent", "server-down", "latency", "partition"
    target: str
    lifted: bool = False


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class StreamBroken(Event):
    """A held stream (watch, logs, exec) ended before its client was done; the client retries."""

    path: str
    cluster: str
    user: str
    kind: str  # "watch", "logs" or "exec"
    reason: str


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded(Event):
    """A client finished with a stream: how long it was held open in all, and how often it broke."""

    path: str
    cluster: str
    user: str
    kind: str
    held_seconds: float
    breaks: int


@event
@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTokenSynced(Event):
    """A user's token copy (ClusterAuthToken) in a downstream cluster caught up with the server."""

    cluster: str
    user: str
    revoked: bool


# -- reading and writing ----------------------------------------------------------------------


GZIP_LEVEL = 1
"""Compression level of ``.gz`` traces: the fastest, since a trace is written while the model runs."""
_GZIP_MAGIC = b"\x1f\x8b"
MODEL_BATCH = 2048
"""Lines per write when the model streams its trace (`TraceWriter(batch=MODEL_BATCH)`)."""
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class TraceWriter:
    """Append events to a JSONL file (gzip-compressed if its name ends in ``.gz``) or an open text
    stream. Use as a context manager; `written` counts the events written so far.

    By default every event reaches the stream as it is written, as long-running processes (the
    server, kube-api-auth) need; ``batch`` > 1 joins that many lines per write, for the model's
    millions of events, and `close` writes what is left.
    """

    def __init__(self, target: str | Path | IO[str], *, batch: int = 1) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self._batch = batch
        self._raw: IO[bytes] | None = None
        if isinstance(target, str | Path):
            path = Path(target)
            if path.suffix == ".gz":
                # mtime=0 and no file name in the header: the same events give the same bytes.
                self._raw = path.open("wb")
                packed = gzip.GzipFile(
                    filename="", mode="wb", fileobj=self._raw, compresslevel=GZIP_LEVEL, mtime=0
                )
                self._stream: IO[str] = io.TextIOWrapper(packed, encoding="utf-8", newline="\n")
            else:
                self._stream = path.open("w", encoding="utf-8")
            self._owned = True
        else:
            self._stream = target
            self._owned = False
        self._pending: list[str] = []
        self.written = 0

    def write(self, item: Event) -> None:
        pending = self._pending
        pending.append(_ENCODER.encode(item.to_json()))
        if len(pending) >= self._batch:
            self._flush()

    def write_all(self, items: Iterable[Event]) -> None:
        for item in items:
            self.write(item)

    def _flush(self) -> None:
        if self._pending:
            self._stream.write("\n".join(self._pending) + "\n")
            self.written += len(self._pending)
            self._pending.clear()

    def close(self) -> None:
        self._flush()
        if self._owned:
            self._stream.close()
            if self._raw is not None:
                self._raw.close()
        else:
            self._stream.flush()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_trace(path: str | Path, items: Iterable[Event]) -> None:
    with TraceWriter(path) as writer:
        writer.write_all(items)


def read_trace(path: str | Path) -> Iterator[Event]:
    """Yield the events of a JSONL trace file, plain or gzip-compressed; bad lines raise `ConfigError`
    with file:line, and so does a compressed file that is cut short or corrupt."""
    path = Path(path)
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == _GZIP_MAGIC
    except OSError as e:
        raise ConfigError(f"{path}: cannot read trace: {e.strerror or e}") from e
    if not compressed:
        with path.open(encoding="utf-8") as stream:
            yield from parse_trace(stream, source=path.name)
        return
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        try:
            yield from parse_trace(stream, source=path.name)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ConfigError(f"{path.name}: corrupt or truncated gzip trace: {e}") from e


def parse_trace(lines: Iterable[str], *, source: str = "<trace>") -> Iterator[Event]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield parse_event(line, where=f"{source}:{number}")


def parse_event(line: str, *, where: str = "<trace>") -> Event:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not JSON: {e.msg} at column {e.colno}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an event must be a JSON object, got {type(data).__name__}")
    name = data.pop("type", None)
    cls = _EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"{where}: unknown event type {name!r}")
    hints, fields = _schema(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: {name}: unknown field {unknown[0]!r}")
    values: dict[str, Any] = {}
    for fname, f in fields.items():
        if fname not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: {name}.{fname}: is required")
            continue
        values[fname] = _coerce(data[fname], hints[fname], where=f"{where}: {name}.{fname}")
    return cls(**values)


_SCHEMAS: dict[str, tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]] = {}


def _schema(cls: type[Event]) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """Type hints and fields of an event class, resolved once (reading a fleet's trace is hot)."""
    schema = _SCHEMAS.get(cls.type_name)  # names are unique: `event` refuses a second class
    if schema is None:
        schema = _SCHEMAS[cls.type_name] = (
            typing.get_type_hints(cls),
            {f.name: f for f in dataclasses.fields(cls)},
        )
    return schema


_SCALAR_CHECKS: dict[Any, tuple[str, Any]] = {
    str: ("a string", lambda v: isinstance(v, str)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    type(None): ("null", lambda v: v is None),
}


def _coerce(value: Any, hint: Any, *, where: str) -> Any:
    """Check a JSON value against a (simple) field annotation: scalars, optionals, tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where=where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, got {type(value).__name__}")
        item_hint = typing.get_args(hint)[0]
        return tuple(_coerce(item, item_hint, where=where) for item in value)
    if hint in _SCALAR_CHECKS:
        expected, check = _SCALAR_CHECKS[hint]
        if not check(value):
            raise ConfigError(f"{where}: must be {expected}, got {value!r}")
        return float(value) if hint is float else value
    return value

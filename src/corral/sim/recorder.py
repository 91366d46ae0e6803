"""Where the model's trace events go: a JSONL file (maybe compressed, maybe sampled), a list in memory,
a running summary, or all.

The model calls `Recorder.emit` with shared `corral.model` events, or `Recorder.request` with a
finished request's fields; sinks are plain callables so a run can stream a fleet-sized trace to
disk without holding it in memory. A sink that also takes a request's fields (`RequestSink`: the
summariser, a request sample) gets them as they are, so a request kept by no sink never becomes
an event object. `ModelTraceWriter`
writes the same bytes as `TraceWriter` at about twice the speed (a fleet writes half a million
lines while it runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Protocol, runtime_checkable

from corral.model import Event, RequestCompleted, TraceWriter
from corral.model.trace import _ENCODER, _field_names

Sink = Callable[[Event], None]


@runtime_checkable
class RequestSink(Protocol):
    """A sink that can take a finished request's fields instead of its `RequestCompleted`."""

    def __call__(self, item: Event) -> None: ...

    def request(
        self,
        *,
        t: float,
        path: str,
        cluster: str,
        status: int,
        latency_seconds: float,
        user: str,
        verb: str,
    ) -> None: ...


class Recorder:
    """Fan one stream of trace events out to sinks."""

    def __init__(self, *sinks: Sink) -> None:
        self._sinks: list[Sink] = []
        self._request_sinks: list[tuple[Sink, Callable[..., None] | None]] = []
        """Each sink with its `request` method, or ``None`` for a sink that takes events only."""
        self.count = 0
        for sink in sinks:
            self.add_sink(sink)

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)
        self._request_sinks.append((sink, sink.request if isinstance(sink, RequestSink) else None))

    def emit(self, item: Event) -> None:
        self.count += 1
        for sink in self._sinks:
            sink(item)

    def request(
        self, *, t: float, path: str, cluster: str, user: str, verb: str, status: int, latency_seconds: float
    ) -> None:
        """Emit ``RequestCompleted(t=t, path=path, ...)``, built only for a sink that takes events."""
        self.count += 1
        item: Event | None = None
        for sink, request in self._request_sinks:
            if request is not None:
                request(
                    t=t,
                    path=path,
                    cluster=cluster,
                    user=user,
                    verb=verb,
                    status=status,
                    latency_seconds=latency_seconds,
                )
                continue
            if item is None:
                item = RequestCompleted(
                    t=t,
                    path=path,
                    cluster=cluster,
                    user=user,
                    verb=verb,
                    status=status,
                    latency_seconds=latency_seconds,
                )
            sink(item)


class RequestSample:
    """A sink that passes every event on except `RequestCompleted`, of which it keeps one in `one_in`.

    The first request is kept, then every `one_in`-th: deterministic, so the same run writes the
    same sampled trace. Tunnels, faults, failovers and the rest are all kept, since the checks
    reason about them one by one; requests are what makes a fleet's trace large.
    """

    def __init__(self, sink: Sink, *, one_in: int) -> None:
        if one_in < 1:
            raise ValueError(f"request sampling must keep one in n >= 1 requests, got {one_in}")
        self._sink = sink
        self.one_in = one_in
        self._seen = 0

    def __call__(self, item: Event) -> None:
        if type(item) is RequestCompleted:
            self._seen += 1
            if (self._seen - 1) % self.one_in:
                return
        self._sink(item)

    def request(
        self, *, t: float, path: str, cluster: str, user: str, verb: str, status: int, latency_seconds: float
    ) -> None:
        """A request by its fields: its event is built only when it is one of those kept."""
        self._seen += 1
        if (self._seen - 1) % self.one_in:
            return
        self._sink(
            RequestCompleted(
                t=t,
                path=path,
                cluster=cluster,
                user=user,
                verb=verb,
                status=status,
                latency_seconds=latency_seconds,
            )
        )


_Field = tuple[str, str]
_LAYOUTS: dict[type[Event], tuple[str, tuple[_Field, ...]]] = {}


def encode_line(item: Event) -> str:
    """`item` as `TraceWriter` writes it (compact JSON, ASCII), without building a dict first.

    Strings, integers, booleans and finite floats are written here; any other value (a tuple,
    ``None``, NaN) hands the whole event to the JSON encoder, so the bytes never differ.
    """
    cls = type(item)
    layout = _LAYOUTS.get(cls)
    if layout is None:
        names = _field_names(cls)
        keys = tuple("," + encode_basestring_ascii(name) + ":" for name in names)
        head = '{"type":' + encode_basestring_ascii(cls.type_name)
        layout = _LAYOUTS[cls] = (head, tuple(zip(keys, names, strict=True)))
    head, fields = layout
    parts = [head]
    for key, name in fields:
        value = getattr(item, name)
        kind = type(value)
        if kind is str:
            text = encode_basestring_ascii(value)
        elif kind is float and math.isfinite(value):
            text = float.__repr__(value)
        elif kind is int:
            text = int.__repr__(value)
        elif kind is bool:
            text = "true" if value else "false"
        else:
            return _ENCODER.encode(item.to_json())
        parts.append(key)
        parts.append(text)
    parts.append("}")
    return "".join(parts)


class ModelTraceWriter(TraceWriter):
    """A `TraceWriter` whose lines come from `encode_line`: the same file, written faster."""

    def write(self, item: Event) -> None:
        pending = self._pending
        pending.append(encode_line(item))
        if len(pending) >= self._batch:
            self._flush()

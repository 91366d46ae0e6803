"""Where the model's trace events go: a JSONL file (maybe compressed, maybe sampled), a list in memory,
a running summary, or all.

The model calls `Recorder.emit` with shared `corral.model` events; sinks are plain callables so a
run can stream a fleet-sized trace to disk without holding it in memory.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.model import Event, RequestCompleted

Sink = Callable[[Event], None]


class Recorder:
    """Fan one stream of trace events out to sinks."""

    def __init__(self, *sinks: Sink) -> None:
        self._sinks = list(sinks)
        self.count = 0

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, item: Event) -> None:
        self.count += 1
        for sink in self._sinks:
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

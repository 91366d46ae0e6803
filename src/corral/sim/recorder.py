"""Where the model's trace events go: a JSONL file, a list in memory, a running summary, or all.

The model calls `Recorder.emit` with shared `corral.model` events; sinks are plain callables so a
run can stream a fleet-sized trace to disk without holding it in memory.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.model import Event

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

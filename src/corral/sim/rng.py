"""Named random streams derived from one seed, so a run is reproducible and parts stay independent.

Each part of the model draws from its own stream (``streams.get("arrivals/0")``), seeded from the
run's seed and the stream's name through SHA-256. Adding draws in one part therefore never shifts
the numbers another part sees, and two runs that differ only in an access path see the same
arrivals and the same service-time draws for the same request (common random numbers).
"""

from __future__ import annotations

import hashlib
import random


class Streams:
    """A family of `random.Random` streams keyed by name."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def get(self, name: str) -> random.Random:
        stream = self._streams.get(name)
        if stream is None:
            digest = hashlib.sha256(f"{self.seed}/{name}".encode()).digest()
            stream = random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 - simulation, not secrets
            self._streams[name] = stream
        return stream

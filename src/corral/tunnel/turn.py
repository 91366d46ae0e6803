"""Turns of the event loop, numbered, for writers that join what is written in one turn.

The frame writer and every connection's outbox send the first write of a turn at once and join
the rest of the turn's; each used to schedule a call per write to learn that its turn had ended.
They now read one counter per loop, moved on by a single call scheduled in each turn that wrote.
"""

from __future__ import annotations

import asyncio
import logging
import threading

logger = logging.getLogger(__name__)

_local = threading.local()


class Turn:
    """The number of the current turn of ``loop`` (for those that `mark` it: others see no change)."""

    __slots__ = ("_loop", "ending", "number")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.number = 0
        self.ending = False
        """Whether this turn's end is scheduled (a hot path reads it to skip the call to `mark`)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def mark(self) -> int:
        """The number of this turn, which ends (the number moves on) at the start of the next one."""
        if not self.ending:
            self.ending = True
            self._loop.call_soon(self._end)
        return self.number

    def _end(self) -> None:
        self.ending = False
        self.number += 1


def turn_of(loop: asyncio.AbstractEventLoop) -> Turn:
    """The `Turn` of ``loop`` (one per loop running in this thread; a new loop gets a new one)."""
    turn: Turn | None = getattr(_local, "turn", None)
    if turn is None or turn.loop is not loop:
        turn = _local.turn = Turn(loop)
    return turn

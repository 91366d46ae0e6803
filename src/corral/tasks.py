"""Background asyncio tasks: how a component's loop is stopped.

Health ticks, node heartbeats, pod-resource sync, ACE token sync and the auth-config refresher each run
one task beside the server or agent; stopping one is always the same: cancel it and wait until it has
unwound, so nothing of it runs after ``stop`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has finished unwinding."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""The event loop a tunnel process runs on: uvloop when it is installed, asyncio's own otherwise.

uvloop (libuv) halves the cost of each socket read, write and wake-up, which is most of what a
tunnel does. Everything in `corral.tunnel` runs on either loop; `run` picks one for a process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
DISABLE_ENV = "CORRAL_TUNNEL_ASYNCIO_LOOP"
"""Set to 1 to run on asyncio's own loop even when uvloop is installed (to compare them)."""


def uvloop_available() -> bool:
    if os.environ.get(DISABLE_ENV) == "1":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what `run` would use in this process."""
    return "uvloop" if uvloop_available() else "asyncio"


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None) -> T:
    """`asyncio.run` on uvloop when installed (or as ``use_uvloop`` says)."""
    if use_uvloop is None:
        use_uvloop = uvloop_available()
    if use_uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)

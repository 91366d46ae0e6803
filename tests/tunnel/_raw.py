"""A hand-driven peer for session tests: one end of a memory pair, speaking frames directly."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from corral.tunnel import message as msg
from corral.tunnel.clock import FakeClock, settle
from corral.tunnel.memory import MemoryTransport, memory_pair
from corral.tunnel.message import Message
from corral.tunnel.session import Session
from corral.tunnel.settings import SessionSettings
from corral.tunnel.transport import FrameKind


class RawPeer:
    """The other end of a session under test; records everything it receives."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.messages: list[Message] = []
        self.pings = 0

    async def send(self, message: Message) -> None:
        await self.transport.send(msg.encode(message))
        await settle()

    async def send_bytes(self, frame: bytes) -> None:
        await self.transport.send(frame)
        await settle()

    async def keep_alive_for(self, clock: FakeClock, seconds: float) -> None:
        """Advance the clock in 5 s steps, answering the session's pings on the way."""
        for _ in range(int(seconds // 5)):
            await clock.advance(5)
            self.drain()
            await settle()

    def drain(self) -> list[Message]:
        """Everything received so far (pings counted, not returned)."""
        while self.transport._inbox:
            frame = self.transport._inbox.popleft()
            if frame.kind is FrameKind.BINARY:
                self.transport._queued_binary -= 1
                self.messages.append(msg.decode(frame.data))
            elif frame.kind is FrameKind.PING:
                self.pings += 1
                if self.transport.answer_pings:
                    self.transport._answer_ping()
        self.transport._changed.notify()
        return self.messages


@asynccontextmanager
async def session_with_raw_peer(role, *, clock=None, **kwargs):
    """A served `Session` of ``role`` whose peer is a `RawPeer` (the peer never answers pings).

    ``push=False``: the session asks its transport for each frame instead of being handed them.
    """
    clock = clock or FakeClock()
    settings = kwargs.pop("settings", None) or SessionSettings(clock=clock)
    ours, theirs = memory_pair(max_queued_frames=1 << 20, push=kwargs.pop("push", True))
    session = Session(ours, role=role, settings=settings, **kwargs)
    task = asyncio.ensure_future(session.serve())
    await settle()
    try:
        yield session, RawPeer(theirs), clock
    finally:
        await session.close("test over")
        await asyncio.gather(task, return_exceptions=True)

"""One tunnelled connection: a receive buffer with back-pressure and a paced writer.

As in remotedialer's connection.go, readbuffer.go and back_pressure.go: incoming Data is buffered
without blocking the session's read loop; above ``max_buffer_bytes`` we send Pause, and a read
that drains the buffer below ``resume_below_bytes`` sends Resume. A writer whose peer paused it
waits. Closing sends Error ``EOF``; an Error from the peer ends the connection with its text.
There is no half-close in remotedialer, so neither is there here.

remotedialer v0.6 keeps a single pause flag per connection for both directions, which lets a
Go peer forget our Pause, stay stuck in its own, or leave its writer asleep after its own Resume.
We therefore repeat Pause while its data keeps coming, nudge a peer that paused us and went
quiet, and answer a Resume that no data follows (``peer_stall_resume_seconds``; None turns
these off). Against a peer without that flaw they cost a few spare Resume frames.

`Connection.as_streams` bridges the connection to asyncio streams through a socket pair, so
anything that speaks asyncio (an HTTP client, TLS) can run over it unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from corral.errors import TunnelClosedError
from corral.tunnel import message as msg
from corral.tunnel.transport import Signal

if TYPE_CHECKING:
    from corral.tunnel.session import Session

logger = logging.getLogger(__name__)

EOF_TEXT = "EOF"
BRIDGE_CHUNK_BYTES = 64 * 1024


class Connection:
    """A byte stream through a tunnel session, identified by ``conn_id`` on both sides."""

    def __init__(self, session: Session, conn_id: int, proto: str, address: str) -> None:
        self.session = session
        self.conn_id = conn_id
        self.proto = proto
        self.address = address
        self._buffer = bytearray()
        self._changed = Signal()
        self._we_paused = False
        self._peer_paused = False
        self._data_frames = 0
        self._data_frames_at_pause = 0
        self._stall_wait = session.settings.peer_stall_resume_seconds or 0.0
        self._pause_sent_at_level = 0
        self._nudged_peer = False
        self._waking = False
        self._resumes = 0
        self._data_frames_at_resume = 0
        self._close_reason: str | None = None

    def __repr__(self) -> str:
        state = "open" if self._close_reason is None else f"closed: {self._close_reason}"
        return f"<Connection {self.conn_id} {self.proto}/{self.address} {state}>"

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        """``EOF`` after a clean close, the error text otherwise, None while open."""
        return self._close_reason

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet read."""
        return len(self._buffer)

    @property
    def paused_by_peer(self) -> bool:
        return self._peer_paused

    # -- called by the session's read loop (never blocks) -----------------------------------

    def _on_data(self, payload: bytes) -> str | None:
        """Buffer incoming bytes; returns an error text when the peer overran the hard limit."""
        if self._close_reason is not None:
            return None
        self._data_frames += 1
        self._stall_wait = self.session.settings.peer_stall_resume_seconds or 0.0
        if self._nudged_peer and self._peer_paused:
            self._peer_paused = False  # its writes flow again: it has forgotten its pause
            self._changed.notify()
        self._buffer += payload
        self._changed.notify()
        settings = self.session.settings
        if len(self._buffer) > settings.hard_buffer_limit_bytes:
            return (
                f"connection {self.conn_id}: peer ignored Pause, {len(self._buffer)} bytes buffered"
                f" (limit {settings.hard_buffer_limit_bytes})"
            )
        level = len(self._buffer)
        if level > settings.max_buffer_bytes and (
            not self._we_paused or level - self._pause_sent_at_level >= settings.resume_below_bytes
        ):
            # again while data keeps coming: remotedialer forgets our Pause when its own buffer drains
            self._we_paused = True
            self._pause_sent_at_level = level
            self.session._send_nowait(msg.pause(self.conn_id))
        return None

    def _on_pause(self) -> None:
        was_paused = self._peer_paused
        self._peer_paused = True
        self._nudged_peer = False  # paused (again): its flag is set, whatever we sent before
        self._data_frames_at_pause = self._data_frames
        if not was_paused and self._stall_wait:
            self.session._spawn(self._nudge_stuck_peer(), f"pause watch {self.conn_id}")

    def _on_resume(self) -> None:
        self._peer_paused = False
        self._changed.notify()
        self._resumes += 1
        self._data_frames_at_resume = self._data_frames
        if self.session.settings.peer_stall_resume_seconds and not self._waking:
            self._waking = True
            self.session._spawn(self._wake_quiet_peer(), f"resume watch {self.conn_id}")

    async def _wake_quiet_peer(self) -> None:
        """Answer a peer's Resume with ours if its Data does not follow.

        remotedialer (v0.6) clears its pause flag on its own Resume without waking the writer
        that waits on it; that writer sleeps until the next Pause or Resume arrives. One Resume
        from us (harmless to a peer that is not paused) wakes it.
        """
        settings = self.session.settings
        try:
            while self._close_reason is None:
                resumes = self._resumes
                await settings.clock.sleep(settings.peer_stall_resume_seconds or 0.0)
                if resumes != self._resumes:
                    continue  # a newer Resume: measure the quiet from it
                quiet = self._data_frames == self._data_frames_at_resume
                if quiet and not self._peer_paused and len(self._buffer) < settings.resume_below_bytes:
                    await self.session._send_message(msg.resume(self.conn_id))
                return
        finally:
            self._waking = False

    def _mark_closed(self, reason: str) -> None:
        """End the connection locally (no frame sent): readers drain the buffer, then see the end."""
        if self._close_reason is None:
            self._close_reason = reason
            self._peer_paused = False
            self._changed.notify()

    # -- the stream API ---------------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered if n < 0); b"" after a clean close.

        Raises `TunnelClosedError` once the buffer is drained if the connection ended with an error.
        """
        while not self._buffer:
            if self._close_reason is not None:
                if self._close_reason == EOF_TEXT:
                    return b""
                raise TunnelClosedError(f"connection {self.conn_id} to {self.address}: {self._close_reason}")
            await self._changed.wait()
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._we_paused and len(self._buffer) < self.session.settings.resume_below_bytes:
            self._we_paused = False
            if self._close_reason is None:
                await self.session._send_message(msg.resume(self.conn_id))
        return chunk

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as Data frames, waiting while the peer has paused us."""
        view = memoryview(data).cast("B")
        step = self.session.settings.max_frame_payload_bytes
        for start in range(0, len(view), step):
            while self._peer_paused and self._close_reason is None:
                await self._changed.wait()
            if self._close_reason is not None:
                raise TunnelClosedError(f"connection {self.conn_id} to {self.address}: {self._close_reason}")
            await self.session._send_message(msg.data(self.conn_id, bytes(view[start : start + step])))

    async def _nudge_stuck_peer(self) -> None:
        """While the peer keeps us paused, nudge it out of its own pause if it is stuck there.

        remotedialer (v0.6) keeps one ``paused`` flag per connection for both directions: once it
        has paused us, its own writes wait too, until its receive buffer drains. When draining
        needs those writes (an echo, any full-duplex exchange), it never resumes. So when the peer
        has sent no Data for ``peer_stall_resume_seconds`` since pausing us and we hold little of
        its data, we send Resume (which clears its flag and lets its writes go) and keep waiting;
        we write again once its Data arrives, or after one more quiet period (it no longer knows
        it paused us, so it would never send Resume). It pauses us again if it must. The quiet
        period doubles, up to a minute, while the peer stays quiet.
        """
        settings = self.session.settings
        while self._peer_paused and self._close_reason is None:
            await settings.clock.sleep(self._stall_wait)
            if not self._peer_paused or self._close_reason is not None:
                return
            if self._data_frames != self._data_frames_at_pause:
                self._data_frames_at_pause = self._data_frames  # its writes flow: not stuck
                continue
            if len(self._buffer) >= settings.resume_below_bytes:
                continue
            self._stall_wait = min(self._stall_wait * 2, 60.0)
            if self._nudged_peer:
                self._peer_paused = False
                self._changed.notify()
                return
            logger.debug("connection %s: peer quiet since pausing us; sending Resume", self.conn_id)
            self._nudged_peer = True
            await self.session._send_message(msg.resume(self.conn_id))

    async def close(self) -> None:
        """Close cleanly: the peer gets Error ``EOF``. Idempotent."""
        await self.close_with_error(EOF_TEXT)

    async def close_with_error(self, text: str) -> None:
        """Close and tell the peer why (remotedialer reads at most 100 bytes of it)."""
        if self._close_reason is not None:
            return
        self._mark_closed(text)
        self.session._forget(self)
        await self.session._send_error(self.conn_id, text)

    async def wait_closed(self) -> None:
        while self._close_reason is None:
            await self._changed.wait()

    async def as_streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio streams over this connection (closing the writer closes the connection)."""
        sock = self.bridge_socket()
        return await asyncio.open_connection(sock=sock)

    def bridge_socket(self) -> socket.socket:
        """One end of a socket pair whose other end is pumped to and from this connection."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        task = self.session._spawn(self._pump(ours), f"bridge {self.conn_id}")
        if task is None:
            ours.close()
        else:  # a task cancelled before its first step never runs its finally clause
            task.add_done_callback(lambda _: ours.close())
        return theirs

    async def _pump(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()

        async def to_tunnel() -> None:
            while True:
                chunk = await loop.sock_recv(sock, BRIDGE_CHUNK_BYTES)
                if not chunk:
                    return
                await self.write(chunk)

        async def from_tunnel() -> None:
            while True:
                chunk = await self.read(BRIDGE_CHUNK_BYTES)
                if not chunk:
                    return
                await loop.sock_sendall(sock, chunk)

        try:
            await pipe_until_either_ends(to_tunnel(), from_tunnel(), f"bridge of connection {self.conn_id}")
        finally:
            sock.close()
            await self.close()


async def pipe_until_either_ends(
    a: Coroutine[Any, Any, None], b: Coroutine[Any, Any, None], what: str
) -> None:
    """Run two copy loops; when one ends (or fails) cancel the other, like remotedialer's pipe."""
    tasks = [asyncio.ensure_future(a), asyncio.ensure_future(b)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            except (TunnelClosedError, OSError) as exc:
                logger.debug("%s ended: %s", what, exc)

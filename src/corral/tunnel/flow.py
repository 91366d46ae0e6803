"""Flow control of one tunnelled connection as a pure state machine: Pause, Resume and the timers.

No I/O and no clock of its own: the connection feeds it events with the current time, sends the
frames it asks for and calls `FlowControl.on_timer` at `FlowControl.deadline`. That keeps the
rules testable against a model of remotedialer (tests/tunnel/test_flow.py).

The rules (remotedialer's readbuffer.go and back_pressure.go, then corral's answers to the single
pause flag that remotedialer v0.6 keeps per connection for both directions, docs/rancher.md#back-pressure):

1. Receiving: above ``max_buffer`` buffered bytes, send Pause; a read that leaves fewer than
   ``resume_below`` sends Resume. Data that would take the buffer past ``hard_limit`` is refused
   (the connection is lost: the peer ignored Pause).
2. Pause again while the peer's Data keeps coming ``resume_below`` bytes past the last Pause: a
   remotedialer peer forgets our Pause when its own buffer drains.
3. A Resume from the peer while we hold it paused is answered with Pause: we are still full.
   A remotedialer peer sends such a Resume when its own buffer drains (its flag was set by our
   Pause); a peer that nudged us (rule 4) learns that we really are full.
4. Sending: after the peer's Pause, wait. If the peer sends no Data for ``stall`` seconds and we
   hold little of its data, send Resume (a nudge): a remotedialer peer whose own writes wait on
   its flag (an echo) is then unstuck. A peer that answers the nudge with Pause is honest and
   still full: we stay paused, and never resume on our own on this connection again. A peer
   whose Data flows after the nudge has forgotten its pause: we write again. A peer that stays
   silent one more period has forgotten it too (remotedialer never sends Resume once its flag is
   clear; it pauses us again on our next Data if it must). The period doubles up to a minute.
5. A Resume from the peer that had paused us, not followed by its Data within ``stall``, is
   answered once with Resume: remotedialer clears its flag on its own Resume without waking its
   writer. (A Resume that lifts no pause is not answered, or two corral peers would trade
   Resumes for ever.)

``stall`` None turns rules 4 and 5 off (a peer without the flag quirk).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_STALL_SECONDS = 60.0


class Signal(enum.Enum):
    """A flow-control frame the connection must send."""

    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowLimits:
    max_buffer: int
    resume_below: int
    hard_limit: int
    stall: float | None


class FlowControl:
    """The flow-control state of one connection (both directions)."""

    def __init__(self, limits: FlowLimits) -> None:
        self.limits = limits
        self.buffered = 0
        # receiving: did we pause the peer, at which level
        self.we_paused = False
        self._pause_level = 0
        # sending: did the peer pause us; the stall rules
        self.peer_paused = False
        self.nudged = False
        self.peer_reaffirms = False
        """The peer answered a nudge with Pause: it is honest, we never resume on our own."""
        self._stall = limits.stall or 0.0
        self._data_seen = 0
        self._data_at_mark = 0
        self._nudge_at: float | None = None
        self._wake_at: float | None = None
        self._data_at_resume = 0
        self.closed = False
        self._pass_limit = min(limits.resume_below, limits.max_buffer, limits.hard_limit)

    @property
    def writable(self) -> bool:
        """May our writer send Data now."""
        return self.closed or not self.peer_paused

    @property
    def deadline(self) -> float | None:
        """When `on_timer` must be called next, None if no timer is due."""
        nudge, wake = self._nudge_at, self._wake_at
        if nudge is None or wake is None:
            return wake if nudge is None else nudge
        return min(nudge, wake)

    # -- receiving ------------------------------------------------------------------------

    def on_data(self, size: int, *, crowded: bool = False) -> tuple[bool, Signal | None]:
        """The peer's Data of ``size`` bytes arrived: (accepted, frame to send).

        Not accepted means the buffer would pass the hard limit: the connection is lost.
        ``crowded`` (the session is short of buffer space) pauses the peer above ``resume_below``.
        """
        if self.closed:
            return True, None
        if self.buffered + size > self.limits.hard_limit:
            return False, None
        self.buffered += size
        self._data_seen += 1
        if self.limits.stall:
            self._stall = self.limits.stall
        if self.nudged and self.peer_paused:
            self.peer_paused = False  # its writes flow again: it has forgotten its pause
            self.nudged = False
            self._nudge_at = None
        level = self.buffered
        threshold = self.limits.resume_below if crowded else self.limits.max_buffer
        if level > threshold and (
            not self.we_paused or level - self._pause_level >= self.limits.resume_below
        ):
            self.we_paused = True
            self._pause_level = level
            return True, Signal.PAUSE
        return True, None

    def pass_through(self, size: int) -> bool:
        """`on_data` then `on_read` of ``size`` bytes, when that is sure to ask for no frame and to
        leave no timer changed: nothing buffered or paused by us, no nudge out, ``size`` below every
        limit. True when done; False (nothing changed) when the two calls are needed."""
        if self.buffered or self.we_paused or self.nudged or self.closed or size > self._pass_limit:
            return False
        self._data_seen += 1
        if self.limits.stall:
            self._stall = self.limits.stall
        return True

    def on_read(self, size: int) -> Signal | None:
        """Our reader took ``size`` bytes from the buffer."""
        self.buffered -= size
        if self.we_paused and self.buffered < self.limits.resume_below:
            self.we_paused = False
            return None if self.closed else Signal.RESUME
        return None

    def drop_buffer(self) -> None:
        """The buffer was discarded (the connection failed)."""
        self.buffered = 0

    # -- sending --------------------------------------------------------------------------

    def on_pause(self, now: float) -> None:
        if self.closed:
            return
        if self.nudged:
            self.peer_reaffirms = True  # an answer to our nudge: it is honestly full
        self.peer_paused = True
        self.nudged = False
        self._data_at_mark = self._data_seen
        if self.limits.stall:
            self._nudge_at = now + self._stall

    def on_resume(self, now: float) -> Signal | None:
        if self.closed:
            return None
        was_paused = self.peer_paused
        self.peer_paused = False
        self.nudged = False
        self._nudge_at = None
        if self.we_paused:
            self._pause_level = self.buffered
            return Signal.PAUSE  # rule 3: still full
        if self.limits.stall and was_paused:  # only a real Resume can leave its writer asleep
            self._data_at_resume = self._data_seen
            self._wake_at = now + self.limits.stall
        return None

    def on_timer(self, now: float) -> Signal | None:
        """Run the timers due at ``now``; returns a frame to send, if any."""
        if self.closed:
            self._nudge_at = self._wake_at = None
            return None
        signal: Signal | None = None
        if self._wake_at is not None and self._wake_at <= now:
            self._wake_at = None
            quiet = self._data_seen == self._data_at_resume
            if quiet and not self.peer_paused and not self.we_paused:
                signal = Signal.RESUME
        if self._nudge_at is not None and self._nudge_at <= now:
            self._nudge_at = None
            signal = self._stall_check(now) or signal
        return signal

    def _stall_check(self, now: float) -> Signal | None:
        if not self.peer_paused:
            return None
        if self._data_seen != self._data_at_mark:  # its writes flow: not stuck
            self._data_at_mark = self._data_seen
            self._nudge_at = now + self._stall
            return None
        if self.buffered >= self.limits.resume_below:  # we hold its data: it waits on us, fairly
            self._nudge_at = now + self._stall
            return None
        self._stall = min(self._stall * 2, MAX_STALL_SECONDS)
        if self.nudged and not self.peer_reaffirms:
            self.nudged = False
            self.peer_paused = False  # rule 4: it forgot it paused us
            return None
        self.nudged = True
        self._nudge_at = now + self._stall
        return Signal.RESUME

    def close(self) -> None:
        self.closed = True
        self.peer_paused = False
        self.nudged = False
        self._nudge_at = self._wake_at = None

"""The flow-control state machine against models of its peers (hypothesis stateful testing).

`GoPeer` models remotedialer v0.6.1's connection (readbuffer.go, back_pressure.go): one
``paused`` flag for both directions, set by its own Pause and by ours, cleared by its own
Resume (which does not wake its writer) and by ours. `CorralPeer` is a second `FlowControl`.
Between them run two FIFO queues of frames; hypothesis interleaves writes, reads, deliveries and
the passing of time in any order. After any such history, letting both sides run fairly must
move every byte (no deadlock, however remotedialer's flag was left), and a corral receiver that
reads slowly is never sent more than what was in flight when it paused its sender.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from corral.tunnel.flow import FlowControl, FlowLimits, Signal

MAX_BUFFER = 64
RESUME_BELOW = 8
FRAME = 16
QUEUE = 4  # frames a direction holds in flight (a socket buffer): a writer waits when it is full
ECHO_BUFFER = 32
LIMITS = FlowLimits(max_buffer=MAX_BUFFER, resume_below=RESUME_BELOW, hard_limit=100_000, stall=0.5)


@dataclass
class Frame:
    kind: str  # "data", "pause", "resume"
    size: int = 0


@dataclass
class GoPeer:
    """remotedialer's side of one connection, its local end an echo."""

    buffered: int = 0
    paused: bool = False
    writer_asleep: bool = False
    to_write: int = 0
    out: deque[Frame] = field(default_factory=deque)

    def on_data(self, size: int) -> None:  # readBuffer.Offer
        self.buffered += size
        if self.buffered > MAX_BUFFER and not self.paused:  # backPressure.Pause
            self.out.append(Frame("pause"))
            self.paused = True

    def on_pause(self) -> None:  # backPressure.OnPause
        self.paused = True
        self.writer_asleep = False  # Broadcast

    def on_resume(self) -> None:  # backPressure.OnResume
        self.paused = False
        self.writer_asleep = False  # Broadcast

    def read(self, size: int) -> None:  # readBuffer.Read, its echo moving bytes to the writer
        size = min(size, self.buffered, ECHO_BUFFER - self.to_write)
        if size <= 0:
            return
        self.buffered -= size
        self.to_write += size
        if self.buffered < MAX_BUFFER // 8 and self.paused:  # backPressure.Resume: no Broadcast
            self.out.append(Frame("resume"))
            self.paused = False

    def write(self, room: bool) -> None:  # connection.Write: backPressure.Wait, then send
        if not self.to_write or self.writer_asleep or not room:
            return
        if self.paused:
            self.writer_asleep = True  # cond.Wait until the next Broadcast
            return
        size = min(FRAME, self.to_write)
        self.to_write -= size
        self.out.append(Frame("data", size))


@dataclass
class CorralPeer:
    """corral's side as the peer, its local end an echo."""

    flow: FlowControl = field(default_factory=lambda: FlowControl(LIMITS))
    to_write: int = 0
    out: deque[Frame] = field(default_factory=deque)

    def _emit(self, signal: Signal | None) -> None:
        if signal is not None:
            self.out.append(Frame(signal.value))

    def on_data(self, size: int) -> None:
        accepted, signal = self.flow.on_data(size)
        assert accepted, f"a corral peer was overrun: {self.flow.buffered} + {size}"
        self._emit(signal)

    def on_pause(self, now: float) -> None:
        self.flow.on_pause(now)

    def on_resume(self, now: float) -> None:
        self._emit(self.flow.on_resume(now))

    def read(self, size: int) -> None:
        size = min(size, self.flow.buffered, ECHO_BUFFER - self.to_write)
        if size > 0:
            self.to_write += size
            self._emit(self.flow.on_read(size))

    def write(self, room: bool) -> None:
        if self.to_write and self.flow.writable and room:
            size = min(FRAME, self.to_write)
            self.to_write -= size
            self.out.append(Frame("data", size))

    def tick(self, now: float) -> None:
        if (deadline := self.flow.deadline) is not None and deadline <= now:
            self._emit(self.flow.on_timer(now))


class TunnelConnection(RuleBasedStateMachine):
    """corral's end (a `FlowControl` whose reader is the application, a sink) against a peer."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.flow = FlowControl(LIMITS)
        self.to_peer: deque[Frame] = deque()
        self.peer: GoPeer | CorralPeer = GoPeer()
        self.to_send = 0
        self.received = 0
        self.sent = 0
        self.in_flight_at_pause: int | None = None

    @initialize(peer=st.sampled_from(["remotedialer", "corral"]), total=st.integers(1, 2000))
    def choose(self, peer: str, total: int) -> None:
        self.peer = GoPeer() if peer == "remotedialer" else CorralPeer()
        self.to_send = total

    def _emit(self, signal: Signal | None) -> None:
        if signal is not None:
            self.to_peer.append(Frame(signal.value))

    # -- corral's side ------------------------------------------------------------------------

    @precondition(lambda self: self.to_send > 0)
    @rule()
    def write(self) -> None:
        if self.to_send > 0 and self.flow.writable and sum(f.kind == "data" for f in self.to_peer) < QUEUE:
            size = min(FRAME, self.to_send)
            self.to_send -= size
            self.sent += size
            self.to_peer.append(Frame("data", size))

    @rule(size=st.integers(1, 40))
    def read(self, size: int) -> None:
        size = min(size, self.flow.buffered)
        if size:
            self.received += size
            self._emit(self.flow.on_read(size))

    @rule()
    def deliver_to_peer(self) -> None:
        if not self.to_peer:
            return
        frame = self.to_peer.popleft()
        peer = self.peer
        if frame.kind == "data":
            peer.on_data(frame.size)
        elif isinstance(peer, GoPeer):
            peer.on_pause() if frame.kind == "pause" else peer.on_resume()
        else:
            peer.on_pause(self.now) if frame.kind == "pause" else peer.on_resume(self.now)

    @rule()
    def deliver_to_us(self) -> None:
        if not self.peer.out:
            return
        frame = self.peer.out.popleft()
        if frame.kind == "data":
            accepted, signal = self.flow.on_data(frame.size)
            assert accepted, "the hard limit is far above anything these peers send"
            self._emit(signal)
        elif frame.kind == "pause":
            self.flow.on_pause(self.now)
        else:
            self._emit(self.flow.on_resume(self.now))

    # -- the peer's side ----------------------------------------------------------------------

    @rule(size=st.integers(1, 40))
    def peer_reads(self, size: int) -> None:
        self.peer.read(size)

    @rule()
    def peer_writes(self) -> None:
        self.peer.write(room=sum(f.kind == "data" for f in self.peer.out) < QUEUE)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        if (deadline := self.flow.deadline) is not None and deadline <= self.now:
            self._emit(self.flow.on_timer(self.now))
        if isinstance(self.peer, CorralPeer):
            self.peer.tick(self.now)

    # -- properties ---------------------------------------------------------------------------

    @invariant()
    def a_corral_peer_that_holds_us_paused_is_not_written_to(self) -> None:
        """Once every Pause and Resume has arrived, a corral receiver still full has us paused.

        (While a nudge or its answer is on the way, we may write: that is what a nudge is for.)
        """
        peer = self.peer
        flow_frames = [f for f in (*self.to_peer, *peer.out) if f.kind != "data"]
        if isinstance(peer, CorralPeer) and peer.flow.we_paused and not flow_frames:
            assert not self.flow.writable

    @invariant()
    def the_deadline_is_never_in_the_past_after_a_tick(self) -> None:
        deadline = self.flow.deadline
        assert deadline is None or deadline > self.now - 5.0

    def teardown(self) -> None:
        """Both sides now run fairly: every byte must arrive, whatever state the history left."""
        for _ in range(3_000):  # 25 virtual minutes: far past every backed-off nudge
            if self._done():
                return
            self.write()
            self.deliver_to_peer()
            self.peer.read(ECHO_BUFFER)
            self.peer_writes()
            self.deliver_to_us()
            self.read(FRAME * 4)
            self.time_passes(0.5)
        raise AssertionError(
            f"stuck at t={self.now}: {self.to_send} to send, {self.flow.buffered} buffered,"
            f" peer {self.peer}, us paused={self.flow.peer_paused} we_paused={self.flow.we_paused},"
            f" queues {list(self.to_peer)}"
        )

    def _done(self) -> bool:
        peer = self.peer
        peer_buffered = peer.buffered if isinstance(peer, GoPeer) else peer.flow.buffered
        return (
            self.to_send == 0
            and not self.to_peer
            and not peer.out
            and peer_buffered == 0
            and peer.to_write == 0
            and self.flow.buffered == 0
        )


TunnelConnection.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
test_flow_control_against_remotedialer_and_corral_peers = TunnelConnection.TestCase


# -- single rules, by example ------------------------------------------------------------------


def test_a_resume_while_we_hold_the_peer_paused_is_answered_with_pause():
    flow = FlowControl(LIMITS)
    assert flow.on_data(MAX_BUFFER + 1) == (True, Signal.PAUSE)
    assert flow.on_resume(0.0) is Signal.PAUSE
    assert flow.on_read(MAX_BUFFER + 1) is Signal.RESUME


def test_a_peer_that_answers_a_nudge_with_pause_is_never_resumed_on_our_own():
    flow = FlowControl(LIMITS)
    flow.on_pause(0.0)
    assert flow.on_timer(0.5) is Signal.RESUME  # the nudge
    flow.on_pause(0.5)  # its answer: still full
    assert flow.peer_reaffirms
    for second in range(1, 600):
        flow.on_timer(float(second))
        assert not flow.writable


def test_a_peer_that_stays_silent_after_a_nudge_has_forgotten_its_pause():
    flow = FlowControl(LIMITS)
    flow.on_pause(0.0)
    assert flow.on_timer(0.5) is Signal.RESUME
    assert flow.deadline == 1.5
    assert flow.on_timer(1.5) is None
    assert flow.writable


def test_data_past_the_hard_limit_is_refused_and_not_counted():
    flow = FlowControl(FlowLimits(max_buffer=10, resume_below=2, hard_limit=20, stall=None))
    assert flow.on_data(20)[0]
    assert flow.on_data(1) == (False, None)
    assert flow.buffered == 20


flow_events = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(0, 40), st.booleans()),
        st.tuples(st.just("read"), st.integers(0, 40), st.booleans()),
        st.tuples(st.sampled_from(["pause", "resume", "timer"]), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("drop"), st.just(0), st.booleans()),
    ),
    max_size=30,
)


@settings(max_examples=400)
@given(events=flow_events, size=st.integers(0, 80), stall=st.sampled_from([None, 0.5]))
@example(events=[("pause", 0, False), ("timer", 1, False)], size=1, stall=0.5)  # nudged
@example(events=[("data", 40, False), ("drop", 0, False)], size=1, stall=None)  # we paused, nothing held
def test_pass_through_is_on_data_then_on_read_when_it_takes_the_bytes_and_changes_nothing_when_not(
    events, size, stall
):
    limits = FlowLimits(max_buffer=32, resume_below=8, hard_limit=48, stall=stall)
    flow = FlowControl(limits)
    for kind, value, crowded in events:
        if kind == "data":
            flow.on_data(value, crowded=crowded)
        elif kind == "read":
            flow.on_read(min(value, flow.buffered))
        elif kind == "pause":
            flow.on_pause(value)
        elif kind == "resume":
            flow.on_resume(value)
        elif kind == "drop":
            flow.drop_buffer()
        else:
            flow.on_timer(value)
    before = dict(flow.__dict__)
    if flow.pass_through(size):
        for crowded in (False, True):
            copy = FlowControl(limits)
            copy.__dict__.update(before)
            assert copy.on_data(size, crowded=crowded) == (True, None)
            assert copy.on_read(size) is None
            assert copy.__dict__ == flow.__dict__
            assert copy.deadline == flow.deadline
    else:
        assert flow.__dict__ == before, "a refused pass-through leaves the state as it was"

"""Session settings: remotedialer's constants as defaults, every one adjustable for tests and load."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.tunnel.clock import Clock, SystemClock

MIB = 1 << 20
KIB = 1 << 10


class BufferBudget:
    """Bytes the connections of every session sharing it may hold (one per server process).

    A session's Data that would take the budget past ``limit_bytes`` loses its connection, as a
    connection past its own hard limit does; above half of it connections pause their peers early.
    """

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            from corral.errors import ConfigError

            raise ConfigError(f"BufferBudget.limit_bytes: must be > 0, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self.peak_bytes = 0

    def __repr__(self) -> str:
        return f"<BufferBudget {self.used_bytes}/{self.limit_bytes} bytes>"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """Timings and limits of one tunnel session (defaults are remotedialer's)."""

    ping_interval_seconds: float = 5.0
    """The client sends a websocket ping this often (remotedialer PingWriteInterval)."""
    read_deadline_seconds: float = 60.0
    """Either side drops the session after this long without a ping or pong (PingWaitDuration)."""
    sync_interval_seconds: float = 60.0
    """The client sends SyncConnections this often (SyncConnectionsInterval)."""
    max_buffer_bytes: int = 2 * MIB
    """A connection's receive buffer above this sends Pause to the peer (MaxBuffer)."""
    resume_below_bytes: int = 256 * KIB
    """A read that drains the buffer below this sends Resume (MaxBuffer / 8)."""
    hard_buffer_limit_bytes: int = 16 * MIB
    """A peer that ignores Pause past this loses the connection (an Error frame is sent)."""
    peer_stall_resume_seconds: float | None = 0.5
    """Resume a peer that paused us and then went quiet this long (see `Connection`); None: never."""
    max_session_buffer_bytes: int = 64 * MIB
    """Bytes all connections of a session may hold; Data past it loses its connection (Error), and
    above half of it connections pause their peers at ``resume_below_bytes``."""
    max_connections: int = 4096
    """Connections per session; a Connect beyond it is answered with Error, a dial raises."""
    max_pending_control_frames: int = 4096
    """Queued Pause/Resume/Error replies; a peer that makes us queue more loses the session."""
    max_frame_payload_bytes: int = 32 * KIB
    """Writes are cut into Data frames of at most this many bytes."""
    connect_timeout_seconds: float = 60.0
    """How long a dial may take (Connect write on the server, local dial on the client)."""
    send_error_timeout_seconds: float = 5.0
    """How long writing an Error frame may take (SendErrorTimeout); also how long the read loop
    waits for a peer to take our queued replies before the session ends as "peer does not read"."""
    close_timeout_seconds: float = 5.0
    """How long closing may flush: the transport's close handshake, a local stream's last bytes.
    Past it the transport or stream is aborted."""
    clock: Clock = field(default_factory=SystemClock)
    """Time source for pings, deadlines and syncs; `FakeClock` in tests."""

    def __post_init__(self) -> None:
        from corral.errors import ConfigError

        if self.resume_below_bytes > self.max_buffer_bytes:
            raise ConfigError(
                f"SessionSettings.resume_below_bytes: must be <= max_buffer_bytes ({self.max_buffer_bytes}),"
                f" got {self.resume_below_bytes}"
            )
        if self.hard_buffer_limit_bytes < self.max_buffer_bytes:
            raise ConfigError(
                "SessionSettings.hard_buffer_limit_bytes: must be >= max_buffer_bytes"
                f" ({self.max_buffer_bytes}), got {self.hard_buffer_limit_bytes}"
            )
        for name in ("ping_interval_seconds", "read_deadline_seconds", "sync_interval_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"SessionSettings.{name}: must be > 0, got {getattr(self, name)}")
        if self.max_session_buffer_bytes < self.hard_buffer_limit_bytes:
            raise ConfigError(
                "SessionSettings.max_session_buffer_bytes: must be >= hard_buffer_limit_bytes"
                f" ({self.hard_buffer_limit_bytes}), got {self.max_session_buffer_bytes}"
            )
        if self.max_frame_payload_bytes <= 0 or self.max_connections <= 0:
            raise ConfigError("SessionSettings: max_frame_payload_bytes and max_connections must be > 0")

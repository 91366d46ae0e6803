"""remotedialer-compatible tunnel: frames, sessions, session manager, transports and dialer.

Byte-compatible with rancher/remotedialer (docs/rancher.md#wire-format and the sections after it):
corral's client end works with a Go remotedialer server and corral's server end with a Go client,
as the interop tests show; corral's server (`corral.server.connect`) and agents (`corral.agent`)
are built on it. The modules follow remotedialer's files:

* `corral.tunnel.message`: `Message`, `MessageType`, `encode`, `decode` (pure, no I/O);
* `corral.tunnel.session`: `Session`, `SessionSettings`; `corral.tunnel.connection`: `Connection`;
* `corral.tunnel.manager`: `SessionManager` (sessions by client key, hooks, trace events);
* `corral.tunnel.transport`: the `FrameTransport` and `Stream` seams;
* `corral.tunnel.memory`: `memory_pair` (and `stream_pair`) for tests; `corral.tunnel.clock`: `FakeClock`;
* `corral.tunnel.websocket`: `tunnel_handler` (server) and `connect` / `TunnelClient` (agent);
  `corral.tunnel.wsframe` and `corral.tunnel.wsreader` write and read its frames;
* `corral.tunnel.dialer`: `open_connection` and `TunnelConnector` (aiohttp through a session);
* `corral.tunnel.testing`: `check_tunnel_semantics` and helpers (the public test kit).

Where remotedialer is silent or peculiar: frames of unknown type are ignored (a malformed one
ends the session); AddClient/RemoveClient are ignored (no server peers here); a connection whose
peer overruns ``hard_buffer_limit_bytes`` despite Pause is closed with Error; Connects beyond
``max_connections`` are answered with Error; the pause-flag quirks of remotedialer peers are
answered by the flow-control state machine `corral.tunnel.flow`.

Memory, whatever a peer sends (`SessionSettings` names, defaults in brackets; measured in
tests/tunnel/test_memory.py):

* a connection holds at most ``hard_buffer_limit_bytes`` [16 MiB] of received Data; a session's
  connections together at most ``max_session_buffer_bytes`` [64 MiB]; the sessions of one
  `SessionManager` together at most its ``buffer_budget_bytes`` [256 MiB]. Data past any of these
  loses its connection (Error); above half of a budget, connections pause their peers early;
* a session has at most ``max_connections`` [4096] connections, each a few KiB of state and, on
  the agent's side, three tasks and one local socket (asyncio buffers at most about 128 KiB each
  way); at most ``max_pending_control_frames + 2 * max_connections`` [12288] queued replies of at
  most about 200 bytes; and one incoming websocket message of at most ``max_message_bytes``
  [16 MiB] being read (its fragments together), plus what arrives while the session does not
  read (`corral.tunnel.websocket.KEEP_UNREAD_BYTES` [256 KiB] and one read of the socket before
  it stops reading);
* a websocket's outgoing side holds at most `corral.tunnel.wsframe.HIGH_WATER_BYTES` [256 KiB]
  plus one frame before its senders wait (what the encoder keeps for the end of a turn of the
  loop and what the transport has not yet written, together);
* a manager serves at most ``max_sessions`` [1024] sessions (a further handshake gets 503).

So a server process holds at most 256 MiB of tunnelled data plus, per session, 16 MiB for the
message being read, about 2.5 MiB of replies and a few KiB per connection; an agent at most
64 MiB of data, 16 MiB, 2.5 MiB, and about 260 KiB per connection with its local socket.
"""

from __future__ import annotations

from corral.errors import ProtocolError, SessionNotFoundError, TunnelClosedError, TunnelError
from corral.tunnel.clock import Clock, FakeClock, SystemClock
from corral.tunnel.connection import Connection
from corral.tunnel.dialer import TunnelConnector, open_connection
from corral.tunnel.manager import SessionManager
from corral.tunnel.memory import memory_pair, stream_pair
from corral.tunnel.message import Message, MessageType, decode, encode
from corral.tunnel.session import ConnectAuthorizer, Session
from corral.tunnel.settings import BufferBudget, SessionSettings
from corral.tunnel.transport import Frame, FrameKind, FrameTransport, LocalDialer, Stream
from corral.tunnel.websocket import HandshakeError, TunnelClient, WebSocketTransport, connect, tunnel_handler

__all__ = [
    "BufferBudget",
    "Clock",
    "ConnectAuthorizer",
    "Connection",
    "FakeClock",
    "Frame",
    "FrameKind",
    "FrameTransport",
    "HandshakeError",
    "LocalDialer",
    "Message",
    "MessageType",
    "ProtocolError",
    "Session",
    "SessionManager",
    "SessionNotFoundError",
    "SessionSettings",
    "Stream",
    "SystemClock",
    "TunnelClient",
    "TunnelClosedError",
    "TunnelConnector",
    "TunnelError",
    "WebSocketTransport",
    "connect",
    "decode",
    "encode",
    "memory_pair",
    "open_connection",
    "stream_pair",
    "tunnel_handler",
]

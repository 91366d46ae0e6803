"""remotedialer-compatible tunnel: frames, sessions, session manager, transports and dialer.

Byte-compatible with rancher/remotedialer (docs/rancher.md#wire-format and the sections after it):
corral's client end works with a Go remotedialer server and corral's server end with a Go client,
as the interop tests show; it is the seam a corral server and agents are to be built on. The
modules follow remotedialer's files:

* `corral.tunnel.message`: `Message`, `MessageType`, `encode`, `decode` (pure, no I/O);
* `corral.tunnel.session`: `Session`, `SessionSettings`; `corral.tunnel.connection`: `Connection`;
* `corral.tunnel.manager`: `SessionManager` (sessions by client key, hooks, trace events);
* `corral.tunnel.transport`: the `FrameTransport` and `Stream` seams;
* `corral.tunnel.memory`: `memory_pair` (and `stream_pair`) for tests; `corral.tunnel.clock`: `FakeClock`;
* `corral.tunnel.websocket`: `tunnel_handler` (server) and `connect` / `TunnelClient` (agent);
* `corral.tunnel.dialer`: `open_connection` and `TunnelConnector` (aiohttp through a session);
* `corral.tunnel.testing`: `check_tunnel_semantics` and helpers (the public test kit).

Where remotedialer is silent or peculiar: frames of unknown type are ignored (a malformed one
ends the session); AddClient/RemoveClient are ignored (no server peers here); a connection whose
peer overruns ``hard_buffer_limit_bytes`` despite Pause is closed with Error; Connects beyond
``max_connections`` are answered with Error; the pause-flag quirks of remotedialer peers are
worked around in `corral.tunnel.connection`.
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
from corral.tunnel.settings import SessionSettings
from corral.tunnel.transport import Frame, FrameKind, FrameTransport, LocalDialer, Stream
from corral.tunnel.websocket import HandshakeError, TunnelClient, WebSocketTransport, connect, tunnel_handler

__all__ = [
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

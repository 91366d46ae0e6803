"""The server's session manager: tunnel sessions by client key, as remotedialer's session_manager.go.

Several sessions may share a client key (an agent reconnecting before its old session is gone,
or several agents of one cluster); dials go through the *first* one still registered. The
manager announces sessions through hooks and through the shared trace events `TunnelOpened` and
`TunnelClosed`, so whatever routes requests through the sessions and the trace checks see the
same history.

Client keys follow Rancher: ``<cluster>`` for a cluster agent, ``<cluster>:<node>`` for a node
agent; the trace's ``agent`` field is ``cluster-agent`` or ``node-agent/<node>`` accordingly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from corral.errors import SessionNotFoundError, TunnelError
from corral.model.trace import Event, TunnelClosed, TunnelOpened
from corral.tunnel.connection import Connection
from corral.tunnel.message import printable
from corral.tunnel.session import Session
from corral.tunnel.settings import MIB, BufferBudget

logger = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 1024
DEFAULT_BUFFER_BUDGET_BYTES = 256 * MIB

SessionHook = Callable[[str, Session], None]
TraceSink = Callable[[Event], None]


def trace_identity(client_key: str) -> tuple[str, str]:
    """``(cluster, agent)`` of a client key, as the trace names them."""
    cluster, sep, node = client_key.partition(":")
    return cluster, (f"node-agent/{node}" if sep else "cluster-agent")


class SessionManager:
    """Live tunnel sessions by client key."""

    def __init__(
        self,
        *,
        on_connect: SessionHook | None = None,
        on_disconnect: SessionHook | None = None,
        trace_sink: TraceSink | None = None,
        trace_time: Callable[[], float] | None = None,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        buffer_budget_bytes: int = DEFAULT_BUFFER_BUDGET_BYTES,
    ) -> None:
        self._sessions: dict[str, list[Session]] = {}
        self.max_sessions = max_sessions
        self.budget = BufferBudget(buffer_budget_bytes)
        """What the connections of all sessions served here may hold together."""
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.trace_sink = trace_sink
        start = time.monotonic()
        self._trace_time = trace_time or (lambda: time.monotonic() - start)

    @property
    def session_count(self) -> int:
        return sum(len(sessions) for sessions in self._sessions.values())

    @property
    def full(self) -> bool:
        """As many sessions as ``max_sessions``: a new tunnel is refused (503)."""
        return self.session_count >= self.max_sessions

    def add(self, client_key: str, session: Session) -> None:
        """Register a session (appended: an earlier session of the key keeps serving dials).

        `TunnelError` when ``max_sessions`` are registered already.
        """
        sessions = self._sessions.get(client_key, [])
        if session in sessions:
            return
        if self.full:
            raise TunnelError(f"{self.session_count} tunnel sessions, the limit (max_sessions)")
        sessions = self._sessions.setdefault(client_key, [])
        sessions.append(session)
        session.add_close_callback(self.remove)  # a session that ends never stays registered
        logger.info("tunnel session %s added for %r (%d)", session.session_key, client_key, len(sessions))
        if self.trace_sink is not None:
            cluster, agent = trace_identity(client_key)
            self.trace_sink(TunnelOpened(t=self._trace_time(), cluster=cluster, agent=agent))
        if self.on_connect is not None:
            self.on_connect(client_key, session)

    def remove(self, session: Session) -> None:
        """Forget a session (whatever key it was added under) and close it. Idempotent."""
        for client_key, sessions in list(self._sessions.items()):
            if session not in sessions:
                continue
            sessions.remove(session)
            if not sessions:
                del self._sessions[client_key]
            reason = session.close_reason or "removed"
            logger.info(
                "tunnel session %s removed for %r: %s", session.session_key, client_key, printable(reason)
            )
            if self.trace_sink is not None:
                cluster, agent = trace_identity(client_key)
                event = TunnelClosed(t=self._trace_time(), cluster=cluster, agent=agent, reason=reason)
                self.trace_sink(event)
            if self.on_disconnect is not None:
                self.on_disconnect(client_key, session)
        if not session.closed:
            session.close_soon("removed from session manager")

    def has_session(self, client_key: str) -> bool:
        return bool(self._sessions.get(client_key))

    def sessions(self, client_key: str) -> list[Session]:
        """The sessions of a key, first (the one dials use) first."""
        return list(self._sessions.get(client_key, ()))

    def client_keys(self) -> list[str]:
        return sorted(self._sessions)

    def first(self, client_key: str) -> Session:
        """The session dials for ``client_key`` go through; `SessionNotFoundError` if none."""
        for session in self._sessions.get(client_key, ()):
            if not session.closed:
                return session
        raise SessionNotFoundError(f"failed to find Session for client {client_key}")

    async def dial(
        self, client_key: str, proto: str, address: str, *, timeout_seconds: float | None = None
    ) -> Connection:
        """Dial ``proto``/``address`` on the agent's side through the key's first session."""
        return await self.first(client_key).dial(proto, address, timeout_seconds=timeout_seconds)

    async def serve(self, client_key: str, session: Session) -> str:
        """Add, serve until the session ends, remove; returns why it ended."""
        self.add(client_key, session)
        try:
            return await session.serve()
        finally:
            self.remove(session)

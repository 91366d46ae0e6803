"""Public test kit of the tunnel: session pairs, in-memory services, and one generic semantics check.

`check_tunnel_semantics(make_pair)` is written once, like trio's ``check_two_way_stream``, and
runs against any way of connecting a server session to a client session: the in-memory pair,
a loopback websocket pair, a real agent. ``make_pair(connect_authorizer, local_dialer)`` is an
async context manager that yields ``(server_session, client_session)``, both being served.
The client side dials through `ServiceDialer`, whose in-memory services (echo, sink, source,
refuse) let the check observe both ends of every connection without opening sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from corral.errors import TunnelError
from corral.tunnel.clock import FakeClock, settle
from corral.tunnel.connection import Connection
from corral.tunnel.memory import MemoryStream, memory_pair, stream_pair
from corral.tunnel.session import ConnectAuthorizer, Role, Session
from corral.tunnel.settings import SessionSettings
from corral.tunnel.transport import LocalDialer, Stream

__all__ = [
    "MakePair",
    "ServiceDialer",
    "allow_all",
    "check_tunnel_semantics",
    "feed_frames",
    "memory_session_pair",
    "read_exactly",
    "serving",
    "wait_until",
    "websocket_session_pair",
]

SESSION_TASKS = 4
"""A session's own tasks: control writer, read deadline, and on the client pings and syncs."""
TASKS_PER_CONNECTION = 3
"""On the agent's side: the local dial and pipe, and one copy each way."""

MakePair = Callable[[ConnectAuthorizer, LocalDialer], AbstractAsyncContextManager[tuple[Session, Session]]]


def allow_all(proto: str, address: str) -> bool:
    return True


@dataclass
class ServiceDialer:
    """A `LocalDialer` onto in-memory services, addressed ``mem/<service>[:<arg>]``.

    ``echo`` writes back what it reads; ``sink`` counts what it reads into `received`;
    ``source:<n>`` writes n bytes then closes; ``refuse`` fails the dial like a closed port;
    ``hold`` accepts and never reads (for back-pressure); ``discard`` counts into `counts`.
    """

    received: dict[str, bytearray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    dialed: list[str] = field(default_factory=list)
    peers: dict[str, MemoryStream] = field(default_factory=dict)
    limit_bytes: int = 256 * 1024
    """What each in-memory stream buffers per direction (a target that does not read holds this)."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __call__(self, proto: str, address: str) -> Stream:
        self.dialed.append(f"{proto}/{address}")
        service, _, arg = address.partition(":")
        if proto != "mem" or service not in {"echo", "sink", "source", "refuse", "hold", "discard"}:
            raise OSError(f"dial {proto} {address}: no such service")
        if service == "refuse":
            raise ConnectionRefusedError(f"dial {proto} {address}: connection refused")
        ours, theirs = stream_pair(limit_bytes=self.limit_bytes)
        self.peers[address] = theirs
        if service == "echo":
            self._start(_echo(theirs))
        elif service == "sink":
            self.received[address] = bytearray()
            self._start(_sink(theirs, self.received[address]))
        elif service == "discard":
            self.counts[address] = 0
            self._start(self._discard(theirs, address))
        elif service == "source":
            self._start(_source(theirs, int(arg or "0")))
        return ours

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _discard(self, stream: MemoryStream, address: str) -> None:
        while chunk := await stream.read(65536):
            self.counts[address] += len(chunk)
        await stream.close()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _echo(stream: MemoryStream) -> None:
    while chunk := await stream.read(65536):
        await stream.write(chunk)
    await stream.close()


async def _sink(stream: MemoryStream, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk
    await stream.close()


async def _source(stream: MemoryStream, size: int) -> None:
    block = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        await stream.write(piece)
        sent += len(piece)
    await stream.close()


async def read_exactly(conn: Connection, size: int, *, timeout_seconds: float = 10.0) -> bytes:
    """Read exactly ``size`` bytes or fail with what arrived."""
    out = bytearray()
    async with asyncio.timeout(timeout_seconds):
        while len(out) < size:
            chunk = await conn.read(size - len(out))
            if not chunk:
                raise AssertionError(f"connection ended after {len(out)} of {size} bytes")
            out += chunk
    return bytes(out)


@asynccontextmanager
async def serving(*sessions: Session) -> AsyncIterator[list[asyncio.Task[str]]]:
    """Serve sessions for the body of a ``with``; close them and wait for them on the way out."""
    tasks = [asyncio.ensure_future(s.serve()) for s in sessions]
    try:
        await settle()
        yield tasks
    finally:
        for s in sessions:
            await s.close("test over")
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def memory_session_pair(
    connect_authorizer: ConnectAuthorizer | None = allow_all,
    local_dialer: LocalDialer | None = None,
    *,
    settings: SessionSettings | None = None,
    client_settings: SessionSettings | None = None,
    client_key: str = "c-test",
    push: bool = True,
) -> AsyncIterator[tuple[Session, Session]]:
    """A served (server, client) session pair over `memory_pair` (``push=False``: read with receive)."""
    server_end, client_end = memory_pair(push=push)
    dialer = local_dialer or ServiceDialer()
    server = Session(server_end, role="server", client_key=client_key, settings=settings)
    client = Session(
        client_end,
        role="client",
        connect_authorizer=connect_authorizer,
        local_dialer=dialer,
        settings=client_settings or settings,
    )
    async with serving(server, client):
        yield server, client
    if isinstance(dialer, ServiceDialer):
        await dialer.aclose()


@asynccontextmanager
async def websocket_session_pair(
    connect_authorizer: ConnectAuthorizer | None = allow_all,
    local_dialer: LocalDialer | None = None,
    *,
    settings: SessionSettings | None = None,
    client_key: str = "c-test",
) -> AsyncIterator[tuple[Session, Session]]:
    """A (server, client) session pair over a real aiohttp websocket on 127.0.0.1."""
    from aiohttp import web

    from corral.tunnel.manager import SessionManager
    from corral.tunnel.websocket import TunnelClient, tunnel_handler

    manager = SessionManager()

    async def authorize(request: web.Request) -> tuple[str, bool]:
        return request.headers.get("X-Tunnel-ID", ""), True

    app = web.Application()
    app.router.add_get("/v3/connect", tunnel_handler(manager, authorize, settings=settings))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    dialer = local_dialer or ServiceDialer()
    client = TunnelClient(
        f"ws://127.0.0.1:{port}/v3/connect",
        headers={"X-Tunnel-ID": client_key},
        connect_authorizer=connect_authorizer or (lambda proto, address: False),
        local_dialer=dialer,
        settings=settings,
    )
    try:
        await client.start()
        await wait_until(lambda: manager.has_session(client_key), "the server registers the session")
        yield manager.first(client_key), client.session
    finally:
        await client.close("test over")
        await runner.cleanup()
        if isinstance(dialer, ServiceDialer):
            await dialer.aclose()


async def feed_frames(
    frames: Iterable[bytes | str],
    *,
    role: Role = "server",
    settings: SessionSettings | None = None,
    predial: int = 4,
) -> str:
    """Feed raw frames (str = a text frame) to a served session; return why it ended.

    The bad-input harness of the property tests and the fuzzer: whatever arrives, `Session.serve`
    must return (never raise), and connections and buffered bytes must stay under their caps
    after every frame (checked here with assertions). A server session first dials ``predial``
    connections so Data, Error, Pause and SyncConnections have something to act on; a client
    session allows every Connect except to ``deny`` and dials only in-memory services.
    """
    settings = settings or SessionSettings(
        clock=FakeClock(),
        max_connections=32,
        max_buffer_bytes=4096,
        resume_below_bytes=512,
        hard_buffer_limit_bytes=16384,
        max_pending_control_frames=256,
    )
    ours, theirs = memory_pair(max_queued_frames=1 << 16)
    dialer = ServiceDialer(limit_bytes=1024)
    session = Session(
        ours,
        role=role,
        connect_authorizer=(lambda proto, address: address != "deny") if role == "client" else None,
        local_dialer=dialer,
        settings=settings,
    )
    task = asyncio.ensure_future(session.serve())
    await settle()
    if role == "server":
        for _ in range(predial):
            await session.dial("mem", "echo")
    byte_cap = min(
        settings.max_connections * settings.hard_buffer_limit_bytes, settings.max_session_buffer_bytes
    )
    reply_cap = settings.max_pending_control_frames + 2 * settings.max_connections
    task_cap = SESSION_TASKS + TASKS_PER_CONNECTION * settings.max_connections
    try:
        for frame in frames:
            if session.closed:
                break
            if isinstance(frame, str):
                await theirs.send_text(frame)
            else:
                await theirs.send(frame)
            await settle()
            theirs._inbox.clear()  # the peer reads and drops our replies
            theirs._queued_binary = 0
            theirs._changed.notify()
            assert len(session.conns) <= settings.max_connections, f"{len(session.conns)} connections"
            assert session.buffered_bytes <= byte_cap, f"{session.buffered_bytes} bytes buffered"
            for conn in session.conns.values():
                assert conn.buffered_bytes <= settings.hard_buffer_limit_bytes
            assert session.pending_control_frames <= reply_cap, f"{session.pending_control_frames} replies"
            assert session.task_count <= task_cap, f"{session.task_count} tasks"
    finally:
        await session.close("input fed")
        reason = await task
        await settle()
        await dialer.aclose()
    assert session.peak_buffered_bytes <= byte_cap
    assert session.task_count == 0, f"{session.task_count} tasks outlive the session"
    assert session.buffered_bytes == 0, f"{session.buffered_bytes} bytes outlive the session"
    return reason


# -- the generic check ------------------------------------------------------------------------


async def check_tunnel_semantics(make_pair: MakePair) -> None:
    """Everything a remotedialer-compatible session pair must do, whatever carries its frames."""
    await _check_round_trip_and_order(make_pair)
    await _check_close_from_each_side(make_pair)
    await _check_refused_dial_and_unknown_data(make_pair)
    await _check_back_pressure(make_pair)
    await _check_refusal_ends_the_session(make_pair)
    await _check_session_close_ends_connections(make_pair)


async def _check_round_trip_and_order(make_pair: MakePair) -> None:
    dialer = ServiceDialer()
    async with make_pair(allow_all, dialer) as (server, _client):
        conns = [await server.dial("mem", "echo") for _ in range(3)]
        assert [c.conn_id for c in conns] == [2, 3, 4], f"connection ids must start at 2: {conns}"
        for i, conn in enumerate(conns):
            await conn.write(b"%d:" % i + bytes(range(256)) * 40)
        for i, conn in enumerate(conns):
            expected = b"%d:" % i + bytes(range(256)) * 40
            assert await read_exactly(conn, len(expected)) == expected
        for conn in conns:
            await conn.close()
    await dialer.aclose()


async def _check_close_from_each_side(make_pair: MakePair) -> None:
    dialer = ServiceDialer()
    async with make_pair(allow_all, dialer) as (server, client):
        source = await server.dial("mem", "source:5000")
        assert len(await read_exactly(source, 5000)) == 5000
        assert await _read_to_end(source) == b"", "a clean remote close must read as end of stream"
        assert source.close_reason == "EOF"

        sink = await server.dial("mem", "sink")
        await sink.write(b"x" * 1000)
        await sink.close()
        await wait_until(lambda: sink.conn_id not in client.conns, "client forgets a closed connection")
        await wait_until(lambda: len(dialer.received.get("sink", b"")) == 1000, "data before close arrives")
        await _error_of(sink.write(b"late"), "writing to a closed connection must raise TunnelClosedError")
    await dialer.aclose()


async def _check_refused_dial_and_unknown_data(make_pair: MakePair) -> None:
    dialer = ServiceDialer()
    async with make_pair(allow_all, dialer) as (server, client):
        refused = await server.dial("mem", "refuse")
        text = await _error_of(_read_to_end(refused), "a failed local dial must end it with an error")
        assert "connection refused" in text, text
        assert not server.closed, "a failed dial must not end the session"
        assert not client.closed, "a failed dial must not end the session"
        ok = await server.dial("mem", "echo")
        await ok.write(b"still works")
        assert await read_exactly(ok, 11) == b"still works"
    await dialer.aclose()


async def _check_back_pressure(make_pair: MakePair) -> None:
    dialer = ServiceDialer()
    async with make_pair(allow_all, dialer) as (server, client):
        total = 2 * client.settings.hard_buffer_limit_bytes  # more than any transport holds in flight
        conn = await server.dial("mem", "hold")
        writer = asyncio.ensure_future(conn.write(b"p" * total))
        await wait_until(lambda: conn.paused_by_peer, "the receiver pauses the writer")
        remote = client.conns[conn.conn_id]
        assert not writer.done(), "a paused writer waits"
        bound = client.settings.hard_buffer_limit_bytes
        assert remote.buffered_bytes <= bound, f"{remote.buffered_bytes} buffered, bound {bound}"
        assert not remote.closed, f"a paused writer must not overrun the receiver: {remote.close_reason}"
        peer_stream = dialer.peers["hold"]
        received = 0
        async with asyncio.timeout(30):
            while received < total:
                received += len(await peer_stream.read(65536))
        await writer
        assert received == total
    await dialer.aclose()


async def _check_refusal_ends_the_session(make_pair: MakePair) -> None:
    dialer = ServiceDialer()

    def only_echo(proto: str, address: str) -> bool:
        return address == "echo"

    async with make_pair(only_echo, dialer) as (server, client):
        await server.dial("mem", "sink")
        reason = await asyncio.wait_for(client.wait_closed(), 10)
        assert "connect not allowed" in reason, reason
        await asyncio.wait_for(server.wait_closed(), 10)
        assert dialer.dialed == [], "a refused Connect must never be dialed"
    await dialer.aclose()


async def _check_session_close_ends_connections(make_pair: MakePair) -> None:
    dialer = ServiceDialer()
    async with make_pair(allow_all, dialer) as (server, client):
        conns = [await server.dial("mem", "echo") for _ in range(5)]
        await conns[0].write(b"a")
        await read_exactly(conns[0], 1)
        await client.close("agent going away")
        await asyncio.wait_for(server.wait_closed(), 10)
        for conn in conns:
            text = await _error_of(_read_to_end(conn), "a closed session must end its connections")
            assert "tunnel disconnect" in text, text
        await _error_of(server.dial("mem", "echo"), "dialing through a closed session must fail")
    await dialer.aclose()


async def _read_to_end(conn: Connection, *, timeout_seconds: float = 10.0) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout_seconds):
        while chunk := await conn.read():
            out += chunk
    return bytes(out)


async def _error_of(awaitable: Awaitable[object], expectation: str) -> str:
    """Await something that must fail with a `TunnelError`; returns its message."""
    try:
        await awaitable
    except TunnelError as exc:
        return str(exc)
    raise AssertionError(expectation)


async def wait_until(predicate: Callable[[], bool], what: str, *, timeout_seconds: float = 10.0) -> None:
    """Poll a condition another task will make true (bounded in time)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_seconds
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.001)

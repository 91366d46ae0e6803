"""In-test seams for the proxy: fake token store, cluster lookup, accounts, reviewer, a recording downstream.

The downstream is a real HTTP server on loopback that records every request's raw headers, so the
tests see exactly what would reach a kube-apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.model.trace import Event
from corral.server.proxy import AuthProxy, ProxySettings
from corral.server.proxy_dial import DirectDialer
from corral.server.proxy_front import ProxyFront
from corral.server.proxy_interfaces import (
    AccessReview,
    AccessReviewError,
    AuthenticationError,
    AuthRequest,
    ClusterTarget,
    DialError,
    ImpersonationAccountError,
    ServiceAccountTokenError,
)

ALICE_TOKEN = "token-alice:s3cretalice"
BOB_TOKEN = "token-bob:s3cretbob"
ADMIN_TOKEN = "token-admin:s3cretadmin"
ALICE = UserInfo(
    name="u-alice",
    groups=(*AUTHENTICATED_GROUPS, "local://g-dev"),
    extras={"principalid": ("local://u-alice",), "username": ("alice", "")},
    token_name="token-alice",
)
BOB = UserInfo(name="u-bob", token_name="token-bob")
ADMIN = UserInfo(name="u-admin", token_name="token-admin")
BLOCK = bytes(range(256)) * 256  # 64 KiB


class FakeAuthenticator:
    def __init__(self) -> None:
        self.users = {ALICE_TOKEN: ALICE, BOB_TOKEN: BOB, ADMIN_TOKEN: ADMIN}
        self.token_owners = {"token-alice": "u-alice", "token-bob": "u-bob"}

    async def authenticate(self, request: AuthRequest) -> UserInfo:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if not header:
            value = request.cookies.get("R_SESS", "")
        elif scheme.lower() != "bearer":
            raise AuthenticationError("unsupported authorization scheme")
        user = self.users.get(value.strip())
        if user is None:
            raise AuthenticationError("must authenticate")
        return user

    async def token_owner(self, token_name: str) -> str | None:
        return self.token_owners.get(token_name)


@dataclass
class FakeClusters:
    targets: dict[str, ClusterTarget] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)  # user -> clusters; "*" for all

    async def can_access(self, cluster: str, user: UserInfo) -> bool:
        allowed = self.members.get(user.name, set())
        return "*" in allowed or cluster in allowed

    async def get(self, cluster: str) -> ClusterTarget | None:
        return self.targets.get(cluster)


class FakeAccounts:
    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.asked: list[tuple[str, UserInfo]] = []

    async def token_for(self, cluster: str, user: UserInfo) -> str:
        self.asked.append((cluster, user))
        if cluster in self.broken:
            raise ImpersonationAccountError("the cluster refused the service account")
        return f"sa-token-{user.name}"


class FakeServiceAccountTokens:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str, int]] = []
        self.fail = False

    async def token_for(self, cluster: str, *, namespace: str, name: str, expiration_seconds: int) -> str:
        self.asked.append((cluster, namespace, name, expiration_seconds))
        if self.fail:
            raise ServiceAccountTokenError("serviceaccounts not found")
        return f"tokenrequest-{namespace}-{name}"


class FakeReviewer:
    """Allows exactly the (user, resource, namespace, name) tuples in ``grants``; records every review."""

    def __init__(self) -> None:
        self.grants: set[tuple[str, str, str, str]] = set()
        self.reviews: list[tuple[AccessReview, str | None]] = []
        self.fail = False

    async def allowed(self, review: AccessReview, *, cluster: str | None) -> bool:
        self.reviews.append((review, cluster))
        if self.fail:
            raise AccessReviewError("the management cluster is unreachable")
        return (review.user, review.resource, review.namespace, review.name) in self.grants


class RefusingDialer:
    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        raise DialError("cluster agent disconnected")


class SmallBufferDialer(DirectDialer):
    """Direct dialing with a small, fixed receive buffer (no autotuning), for back-pressure tests."""

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        sock = await super().dial(cluster, host, port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        return sock


@dataclass
class Recorded:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Downstream:
    """A recording HTTP server standing in for a kube-apiserver."""

    requests: list[Recorded] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    big_written: int = 0
    big_done: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("GET", "/ws", self.websocket)
        app.router.add_route("GET", "/slow", self.slow)
        app.router.add_route("GET", "/big/{blocks}", self.big)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    def _record(self, request: web.Request, body: bytes) -> None:
        headers = [(n.decode("latin-1"), v.decode("utf-8")) for n, v in request.raw_headers]
        self.requests.append(Recorded(request.method, request.raw_path, headers, body))

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._record(request, body)
        return web.json_response(
            {"path": request.raw_path, "body_sha256": hashlib.sha256(body).hexdigest()},
            headers={
                "X-Downstream": "yes",
                "Keep-Alive": "timeout=5",
                "Connection": "X-Secret-Hop",
                "X-Secret-Hop": "hop value",
            },
        )

    async def slow(self, request: web.Request) -> web.StreamResponse:
        """Two chunks; the second only after the test releases it."""
        self._record(request, b"")
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        await self.release.wait()
        await response.write(b'{"type":"MODIFIED"}\n')
        await response.write_eof()
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        """``blocks`` x 64 KiB, counting what the socket accepted."""
        self._record(request, b"")
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        response = web.StreamResponse()
        response.content_length = int(request.match_info["blocks"]) * len(BLOCK)
        await response.prepare(request)
        for _ in range(int(request.match_info["blocks"])):
            await response.write(BLOCK)
            self.big_written += len(BLOCK)
        await response.write_eof()
        self.big_done.set()
        return response

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        self._record(request, b"")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
        return ws


class RawUpgradeServer:
    """Answers any request with 101 (SPDY/3.1) and echoes bytes after it, recording the request head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            if b"/refuse" in head.split(b"\r\n", 1)[0]:
                body = b'pods "x" is forbidden'
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                await writer.drain()
                return
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
            )
            await writer.drain()
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def listening_socket(*, send_buffer: int | None = None) -> socket.socket:
    """A loopback listener; accepted sockets inherit a fixed send buffer when one is given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(  # type: ignore[no-untyped-def]
    app: web.Application,
    *,
    send_buffer: int | None = None,
    proxy: AuthProxy | None = None,
    fronts: list[ProxyFront] | None = None,
):
    """Serve ``app`` on loopback; with ``proxy``, behind its front (added to ``fronts``) as in the server."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = listening_socket(send_buffer=send_buffer)
    front = None
    if proxy is not None and runner.server is not None:
        proxy.serve_first(runner.server)
        front = ProxyFront(proxy, runner.server)
        if fronts is not None:
            fronts.append(front)
        listener = await asyncio.get_running_loop().create_server(front, sock=sock)
    else:
        await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if front is not None:
            listener.close()
            await front.shutdown(1.0)
        await runner.cleanup()


@dataclass
class World:
    proxy: AuthProxy
    url: str
    downstream: Downstream
    clusters: FakeClusters
    accounts: FakeAccounts
    reviewer: FakeReviewer
    sa_tokens: FakeServiceAccountTokens
    events: list[Event]
    downstream_url: str
    front: ProxyFront


@contextlib.asynccontextmanager
async def world(*, settings: ProxySettings | None = None, dialer=None, proxy_send_buffer=None):  # type: ignore[no-untyped-def]
    downstream = Downstream()
    async with serve(downstream.app()) as downstream_url:
        clusters = FakeClusters(
            targets={
                "c-1": ClusterTarget(name="c-1", api_endpoint=downstream_url),
                "c-new": ClusterTarget(name="c-new", api_endpoint=downstream_url, provisioned=False),
                "c-broken": ClusterTarget(name="c-broken", api_endpoint=downstream_url),
                "c-gone": ClusterTarget(name="c-gone", api_endpoint="http://127.0.0.1:9"),
            },
            members={"u-alice": {"c-1", "c-new", "c-broken", "c-gone", "c-nowhere"}, "u-admin": {"*"}},
        )
        accounts = FakeAccounts()
        accounts.broken.add("c-broken")
        reviewer = FakeReviewer()
        sa_tokens = FakeServiceAccountTokens()
        events: list[Event] = []
        proxy = AuthProxy(
            authenticator=FakeAuthenticator(),
            clusters=clusters,
            accounts=accounts,
            reviewer=reviewer,
            service_account_tokens=sa_tokens,
            dialer=dialer or DirectDialer(timeout_seconds=5),
            settings=settings,
            trace_sink=events.append,
        )
        app = web.Application()
        proxy.add_routes(app)
        try:
            fronts: list[ProxyFront] = []
            async with serve(app, send_buffer=proxy_send_buffer, proxy=proxy, fronts=fronts) as url:
                yield World(
                    proxy,
                    url,
                    downstream,
                    clusters,
                    accounts,
                    reviewer,
                    sa_tokens,
                    events,
                    downstream_url,
                    fronts[0],
                )
        finally:
            downstream.release.set()
            await proxy.close()

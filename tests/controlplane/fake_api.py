"""A loopback HTTP(S) server that plays the apiserver for the client tests.

It answers by (method, path without query) from a table, records every request (method, full
path, header lines in order, decoded body, the client certificate's CN), and can speak TLS with
a serving certificate and an optional client CA.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: An answer: (status, JSON-able body or raw bytes); a list of them is served in turn, the last repeated.
Answer = tuple[int, Any]


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: Any
    client_cn: str | None

    def header(self, name: str) -> list[str]:
        """Every value of a header, compared case-insensitively as HTTP does."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.path.partition("?")[2]))


@dataclass
class FakeAPI:
    answers: dict[tuple[str, str], Answer | list[Answer] | Callable[[Seen], Answer]] = field(
        default_factory=dict
    )
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def answer(self, request: Seen) -> Answer:
        entry = self.answers.get((request.method, request.bare_path))
        if entry is None:
            return 404, {"kind": "Status", "reason": "NotFound", "message": "nope", "code": 404}
        if callable(entry):
            return entry(request)
        if isinstance(entry, list):
            return entry.pop(0) if len(entry) > 1 else entry[0]
        return entry


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[FakeAPI]:
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            client_cn = None
            for rdn in (peer or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        client_cn = value
            seen = Seen(self.command, self.path, list(self.headers.items()), _decode(raw), client_cn)
            fake.seen.append(seen)
            status, body = fake.answer(seen)
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def watch_stream(*events: tuple[str, dict[str, Any]]) -> bytes:
    """A watch body: one JSON event per line."""
    return b"".join(json.dumps({"type": kind, "object": obj}).encode() + b"\n" for kind, obj in events)

"""A tiny TokenReview webhook on loopback for tests: records each review and answers from a table."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from corral.controlplane.pki import CertificateAuthority
from corral.k8s import KubeConfig


@dataclass
class Responder:
    """Tokens it accepts (token -> (user, groups)) and the reviews it received."""

    accepted: Mapping[str, tuple[str, tuple[str, ...]]]
    reviews: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    ca_pem: bytes | None = None

    def answer(self, review: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(review)
        token = review.get("spec", {}).get("token", "")
        status: dict[str, Any] = {"authenticated": False}
        if token in self.accepted:
            user, groups = self.accepted[token]
            status = {"authenticated": True, "user": {"username": user, "uid": user, "groups": list(groups)}}
        return {"apiVersion": review.get("apiVersion"), "kind": "TokenReview", "status": status}

    def webhook_config(self, path: Path) -> Path:
        """The apiserver's ``--authentication-token-webhook-config-file`` pointing here."""
        return KubeConfig(
            server=self.url, ca_pem=self.ca_pem, cluster_name="webhook", user_name="apiserver"
        ).write(path)


@contextmanager
def serve(
    accepted: Mapping[str, tuple[str, tuple[str, ...]]], *, tls: bool, folder: Path
) -> Iterator[Responder]:
    responder = Responder(accepted)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            payload = json.dumps(responder.answer(json.loads(body))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls:
        ca = CertificateAuthority.create("tokenreview-responder-ca")
        pair = ca.issue_serving("responder", hosts=["127.0.0.1"])
        (folder / "responder.pem").write_bytes(pair.cert_pem + pair.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "responder.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        responder.ca_pem = ca.cert_pem
        scheme = "https"
    responder.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/authenticate"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield responder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

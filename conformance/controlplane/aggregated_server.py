"""A tiny aggregated API server on loopback for tests: one group, one version, one read-only resource.

It serves TLS with a certificate of its own CA, demands a client certificate from the front-proxy CA
(as extension servers do, with the CA read from ``kube-system/extension-apiserver-authentication``),
accepts only the allowed front-proxy names, and records who the apiserver said the caller is
(``X-Remote-User``, ``X-Remote-Group``, ``X-Remote-Extra-*``).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from corral.controlplane.pki import CertificateAuthority

RESOURCE = "widgets"
KIND = "Widget"
WIDGETS = ("gear", "sprocket")


@dataclass(frozen=True)
class Call:
    """One request as the aggregated server saw it."""

    path: str
    proxy_name: str
    user: str
    groups: tuple[str, ...]
    extra: dict[str, tuple[str, ...]]


@dataclass
class AggregatedServer:
    """Where it listens, the CA the apiserver must trust for it, and the calls it served."""

    group: str
    version: str
    port: int = 0
    ca_pem: bytes = b""
    calls: list[Call] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Client certificate names that are not allowed front proxies."""
    handshake_errors: list[str] = field(default_factory=list)
    """Why TLS handshakes failed (no client certificate, one of another CA)."""

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def answer(self, path: str) -> dict[str, Any] | None:
        group_version = f"{self.group}/{self.version}"
        version_entry = {"groupVersion": group_version, "version": self.version}
        group_entry = {"name": self.group, "versions": [version_entry], "preferredVersion": version_entry}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_entry]}
        if path == f"/apis/{self.group}":
            return {"kind": "APIGroup", "apiVersion": "v1", **group_entry}
        if path == f"/apis/{group_version}":
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": [
                    {
                        "name": RESOURCE,
                        "singularName": "widget",
                        "namespaced": False,
                        "kind": KIND,
                        "verbs": ["get", "list"],
                    }
                ],
            }
        if path == f"/apis/{group_version}/{RESOURCE}":
            return {
                "kind": f"{KIND}List",
                "apiVersion": group_version,
                "metadata": {"resourceVersion": "1"},
                "items": [
                    {"kind": KIND, "apiVersion": group_version, "metadata": {"name": name}}
                    for name in WIDGETS
                ],
            }
        return None


def _common_name(peer: dict[str, Any] | None) -> str:
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@contextmanager
def serve(
    *,
    group: str,
    version: str,
    front_proxy_ca_pem: bytes,
    allowed_names: Sequence[str],
    service_host: str,
    folder: Path,
) -> Iterator[AggregatedServer]:
    """Run the server on 127.0.0.1 for the ``with`` block.

    ``service_host`` is ``<service>.<namespace>.svc``: the name the apiserver checks the serving
    certificate against, whatever address it dials.
    """
    server_state = AggregatedServer(group=group, version=version)

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            # The TLS handshake runs here, in the connection's thread, so a refused one is recorded.
            self.handshake_error = ""
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                self.handshake_error = str(getattr(e, "reason", None) or e)
                server_state.handshake_errors.append(self.handshake_error)
            super().setup()

        def handle(self) -> None:
            if not self.handshake_error:
                super().handle()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            name = _common_name(self.connection.getpeercert())
            if name not in allowed_names:
                server_state.refused.append(name)
                self._reply(401, _status(401, "Unauthorized", f"{name!r} is not an allowed front proxy"))
                return
            extra: dict[str, tuple[str, ...]] = {}
            for key in self.headers:
                if key.lower().startswith("x-remote-extra-"):
                    extra[key[len("x-remote-extra-") :].lower()] = tuple(self.headers.get_all(key) or ())
            server_state.calls.append(
                Call(
                    path=path,
                    proxy_name=name,
                    user=self.headers.get("X-Remote-User", ""),
                    groups=tuple(self.headers.get_all("X-Remote-Group") or ()),
                    extra=extra,
                )
            )
            body = server_state.answer(path)
            if body is None:
                self._reply(404, _status(404, "NotFound", f"{path} is not served here"))
            else:
                self._reply(200, body)

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    ca = CertificateAuthority.create("aggregated-server-ca")
    pair = ca.issue_serving("aggregated-server", hosts=[service_host, "localhost", "127.0.0.1"])
    (folder / "aggregated-server.pem").write_bytes(pair.cert_pem + pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "aggregated-server.pem")
    context.load_verify_locations(cadata=front_proxy_ca_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server_state.port = int(server.server_address[1])
    server_state.ca_pem = ca.cert_pem
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }

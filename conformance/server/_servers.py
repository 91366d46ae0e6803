"""Server processes for the conformance tests: ``corral server`` subprocesses on one upstream, and a client.

Each process runs with this interpreter (``python -m corral server``), TLS from a CA made here, the
admin password from a file, and its stderr captured to a file the tests read (no secret may appear).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.controlplane.pki import CertificateAuthority
from corral.server.app import READY_LINE

ADMIN_PASSWORD = "corral-admin-password-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca_pem: bytes
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def create(cls, folder: Path) -> Pki:
        authority = CertificateAuthority.create("corral test server CA")
        serving = authority.issue_serving("corral-server", hosts=["127.0.0.1", "localhost"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.crt").write_bytes(serving.cert_pem)
        (folder / "tls.key").write_bytes(serving.key_pem)
        (folder / "tls.key").chmod(0o600)
        (folder / "ca.crt").write_bytes(authority.cert_pem)
        return cls(folder, authority.cert_pem, folder / "tls.crt", folder / "tls.key", folder / "ca.crt")


@dataclass
class Response:
    status: int
    body: Any
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ServerProcess:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    context: ssl.SSLContext

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
                payload = response.read()
                status, response_headers = response.status, dict(response.headers.items())
        except urllib.error.HTTPError as error:
            payload = error.read()
            status, response_headers = error.code, dict(error.headers.items())
        try:
            decoded = json.loads(payload) if payload else None
        except ValueError:
            decoded = None
        return Response(status, decoded, payload, response_headers)

    def login(self, username: str, password: str, **extra: Any) -> Response:
        return self.request(
            "POST",
            "/v3-public/localProviders/local?action=login",
            body={"username": username, "password": password, **extra},
        )

    def admin_token(self) -> str:
        answer = self.login("admin", ADMIN_PASSWORD)
        assert answer.status == 201, answer.raw
        return str(answer.body["token"])

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    name: str,
    *,
    kubeconfig: Path,
    pki: Pki,
    folder: Path,
    password_file: Path,
    server_url: str = "",
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """Start one process; ``server_url`` (the setting every replica shares) defaults to its own URL."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    log = folder / f"{name}.log"
    argv = [
        sys.executable, "-m", "corral", "--log-level", "INFO", "server",
        "--kubeconfig", str(kubeconfig),
        "--listen", f"127.0.0.1:{port}",
        "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca),
        "--server-url", server_url or url,
        "--bootstrap-password-file", str(password_file),
        "--data-dir", str(folder / name),
        "--trace", str(folder / "trace.jsonl"),
        *extra_args,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    context = ssl.create_default_context(cadata=pki.ca_pem.decode())
    server = ServerProcess(name, url, process, log, context)
    deadline = time.monotonic() + timeout
    while READY_LINE not in server.logs():
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{server.logs()[-4000:]}")
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"{name} not ready after {timeout}s:\n{server.logs()[-4000:]}")
        time.sleep(0.1)
    return server


def basic(token: str) -> str:
    return "Basic " + base64.urlsafe_b64encode(token.encode()).decode()

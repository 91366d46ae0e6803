"""Benchmark of one `corral server` process: resident memory with N local users and their tokens.

Brings up one local control plane as the upstream, starts a server process on it, stores N users
(each with its password Secret, UserAttribute and a login token, written straight to the upstream
as the server would store them), waits until the process's caches hold them, authenticates every
token once through the v3 API, and reports the process's RSS at each step plus the authentication
rate. Results go to ``reports/bench/server.json`` and a Markdown table on stdout.

    python benchmarks/bench_server.py [--users 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from corral.auth import hashers, passwords
from corral.auth.tokens import generate_secret
from corral.controlplane import build
from corral.controlplane.local import LocalProvider
from corral.controlplane.pki import CertificateAuthority
from corral.model import Scenario
from corral.server.app import READY_LINE
from corral.server.authn import HASHED_ANNOTATION, KIND_LABEL, user_principal
from corral.server.state import MANAGEMENT, USER_ID_LABEL

REPORT = Path("reports/bench/server.json")
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throwaway password of the benchmark


class Server:
    """One `corral server` process with TLS from a CA of its own, and a tiny JSON client."""

    def __init__(self, folder: Path, kubeconfig: Path) -> None:
        authority = CertificateAuthority.create("bench CA")
        serving = authority.issue_serving("corral-server", hosts=["127.0.0.1"])
        (folder / "tls.crt").write_bytes(serving.cert_pem)
        (folder / "tls.key").write_bytes(serving.key_pem)
        (folder / "ca.crt").write_bytes(authority.cert_pem)
        (folder / "admin.password").write_text(ADMIN_PASSWORD)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        self.log = folder / "server.log"
        argv = [
            sys.executable, "-m", "corral", "server", "--kubeconfig", str(kubeconfig),
            "--listen", f"127.0.0.1:{port}", "--server-url", self.url,
            "--tls-cert", str(folder / "tls.crt"), "--tls-key", str(folder / "tls.key"),
            "--tls-ca", str(folder / "ca.crt"), "--bootstrap-password-file", str(folder / "admin.password"),
        ]  # fmt: skip
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.context = ssl.create_default_context(cadata=authority.cert_pem.decode())
        deadline = time.monotonic() + 180
        while READY_LINE not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not start:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)

    def request(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(  # noqa: S310 - an https URL built here
            self.url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _store_users(upstream: Any, count: int) -> list[str]:
    """N users as the server stores them; returns their token values (``name:secret``)."""

    def one(index: int) -> str:
        user = upstream.create(
            f"{MANAGEMENT}/users",
            {
                "apiVersion": "management.cattle.io/v3",
                "kind": "User",
                "metadata": {"generateName": "u-"},
                "username": f"bench-{index:05d}",
                "displayName": f"Bench User {index}",
                "enabled": True,
            },
        )
        user_id = user["metadata"]["name"]
        # One PBKDF2 iteration: the Secret has the size and layout of a real one, without the CPU cost.
        record = passwords.hash_password(f"password-{index}-long-enough", iterations=1)
        secret = passwords.password_secret(user_name=user_id, user_uid=user["metadata"]["uid"], record=record)
        upstream.create(f"/api/v1/namespaces/{passwords.PASSWORDS_NAMESPACE}/secrets", secret)
        upstream.create(
            f"{MANAGEMENT}/userattributes",
            {
                "apiVersion": "management.cattle.io/v3",
                "kind": "UserAttribute",
                "metadata": {"name": user_id},
                "UserName": user["username"],
                "GroupPrincipals": {"local": {"items": [{"metadata": {"name": "local://bench-group"}}]}},
                "ExtraByProvider": {
                    "local": {"principalid": [f"local://{user_id}"], "username": [user["username"]]}
                },
            },
        )
        value = generate_secret()
        token = upstream.create(
            f"{MANAGEMENT}/tokens",
            {
                "apiVersion": "management.cattle.io/v3",
                "kind": "Token",
                "metadata": {
                    "generateName": "token-",
                    "labels": {USER_ID_LABEL: user_id, KIND_LABEL: "session"},
                    "annotations": {HASHED_ANNOTATION: "true"},
                },
                "token": hashers.hash_secret(value),
                "userId": user_id,
                "authProvider": "local",
                "userPrincipal": user_principal(user),
                "ttl": 960 * 60_000,
                "enabled": True,
            },
        )
        return f"{token['metadata']['name']}:{value}"

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def run(users: int) -> dict[str, Any]:
    binaries = build.ensure_built(build.CONTROL_PLANE)
    scenario = Scenario.from_dict(
        {
            "name": "bench-server",
            "regions": ["us"],
            "clusters": [
                {"name": "up", "region": "us", "nodes": [{"name": "up-cp", "roles": ["controlplane"]}]}
            ],
        }
    )
    provider = LocalProvider(binaries=binaries)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="corral-bench-server-") as folder:
        run_dir = Path(folder)
        clusters = provider.up(scenario, run_dir / "clusters")
        server = None
        try:
            handle = clusters["up"]
            started = time.monotonic()
            server = Server(run_dir, handle.kubeconfig)
            ready_seconds = time.monotonic() - started
            time.sleep(2)
            idle = _rss_mb(server.process.pid)
            status, login = server.request(
                "POST",
                "/v3-public/localProviders/local?action=login",
                body={"username": "admin", "password": ADMIN_PASSWORD},
            )
            assert status == 201, status
            admin = str(login["token"])
            with handle.client() as upstream:
                stored_at = time.monotonic()
                tokens = _store_users(upstream, users)
                store_seconds = time.monotonic() - stored_at
            deadline = time.monotonic() + 300
            while True:
                _, listing = server.request("GET", "/v3/users?limit=-1", token=admin)
                if len(listing["data"]) >= users + 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            cached = _rss_mb(server.process.pid)
            latencies: list[float] = []
            auth_started = time.monotonic()
            for token in tokens:
                begin = time.perf_counter()
                status, _ = server.request("GET", "/v3/users?me=true", token=token)
                latencies.append(time.perf_counter() - begin)
                assert status == 200, status
            auth_seconds = time.monotonic() - auth_started
            time.sleep(2)  # the lastUsedAt writes settle
            after = _rss_mb(server.process.pid)
            latencies.sort()
            return {
                "users": users,
                "ready_seconds": round(ready_seconds, 2),
                "store_seconds": round(store_seconds, 1),
                "rss_mb": {"idle": round(idle, 1), "cached": round(cached, 1), "after_auth": round(after, 1)},
                "auth_requests_per_second": round(users / auth_seconds, 1),
                "auth_latency_ms": {
                    "p50": round(statistics.median(latencies) * 1000, 2),
                    "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
                },
                "note": "sequential HTTPS requests from one client, a new TLS connection each; one upstream",
            }
        finally:
            if server is not None:
                server.stop()
            provider.down(run_dir / "clusters")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    result = run(args.users)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2) + "\n")
    rss = result["rss_mb"]
    print("| users | RSS idle MB | RSS cached MB | RSS after auth MB | auth req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['users']} | {rss['idle']} | {rss['cached']} | {rss['after_auth']} "
        f"| {result['auth_requests_per_second']} | {result['auth_latency_ms']['p50']} "
        f"| {result['auth_latency_ms']['p99']} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

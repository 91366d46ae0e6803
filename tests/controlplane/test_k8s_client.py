"""The sync Kubernetes client against a loopback HTTP server that plays the apiserver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from corral.controlplane.processes import free_port
from corral.errors import KubeAPIError
from corral.k8s import KubeClient, KubeConfig, wait_for


@dataclass
class FakeAPI:
    """Answers by (method, path) from a table and records each request's headers and body."""

    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, list[tuple[str, str]], Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fake.seen.append(
                (self.command, self.path, list(self.headers.items()), json.loads(raw) if raw else None)
            )
            status, body = fake.answers.get(
                (self.command, self.path), (404, {"reason": "NotFound", "message": "nope"})
            )
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def test_a_forbidden_answer_becomes_a_kube_api_error_with_status_reason_and_a_cut_body(api: FakeAPI) -> None:
    api.answers[("GET", "/api/v1/secrets")] = (403, {"reason": "Forbidden", "message": "x" * 1000})
    client = KubeClient(KubeConfig(server=api.url, token="very-secret-token"))
    with client, pytest.raises(KubeAPIError) as error:
        client.get("/api/v1/secrets")
    assert (error.value.status, error.value.reason) == (403, "Forbidden")
    assert len(str(error.value)) < 320
    assert "very-secret-token" not in str(error.value)
    headers = dict(api.seen[0][2])
    assert headers["Authorization"] == "Bearer very-secret-token"


def test_impersonation_sends_one_user_header_and_one_header_per_group(api: FakeAPI) -> None:
    api.answers[("GET", "/version")] = (200, {"gitVersion": "v1"})
    with KubeClient(KubeConfig(server=api.url)).impersonating("alice", ["devs", "ops"]) as client:
        assert client.get("/version") == {"gitVersion": "v1"}
    headers = api.seen[0][2]
    assert [v for k, v in headers if k == "Impersonate-User"] == ["alice"]
    assert [v for k, v in headers if k == "Impersonate-Group"] == ["devs", "ops"]


def test_apply_replaces_an_existing_object_keeping_its_resource_version(api: FakeAPI) -> None:
    api.answers[("POST", "/api/v1/nodes")] = (409, {"reason": "AlreadyExists"})
    api.answers[("GET", "/api/v1/nodes/n1")] = (200, {"metadata": {"name": "n1", "resourceVersion": "42"}})
    api.answers[("PUT", "/api/v1/nodes/n1")] = (200, {"metadata": {"name": "n1", "resourceVersion": "43"}})
    with KubeClient(KubeConfig(server=api.url)) as client:
        result = client.apply("/api/v1/nodes", {"metadata": {"name": "n1", "labels": {"a": "b"}}})
    assert result["metadata"]["resourceVersion"] == "43"
    put = api.seen[-1]
    assert put[0] == "PUT"
    assert put[3]["metadata"] == {"name": "n1", "labels": {"a": "b"}, "resourceVersion": "42"}


def test_delete_and_exists_treat_not_found_as_an_answer(api: FakeAPI) -> None:
    with KubeClient(KubeConfig(server=api.url)) as client:
        assert client.delete("/api/v1/namespaces/gone") == {}
        assert client.exists("/api/v1/namespaces/gone") is False
        with pytest.raises(KubeAPIError) as error:
            client.delete("/api/v1/namespaces/gone", missing_ok=False)
    assert error.value.status == 404


def test_a_non_json_body_is_returned_as_text(api: FakeAPI) -> None:
    api.answers[("GET", "/healthz")] = (200, b"ok")
    with KubeClient(KubeConfig(server=api.url)) as client:
        assert client.get("/healthz") == {"text": "ok"}


def test_an_unreachable_server_is_a_kube_api_error_with_status_zero() -> None:
    client = KubeClient(KubeConfig(server=f"http://127.0.0.1:{free_port()}"), timeout_seconds=2)
    with client, pytest.raises(KubeAPIError) as error:
        client.get("/version")
    assert error.value.status == 0
    assert error.value.reason == "ConnectionError"


def test_wait_for_returns_the_first_truthy_value_and_times_out_naming_what_it_waited_for() -> None:
    answers = iter([None, {}, "ready"])
    assert wait_for(lambda: next(answers), timeout_seconds=5, what="x", interval_seconds=0.01) == "ready"
    with pytest.raises(TimeoutError, match="waiting for the moon"):
        wait_for(lambda: None, timeout_seconds=0.05, what="the moon", interval_seconds=0.01)

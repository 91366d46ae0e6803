"""kube-api-auth's HTTP contract, with its caches filled by hand (no cluster): status codes, bodies, trace.

Effects that write to the API (lastUsedAt, needsRefresh) go to a recording stand-in of the client.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from corral.auth import hashers
from corral.kubeapiauth.objects import ClusterAuthToken, ClusterUserAttribute
from corral.kubeapiauth.server import KubeApiAuth, parse_listen
from corral.model.trace import TokenReviewed, parse_trace

SECRET = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV"
HASH = hashers.hash_secret(SECRET)


class RecordingClient:
    """Stands in for AsyncKubeClient: records the patches kube-api-auth sends."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Any]] = []

    async def patch(self, path: str, patch: Any, *, kind: str = "merge") -> dict[str, Any]:
        self.patches.append((path, patch))
        return {}


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], KubeApiAuth, io.StringIO, RecordingClient]]:
    recorder = RecordingClient()
    trace = io.StringIO()
    auth = KubeApiAuth(recorder, cluster="c-1", trace=trace)  # type: ignore[arg-type]
    caches = auth.caches
    caches.tokens.items["t1"] = ClusterAuthToken(name="t1", user_name="u-1", enabled=True)
    caches.attributes.items["u-1"] = ClusterUserAttribute(name="u-1", groups=("g-a",), enabled=True)
    caches.secrets.items["t1"] = HASH
    client = TestClient(TestServer(auth.app()))
    await client.start_server()
    try:
        yield client, auth, trace, recorder
    finally:
        await client.close()
        await auth.stop()


def review(token: str) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}


async def test_healthcheck_is_200_with_an_empty_body(served: Any) -> None:
    client = served[0]
    response = await client.get("/healthcheck")
    assert (response.status, await response.read()) == (200, b"")
    assert (await client.post("/healthcheck")).status == 405
    assert (await client.get("/v1/authenticate")).status == 405


async def test_a_valid_token_gets_the_v1beta1_answer_and_its_last_use_is_recorded(served: Any) -> None:
    client, auth, trace, recorder = served
    response = await client.post("/v1/authenticate", json=review(f"t1:{SECRET}"))
    assert response.status == 200
    assert await response.json() == {
        "apiVersion": "authentication.k8s.io/v1beta1",
        "kind": "TokenReview",
        "status": {"authenticated": True, "user": {"username": "u-1", "groups": ["g-a"]}},
    }
    for task in list(auth._background):
        await task
    [(path, patch)] = recorder.patches
    assert path == "/apis/cluster.cattle.io/v3/namespaces/cattle-system/clusterauthtokens/t1"
    assert set(patch) == {"lastUsedAt"}
    [event] = list(parse_trace(trace.getvalue().splitlines()))
    assert isinstance(event, TokenReviewed)
    assert (event.cluster, event.user, event.authenticated) == ("c-1", "u-1", True)


async def test_last_used_is_written_once_within_a_second(served: Any) -> None:
    client, auth, _trace, recorder = served
    for _ in range(5):
        assert (await client.post("/v1/authenticate", json=review(f"t1:{SECRET}"))).status == 200
    for task in list(auth._background):
        await task
    seconds = [patch["lastUsedAt"] for _path, patch in recorder.patches]
    assert len(seconds) == len(set(seconds))


@pytest.mark.parametrize("token", [f"t1:{SECRET}x", f"unknown:{SECRET}", ":"])
async def test_a_refusal_is_401_with_a_json_type_and_an_empty_body(served: Any, token: str) -> None:
    client, _auth, trace, _recorder = served
    response = await client.post("/v1/authenticate", json=review(token))
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == b""
    [event] = list(parse_trace(trace.getvalue().splitlines()))
    assert isinstance(event, TokenReviewed)
    assert not event.authenticated


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[1]",
        json.dumps({"kind": "Pod", "spec": {"token": "t1:x"}}).encode(),
        json.dumps(review("")).encode(),
    ],
)
async def test_a_malformed_review_is_400_and_not_traced(served: Any, raw: bytes) -> None:
    client, _auth, trace, _recorder = served
    response = await client.post("/v1/authenticate", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == b""
    assert trace.getvalue() == ""


async def test_no_secret_or_hash_reaches_the_logs(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = served[0]
    caplog.set_level(logging.DEBUG, logger="corral")
    for token in (f"t1:{SECRET}", f"t1:{SECRET[::-1]}", f"{SECRET}:{SECRET}", SECRET):
        await client.post("/v1/authenticate", json=review(token))
    assert caplog.records, "kube-api-auth says what it decided"
    for text in (SECRET, SECRET[::-1], HASH, HASH.split(":")[-1]):
        assert text not in caplog.text


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("127.0.0.1:6440", ("127.0.0.1", 6440)), ("[::1]:0", ("::1", 0)), ("host:1", ("host", 1))],
)
def test_listen_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("text", ["6440", ":6440", "host:", "host:70000", "host:x"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    from corral.errors import ConfigError

    with pytest.raises(ConfigError, match="--listen"):
        parse_listen(text)


def test_the_command_refuses_a_bad_listen_address_before_anything_else(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from corral.cli import main

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    result = CliRunner().invoke(main, ["kube-api-auth", "--listen", "6440", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code != 0
    assert "--listen '6440': expected host:port" in result.output

"""The agent without a cluster: configuration, the CA checksum, the connect loop's URLs and cadence."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import pytest
from aiohttp import web

from corral.agent import (
    AgentConfigError,
    CAChecksumError,
    RetryPolicy,
    load_config,
    rancher_connect_authorizer,
)
from corral.agent.config import ca_checksum, fetch_verified_ca
from corral.agent.loop import ConnectLoop
from corral.server.connect import TunnelEndpoints, encode_params
from corral.tunnel import FakeClock, HandshakeError, TunnelClient
from corral.tunnel.testing import wait_until
from tests.server._tunnel_fakes import TOKEN, Registrar, Tokens

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"


def test_env_wins_over_the_credentials_files(tmp_path: Path):
    (tmp_path / "url").write_text("https://files.example:8443\n")
    (tmp_path / "token").write_text("file-token\n")
    env = {"CATTLE_SERVER": "https://env.example/", "CATTLE_TOKEN": "env-token"}
    config = load_config(env, kind="cluster", credentials_dir=tmp_path, state_dir=tmp_path)
    assert (config.server, config.token) == ("https://env.example", "env-token")
    files = load_config({}, kind="cluster", credentials_dir=tmp_path, state_dir=tmp_path)
    assert (files.server, files.token) == ("https://files.example:8443", "file-token")
    assert files.websocket_base == "wss://files.example:8443"
    assert not files.connect
    assert "file-token" not in repr(files)


def test_missing_or_bad_configuration_is_named(tmp_path: Path):
    with pytest.raises(AgentConfigError, match=r"CATTLE_SERVER is not set and .*url does not exist"):
        load_config({}, kind="cluster", credentials_dir=tmp_path)
    with pytest.raises(AgentConfigError, match="must be an https URL"):
        load_config(
            {"CATTLE_SERVER": "ftp://x", "CATTLE_TOKEN": "t"}, kind="cluster", credentials_dir=tmp_path
        )
    with pytest.raises(AgentConfigError, match="CATTLE_CA_CHECKSUM must be a sha256"):
        load_config(
            {"CATTLE_SERVER": "https://x", "CATTLE_TOKEN": "t", "CATTLE_CA_CHECKSUM": "abc"},
            kind="cluster",
            credentials_dir=tmp_path,
        )
    with pytest.raises(AgentConfigError, match="node agent needs its node"):
        load_config(
            {"CATTLE_SERVER": "https://x", "CATTLE_TOKEN": "t"}, kind="node", credentials_dir=tmp_path
        )


def test_a_node_agent_always_connects_and_a_cluster_agent_may_be_told_to():
    env = {"CATTLE_SERVER": "https://x", "CATTLE_TOKEN": "t", "CATTLE_NODE_NAME": "n1"}
    assert load_config(env, kind="node").connect
    assert load_config(env, kind="node").node == "n1"
    assert load_config({**env, "CATTLE_AGENT_CONNECT": "true"}, kind="cluster").connect


def test_the_checksum_is_rancher_s_newline_terminated_sha256():
    assert ca_checksum(PEM) == hashlib.sha256((PEM + "\n").encode()).hexdigest()
    assert ca_checksum(PEM + "\n") == ca_checksum(PEM)


@pytest.fixture
async def cacerts_server():
    values: dict[str, object] = {"value": PEM}

    async def cacerts(_: web.Request) -> web.Response:
        return web.json_response(values)

    app = web.Application()
    app.router.add_get("/v3/settings/cacerts", cacerts)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", values
    await runner.cleanup()


async def test_a_matching_checksum_gives_the_ca(cacerts_server):
    url, _ = cacerts_server
    assert await fetch_verified_ca(url, ca_checksum(PEM)) == PEM


async def test_a_wrong_checksum_stops_the_agent_with_both_checksums(cacerts_server):
    url, _ = cacerts_server
    wrong = "0" * 64
    with pytest.raises(CAChecksumError) as info:
        await fetch_verified_ca(url, wrong)
    assert f"does not match given --ca-checksum ({wrong})" in str(info.value)
    assert ca_checksum(PEM) in str(info.value)


async def test_no_ca_or_not_a_certificate_is_refused(cacerts_server):
    url, values = cacerts_server
    values["value"] = ""
    with pytest.raises(CAChecksumError, match="no CA certificate configured"):
        await fetch_verified_ca(url, ca_checksum(PEM))
    values["value"] = "hello"
    with pytest.raises(CAChecksumError, match="does not look like an x509 certificate"):
        await fetch_verified_ca(url, ca_checksum(PEM))


@pytest.mark.parametrize(
    ("proto", "address", "allowed"),
    [
        ("tcp", "10.43.0.1:443", True),
        ("tcp", "anything:1", True),
        ("unix", "/var/run/docker.sock", True),
        ("unix", "/run/containerd/containerd.sock", False),
        ("npipe", "//./pipe/docker_engine", True),
        ("npipe", "//./pipe/other", False),
        ("udp", "1.1.1.1:53", False),
    ],
)
def test_the_connect_authorizer_is_rancher_s(proto, address, allowed):
    assert rancher_connect_authorizer(proto, address) is allowed


def test_rancher_retry_is_ten_seconds_and_backoff_is_jittered_and_capped():
    rng = random.Random(1)
    assert RetryPolicy().delay(1, rng) == 10.0
    assert RetryPolicy().delay(9, rng) == 10.0
    backoff = RetryPolicy(kind="backoff", backoff_base_seconds=1, backoff_cap_seconds=8)
    waits = [backoff.delay(n, rng) for n in (1, 2, 3, 4, 5, 6)]
    assert 0.5 <= waits[0] <= 1.0
    assert 1.0 <= waits[1] <= 2.0
    assert all(4.0 <= w <= 8.0 for w in waits[3:])


class RefusedClient:
    """A TunnelClient stand-in whose handshake is refused with 400."""

    def __init__(self, url: str, **_: object) -> None:
        self.url = url

    async def start(self) -> None:
        raise HandshakeError("refused", status=400)


async def test_the_loop_registers_until_connected_and_retries_on_rancher_s_cadence(tmp_path: Path):
    clock = FakeClock()

    async def headers() -> dict[str, str]:
        return {}

    loop = ConnectLoop(
        websocket_base="wss://server",
        headers=headers,
        marker=tmp_path / "connected",
        clock=clock,
        client_factory=RefusedClient,
    )
    task = asyncio.ensure_future(loop.run())
    await wait_until(lambda: len(loop.attempts) == 1, "the first attempt")
    await clock.advance(9.9)
    assert len(loop.attempts) == 1
    await clock.advance(0.1)
    await wait_until(lambda: len(loop.attempts) == 2, "the second attempt, 10 s later")
    (tmp_path / "connected").touch()
    await clock.advance(10)
    await wait_until(lambda: len(loop.attempts) == 3, "the third attempt")
    assert loop.attempts == ["wss://server/v3/connect/register"] * 2 + ["wss://server/v3/connect"]
    await loop.stop()
    await clock.advance(10)
    await asyncio.wait_for(task, 5)


async def test_a_served_session_writes_the_marker_and_a_server_close_brings_a_reconnect(tmp_path: Path):
    endpoints = TunnelEndpoints(tokens=Tokens(), registrar=Registrar())
    app = web.Application()
    endpoints.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    clock = FakeClock()
    params = {"cluster": {"address": "10.43.0.1:443", "token": "sa", "caCert": "Y2E="}}

    async def headers() -> dict[str, str]:
        return {"X-API-Tunnel-Token": TOKEN, "X-API-Tunnel-Params": encode_params(params)}

    loop = ConnectLoop(
        websocket_base=f"ws://127.0.0.1:{runner.addresses[0][1]}",
        headers=headers,
        marker=tmp_path / "connected",
        ssl_context=False,
        clock=clock,
        client_factory=TunnelClient,
    )
    task = asyncio.ensure_future(loop.run())
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the agent's session")
    # The server holds the session once it has answered the upgrade; the agent writes its marker
    # when it has read that answer, a moment later.
    await wait_until((tmp_path / "connected").exists, "the connected marker")
    await endpoints.close()
    await wait_until(lambda: clock.pending_sleepers >= 1, "the loop's wait")
    await clock.advance(10)
    await wait_until(lambda: endpoints.manager.has_session("c-1"), "the reconnected session")
    assert loop.attempts[-1].endswith("/v3/connect")
    await loop.stop()
    await asyncio.wait_for(task, 5)
    await runner.cleanup()

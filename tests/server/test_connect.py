"""The connect endpoints on a real aiohttp server: handshake answers, the params table, keys, registration."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from corral.model.trace import Event, TunnelClosed, TunnelOpened
from corral.server.connect import (
    PARAMS_HEADER,
    TOKEN_HEADER,
    TunnelEndpoints,
    TunnelInputError,
    encode_params,
    parse_params,
)
from corral.tunnel import TunnelClient
from corral.tunnel.testing import allow_all, wait_until
from tests.server._tunnel_fakes import TOKEN, Registrar, Tokens

CA_B64 = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
CLUSTER = {"cluster": {"address": "10.43.0.1:443", "token": "sa-token-value", "caCert": CA_B64}}
NODE = {"node": {"requestedHostname": "n1", "controlPlane": True, "apiAddress": "127.0.0.1:16443"}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Served:
    url: str
    endpoints: TunnelEndpoints
    registrar: Registrar
    events: list[Event]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    events: list[Event] = []
    registrar = Registrar()
    endpoints = TunnelEndpoints(tokens=Tokens(), registrar=registrar, trace_sink=events.append)
    app = web.Application()
    endpoints.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Served(f"http://127.0.0.1:{runner.addresses[0][1]}", endpoints, registrar, events)
    finally:
        await endpoints.close()
        await runner.cleanup()


async def handshake(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("path", ["/v3/connect", "/v3/connect/register"])
async def test_no_token_is_401_failed_authentication(served, path):
    assert await handshake(served.url + path, {PARAMS_HEADER: encode_params(CLUSTER)}) == (
        401,
        "failed authentication",
    )


async def test_an_unknown_token_is_400_cluster_not_found(served):
    headers = {TOKEN_HEADER: "not-a-registration-token", PARAMS_HEADER: encode_params(CLUSTER)}
    assert await handshake(served.url + "/v3/connect", headers) == (400, "cluster not found")


PARAMS_TABLE = [
    ("", "unexpected end of JSON input"),
    ("!!!!", "illegal base64 data at input byte 0"),
    ("e30", "illegal base64 data at input byte 3"),
    (b64("not json"), "invalid character in JSON input"),
    (b64("[]"), "json: cannot unmarshal params into a registration object"),
    (b64("{}"), "missing node or cluster registration info"),
    (b64('{"cluster": null, "node": null}'), "missing node or cluster registration info"),
    (encode_params({"cluster": {"token": "t", "caCert": "Yw=="}}), "invalid input, address empty"),
    (encode_params({"cluster": {"address": "a:1", "caCert": "Yw=="}}), "invalid input, token empty"),
    (encode_params({"cluster": {"address": "a:1", "token": "t"}}), "invalid input, caCert empty"),
    (
        encode_params({"cluster": {"address": 7, "token": "t", "caCert": "c"}}),
        "invalid input, address is not a string",
    ),
    (encode_params({"cluster": "x"}), "invalid input, cluster is not an object"),
    (encode_params({"node": {}}), "invalid input, hostname empty"),
    (
        encode_params({"node": {"requestedHostname": "Bad Name"}}),
        "invalid input, hostname is not a valid node name",
    ),
    (encode_params({**CLUSTER, **NODE}), "invalid input, both node and cluster registration info"),
]


@pytest.mark.parametrize(("params", "text"), PARAMS_TABLE)
async def test_bad_params_are_400_with_rancher_s_text(served, params, text):
    headers = {TOKEN_HEADER: TOKEN, PARAMS_HEADER: params}
    assert await handshake(served.url + "/v3/connect", headers) == (400, text)
    assert served.registrar.registered == []
    assert served.endpoints.manager.client_keys() == []


@pytest.mark.parametrize(("params", "text"), PARAMS_TABLE)
def test_parse_params_agrees_with_the_endpoint(params, text):
    with pytest.raises(TunnelInputError, match=f"^{text}$"):
        parse_params(params)


async def test_secrets_stay_out_of_answers_and_logs(served, caplog):
    caplog.set_level(logging.DEBUG)
    bad = encode_params({"cluster": {"address": "", "token": "sa-token-value", "caCert": CA_B64}})
    status, text = await handshake(served.url + "/v3/connect", {TOKEN_HEADER: TOKEN, PARAMS_HEADER: bad})
    assert status == 400
    assert "sa-token-value" not in text
    assert TOKEN not in caplog.text
    assert "sa-token-value" not in caplog.text


async def test_a_cluster_agent_registers_and_is_served_under_the_cluster_key(served):
    headers = {TOKEN_HEADER: TOKEN, PARAMS_HEADER: encode_params(CLUSTER)}
    async with TunnelClient(
        served.url.replace("http", "ws") + "/v3/connect/register",
        headers=headers,
        connect_authorizer=allow_all,
    ):
        await wait_until(lambda: served.endpoints.manager.has_session("c-1"), "the cluster agent's session")
        [(cluster, params)] = served.registrar.registered
        assert cluster == "c-1"
        assert (params.address, params.token, params.ca_cert) == ("10.43.0.1:443", "sa-token-value", CA_B64)
        assert params.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    await wait_until(lambda: not served.endpoints.manager.has_session("c-1"), "the session's end")
    assert [type(e) for e in served.events] == [TunnelOpened, TunnelClosed]
    assert served.events[0] == TunnelOpened(t=served.events[0].t, cluster="c-1", agent="cluster-agent")


async def test_a_node_agent_is_served_under_cluster_colon_node_and_its_params_are_kept(served):
    headers = {TOKEN_HEADER: TOKEN, PARAMS_HEADER: encode_params(NODE)}
    async with TunnelClient(
        served.url.replace("http", "ws") + "/v3/connect", headers=headers, connect_authorizer=allow_all
    ):
        await wait_until(lambda: served.endpoints.manager.has_session("c-1:n1"), "the node agent's session")
        node = served.endpoints.nodes["c-1"]["n1"]
        assert node.control_plane
        assert node.api_address == "127.0.0.1:16443"
        assert served.registrar.registered == []
    assert served.events[0] == TunnelOpened(t=served.events[0].t, cluster="c-1", agent="node-agent/n1")


async def test_a_registration_failure_is_a_400_and_no_session(served):
    class Refusing:
        async def register(self, cluster: str, params: object) -> None:
            raise TunnelInputError("cluster 'c-1': the CA is not a PEM certificate")

    served.endpoints.registrar = Refusing()
    headers = {TOKEN_HEADER: TOKEN, PARAMS_HEADER: encode_params(CLUSTER)}
    assert await handshake(served.url + "/v3/connect", headers) == (
        400,
        "cluster 'c-1': the CA is not a PEM certificate",
    )
    assert served.endpoints.manager.client_keys() == []

"""Target adapters without a server: the v3 client's request shapes against a small aiohttp stand-in,
the rancher target's settings and capabilities, the reference target from a hand-made topology.json.

The stand-in checks only what the client sends and how it reads Rancher-shaped answers; whether the
answers are right is for the conformance suites against corral's server and a real Rancher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conformance.targets import Capability, ReadOnlyTargetError, V3Client, V3Error
from conformance.targets.rancher import rancher_target, settings_from
from conformance.targets.reference import read_topology, reference_target
from conformance.targets.v3 import Exchange, basic_credentials
from corral.errors import ConfigError

TOKEN = "token-admin:" + ("bcdfghjklmnpqrstvwxz2456789" * 2)[:54]


@dataclass
class StandIn:
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)


STAND_IN = web.AppKey("stand_in", StandIn)


async def _handle(request: web.Request) -> web.Response:
    stand_in = request.app[STAND_IN]
    body = await request.json() if request.can_read_body else None
    stand_in.seen.append(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": dict(request.query),
            "authorization": request.headers.get("Authorization"),
            "body": body,
        }
    )
    status, answer = stand_in.answers.get((request.method, request.path_qs), (200, {}))
    return web.json_response(answer, status=status)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """An aiohttp server on loopback in a thread of its own, answering what the test sets."""
    state = StandIn()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app[STAND_IN] = state
    app.router.add_route("*", "/{tail:.*}", _handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def client(stand_in: StandIn, **options: Any) -> V3Client:
    return V3Client(url=stand_in.url, token=TOKEN, **options)


def test_requests_have_rancher_s_shapes(stand_in: StandIn) -> None:
    stand_in.answers = {
        ("POST", "/v3/users"): (201, {"id": "u-abcde", "type": "user"}),
        ("POST", "/v3-public/localProviders/local?action=login"): (201, {"token": "token-xyz12:s"}),
        ("POST", "/v3/clusterroletemplatebindings"): (201, {"id": "c-1:crtb-1"}),
        ("POST", "/v3/projects"): (201, {"id": "c-1:p-1"}),
        ("POST", "/v3/projectroletemplatebindings"): (201, {"id": "p-1:prtb-1"}),
        ("POST", "/v3/clusters/c-1?action=generateKubeconfig"): (
            200,
            {"type": "generateKubeconfigOutput", "config": "kind: Config\n"},
        ),
        ("POST", "/v3/tokens"): (201, {"token": "token-scoped:s"}),
    }
    api = client(stand_in)
    assert api.create_user("alice", "pw")["id"] == "u-abcde"
    assert api.login("alice", "pw", ttl_ms=60_000) == "token-xyz12:s"
    assert api.bind_cluster("c-1", "cluster-member", user_id="u-abcde") == "c-1:crtb-1"
    assert api.create_project("c-1", "team-a") == "c-1:p-1"
    assert api.bind_project("c-1:p-1", "project-member", group_principal_id="local://g") == "p-1:prtb-1"
    assert api.generate_kubeconfig("c-1") == "kind: Config\n"
    assert api.create_token(description="ace", ttl_ms=1000, cluster_id="c-1") == "token-scoped:s"
    api.delete("projectroletemplatebindings", "p-1:prtb-1")
    seen = [(s["method"], s["path"], s["query"], s["body"]) for s in stand_in.seen]
    assert seen == [
        (
            "POST",
            "/v3/users",
            {},
            {
                "type": "user",
                "username": "alice",
                "name": "alice",
                "password": "pw",
                "enabled": True,
                "mustChangePassword": False,
            },
        ),
        (
            "POST",
            "/v3-public/localProviders/local",
            {"action": "login"},
            {"username": "alice", "password": "pw", "responseType": "token", "ttl": 60000},
        ),
        (
            "POST",
            "/v3/clusterroletemplatebindings",
            {},
            {
                "type": "clusterRoleTemplateBinding",
                "clusterId": "c-1",
                "roleTemplateId": "cluster-member",
                "userId": "u-abcde",
            },
        ),
        ("POST", "/v3/projects", {}, {"type": "project", "name": "team-a", "clusterId": "c-1"}),
        (
            "POST",
            "/v3/projectroletemplatebindings",
            {},
            {
                "type": "projectRoleTemplateBinding",
                "projectId": "c-1:p-1",
                "roleTemplateId": "project-member",
                "groupPrincipalId": "local://g",
            },
        ),
        ("POST", "/v3/clusters/c-1", {"action": "generateKubeconfig"}, {}),
        ("POST", "/v3/tokens", {}, {"type": "token", "description": "ace", "ttl": 1000, "clusterId": "c-1"}),
        ("DELETE", "/v3/projectroletemplatebindings/p-1:prtb-1", {}, None),
    ]
    login = stand_in.seen[1]
    assert login["authorization"] is None  # a login carries no token
    assert {s["authorization"] for i, s in enumerate(stand_in.seen) if i != 1} == {f"Bearer {TOKEN}"}


def test_collections_follow_pagination(stand_in: StandIn) -> None:
    stand_in.answers = {
        ("GET", "/v3/clusters"): (
            200,
            {
                "type": "collection",
                "data": [{"id": "c-1", "name": "a"}],
                "pagination": {"next": f"{stand_in.url}/v3/clusters?marker=c-1"},
            },
        ),
        ("GET", "/v3/clusters?marker=c-1"): (
            200,
            {"type": "collection", "data": [{"id": "c-2", "name": "b"}], "pagination": {}},
        ),
    }
    api = client(stand_in)
    assert [c["id"] for c in api.clusters()] == ["c-1", "c-2"]
    assert api.cluster_id("b") == "c-2"


def test_errors_carry_rancher_s_status_code_and_message_and_no_token(stand_in: StandIn) -> None:
    stand_in.answers = {
        ("GET", "/v3/users/u-x"): (
            404,
            {"type": "error", "status": "404", "code": "NotFound", "message": "users u-x not found"},
        ),
        ("GET", "/v3/clusters/c-x"): (403, {"Code": {"Code": "Forbidden", "Status": 403}, "Message": "no"}),
    }
    api = client(stand_in)
    with pytest.raises(V3Error) as caught:
        api.get("/v3/users/u-x")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        404,
        "NotFound",
        "users u-x not found",
    )
    with pytest.raises(V3Error, match="403 Forbidden: no"):
        api.get("/v3/clusters/c-x")
    assert TOKEN.split(":")[1] not in str(caught.value)


def test_a_read_only_client_sends_no_write(stand_in: StandIn) -> None:
    api = client(stand_in, read_only=True)
    with pytest.raises(ReadOnlyTargetError, match="POST /v3/users: the target is read-only"):
        api.create_user("alice", "pw")
    with pytest.raises(ReadOnlyTargetError):
        api.login("alice", "pw")
    api.get("/v3/clusters")
    assert [s["method"] for s in stand_in.seen] == ["GET"]


def test_the_observer_sees_each_exchange(stand_in: StandIn) -> None:
    seen: list[Exchange] = []
    stand_in.answers = {("GET", "/v3/settings/server-version"): (200, {"value": "v2.12.1"})}
    assert client(stand_in, observer=seen.append).server_version() == "v2.12.1"
    [exchange] = seen
    assert (exchange.method, exchange.status, exchange.response_body) == ("GET", 200, {"value": "v2.12.1"})
    assert exchange.url == f"{stand_in.url}/v3/settings/server-version"


def test_ids_cannot_add_path_segments_or_queries(stand_in: StandIn) -> None:
    client(stand_in).delete_token("../users/u-x?action=x")
    [seen] = stand_in.seen
    assert (seen["raw_path"], seen["query"]) == ("/v3/tokens/..%2Fusers%2Fu-x%3Faction%3Dx", {})


def test_basic_credentials_are_url_safe_base64() -> None:
    assert basic_credentials("token-a:b?>") == "Basic dG9rZW4tYTpiPz4="


# -- the rancher target ----------------------------------------------------------------------


def test_rancher_settings_come_from_options_or_the_environment(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    kubeconfig.write_text("{}")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = settings_from(
        url="https://rancher.example/",
        token_file=str(token_file),
        ca_file=None,
        clusters=[f"downstream={kubeconfig}"],
        read_only=True,
        version=None,
        environ={},
    )
    assert (settings.url, settings.token, dict(settings.clusters)) == (
        "https://rancher.example",
        TOKEN,
        {"downstream": kubeconfig},
    )
    assert TOKEN not in repr(settings)
    env = {
        "CORRAL_RANCHER_URL": "https://r",
        "CORRAL_RANCHER_TOKEN": TOKEN,
        "CORRAL_RANCHER_CLUSTERS": f"a={kubeconfig}",
    }
    from_env = settings_from(
        url=None, token_file=None, ca_file=None, clusters=[], read_only=False, version=None, environ=env
    )
    assert dict(from_env.clusters) == {"a": kubeconfig}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": None}, "needs the server's URL"),
        ({"url": "http://r"}, "must be an https URL"),
        ({"token_file": None}, "needs an admin token"),
        ({"clusters": ["no-equals"]}, "takes NAME=KUBECONFIG"),
        ({"clusters": ["a=/nowhere/kc"]}, "no kubeconfig at /nowhere/kc"),
        ({"clusters": []}, "at least one downstream cluster"),
    ],
)
def test_bad_rancher_settings_are_refused_precisely(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    kubeconfig.write_text("{}")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    given = {
        "url": "https://r",
        "token_file": str(token_file),
        "ca_file": None,
        "clusters": [f"a={kubeconfig}"],
        "read_only": False,
        "version": None,
    } | options
    with pytest.raises(ConfigError, match=message):
        settings_from(**given, environ={})


def test_the_rancher_target_resolves_clusters_and_capabilities(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.answers = {
        ("GET", "/v3/settings/server-version"): (200, {"value": "v2.11.2"}),
        ("GET", "/v3/clusters"): (
            200,
            {
                "data": [
                    {
                        "id": "c-abcde",
                        "name": "rke1-prod",
                        "driver": "rancherKubernetesEngine",
                        "localClusterAuthEndpoint": {"enabled": True},
                    },
                    {"id": "c-fghij", "name": "imported", "driver": "imported"},
                ]
            },
        ),
    }
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    settings = settings_from(
        url="https://r",
        token_file=None,
        ca_file=None,
        clusters=[f"rke1-prod={kubeconfig}", f"c-fghij={kubeconfig}"],
        read_only=False,
        version=None,
        environ={"CORRAL_RANCHER_TOKEN": TOKEN},
    )
    target = rancher_target(settings, api=client(stand_in))
    assert target.rancher_version == "v2.11.2"
    assert {c.name: c.id for c in target.clusters.values()} == {"rke1-prod": "c-abcde", "c-fghij": "c-fghij"}
    assert target.capabilities == {Capability.WRITE, Capability.ACE, Capability.NODE_AGENTS}
    later = dataclasses.replace(settings, read_only=True, version="v2.12.0")
    assert rancher_target(later, api=client(stand_in)).capabilities == {Capability.ACE}


def test_an_unknown_rancher_cluster_names_the_ones_there_are(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.answers = {("GET", "/v3/clusters"): (200, {"data": [{"id": "c-1", "name": "one"}]})}
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    settings = settings_from(
        url="https://r",
        token_file=None,
        ca_file=None,
        clusters=[f"two={kubeconfig}"],
        read_only=True,
        version="v2.15.0",
        environ={"CORRAL_RANCHER_TOKEN": TOKEN},
    )
    with pytest.raises(ConfigError, match=r"--rancher-cluster two: .* \(it has: one \(c-1\)\)"):
        rancher_target(settings, api=client(stand_in))


# -- the reference target ----------------------------------------------------------------------


def topology(tmp_path: Path, **extra: Any) -> Path:
    """A hand-made run folder as `corral up` lays it out (no server behind it)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "admin.token").write_text(TOKEN + "\n")
    (secrets / "alice.password").write_text("pw-alice\n")
    kubeconfig = tmp_path / "alice.yaml"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nusers:\n- name: c-us\n  user:\n    token: token-alice:secret\n"
    )
    document = {
        "server": {
            "url": "https://127.0.0.1:9443",
            "ca_file": str(tmp_path / "ca.pem"),
            "admin": {
                "username": "admin",
                "password_file": str(secrets / "a"),
                "token_file": str(secrets / "admin.token"),
            },
        },
        "clusters": {
            "c-us": {
                "id": "c-abcde",
                "api_server": "https://127.0.0.1:6443",
                "admin_kubeconfig": str(tmp_path / "kube_config_c-us.yml"),
            }
        },
        "users": {
            "alice": {
                "id": "u-alice",
                "username": "alice",
                "password_file": str(secrets / "alice.password"),
                "kubeconfig": str(kubeconfig),
            }
        },
        "processes": [{"role": "server", "cluster": None, "node": None, "pid": 10}],
    } | extra
    (tmp_path / "topology.json").write_text(json.dumps(document))
    return tmp_path


def test_the_reference_target_reads_topology_json(tmp_path: Path) -> None:
    target = reference_target(topology(tmp_path))
    assert target.server.url == "https://127.0.0.1:9443"
    assert target.server.admin_token == TOKEN
    assert target.cluster("c-abcde").name == "c-us"
    alice = target.users["alice"]
    assert (alice.id, alice.token, alice.password) == ("u-alice", "token-alice:secret", "pw-alice")
    assert target.capabilities == {
        Capability.WRITE,
        Capability.CORRAL,
        Capability.TRACE,
        Capability.STOP_SERVER,
    }
    assert TOKEN not in repr(target)
    assert "secret" not in json.dumps(target.describe())


def test_agents_and_ace_in_the_topology_add_capabilities(tmp_path: Path) -> None:
    run = topology(
        tmp_path, processes=[{"role": "cluster-agent", "pid": 1}, {"role": "node-agent", "pid": 2}]
    )
    document = json.loads((run / "topology.json").read_text())
    document["clusters"]["c-us"]["ace_endpoints"] = ["https://127.0.0.2:6443"]
    (run / "topology.json").write_text(json.dumps(document))
    target = reference_target(run)
    assert {Capability.AGENT_FAULTS, Capability.NODE_AGENTS, Capability.ACE} <= target.capabilities
    assert Capability.STOP_SERVER not in target.capabilities  # no server process listed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"server": {"url": "https://x"}}, "server.ca_file must be a str"),
        ({"clusters": {"c-us": {"id": "c-1"}}}, "clusters.c-us.admin_kubeconfig must be a str"),
        ({"processes": {}}, "processes must be a list"),
    ],
)
def test_a_broken_topology_is_refused_precisely(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_topology(topology(tmp_path, **change))


def test_a_missing_topology_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did `corral up` run there"):
        read_topology(tmp_path)

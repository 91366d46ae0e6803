"""The server process on a real upstream kube-apiserver: state, login, tokens, the v3 API, two processes.

Two ``corral server`` processes share the session's first cluster as their upstream (one pair per
module); a third one is killed with SIGKILL in the middle of a stream of writes. Every answer is
checked against Rancher's shapes, and the processes' logs are checked for the secrets used.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.server._servers import ADMIN_PASSWORD, Pki, ServerProcess, basic, start_server
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.k8s import KubeClient, wait_for

MGMT = "/apis/management.cattle.io/v3"
MUST_AUTHENTICATE = b'{"type":"error","status":"401","message":"Unauthorized 401: must authenticate"}\n'
LOGIN_FAILED = {
    "code": "Unauthorized",
    "status": 401,
    "message": "authentication failed",
    "type": "error",
    "baseType": "error",
}


class Servers:
    def __init__(self, handle: ClusterHandle, folder: Path, pki: Pki, password_file: Path) -> None:
        self.handle = handle
        self.folder = folder
        self.pki = pki
        self.password_file = password_file
        self.started: list[ServerProcess] = []
        self.secrets: list[str] = [ADMIN_PASSWORD]

    def start(self, name: str) -> ServerProcess:
        server = start_server(
            name,
            kubeconfig=self.handle.kubeconfig,
            pki=self.pki,
            folder=self.folder,
            password_file=self.password_file,
            server_url=self.started[0].url if self.started else "",
        )
        self.started.append(server)
        return server

    def upstream(self) -> KubeClient:
        return self.handle.client()


@pytest.fixture(scope="module")
def servers(cluster_set: ClusterSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("servers")
    password_file = folder / "admin.password"
    password_file.write_text(ADMIN_PASSWORD)
    password_file.chmod(0o600)
    group = Servers(next(iter(cluster_set)), folder, Pki.create(folder / "pki"), password_file)
    group.start("a")
    group.start("b")
    try:
        yield group
    finally:
        for server in group.started:
            killed = server.process.poll() is not None
            server.stop()
            if not killed:
                assert server.process.returncode == 0, f"server {server.name} did not exit cleanly on SIGTERM"
        for server in group.started:
            text = server.logs()
            for secret in group.secrets:
                assert secret not in text, f"a secret appears in the log of server {server.name}"


@pytest.fixture(scope="module")
def a(servers: Servers) -> ServerProcess:
    return servers.started[0]


@pytest.fixture(scope="module")
def b(servers: Servers) -> ServerProcess:
    return servers.started[1]


@pytest.fixture(scope="module")
def admin(a: ServerProcess, servers: Servers) -> str:
    token = a.admin_token()
    servers.secrets.append(token.split(":", 1)[1])
    return token


def _user(server: ServerProcess, admin: str, servers: Servers) -> tuple[str, str, str]:
    """A new user (id, username, password)."""
    username = f"user-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    servers.secrets.append(password)
    created = server.request(
        "POST", "/v3/users", body={"username": username, "password": password}, token=admin
    )
    assert created.status == 201, created.raw
    return str(created.body["id"]), username, password


def _secret(servers: Servers, token: str) -> str:
    servers.secrets.append(token.split(":", 1)[1])
    return token


# -- state in the upstream --------------------------------------------------------------------------


@pytest.mark.requirement("SRV-001", "SRV-007", "SRV-018", "TOK-012")
def test_crds_settings_and_the_local_cluster_are_in_the_upstream(servers: Servers, a: ServerProcess) -> None:
    with servers.upstream() as upstream:
        for crd in ("users", "tokens", "clusters", "settings", "projectroletemplatebindings"):
            obj = upstream.get(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}.management.cattle.io"
            )
            assert {"type": "Established", "status": "True"}.items() <= obj["status"]["conditions"][
                0
            ].items() or any(
                c["type"] == "Established" and c["status"] == "True" for c in obj["status"]["conditions"]
            )
        cacerts = upstream.get(f"{MGMT}/settings/cacerts")
        assert cacerts["value"] == servers.pki.ca_pem.decode()
        assert upstream.get(f"{MGMT}/settings/kubeconfig-default-token-ttl-minutes")["default"] == "43200"
        assert upstream.get(f"{MGMT}/settings/kubeconfig-generate-token")["default"] == "true"
        local = upstream.get(f"{MGMT}/clusters/local")
        assert local["spec"]["internal"] is True
        assert local["status"]["apiEndpoint"] == servers.handle.server
        for name in ("cluster-owner", "cluster-member", "project-owner", "project-member", "read-only"):
            upstream.get(f"{MGMT}/roletemplates/{name}")
        admins = upstream.list(
            f"{MGMT}/users", label_selector="authz.management.cattle.io/bootstrapping=admin-user"
        )
        assert len(admins["items"]) == 1, "two processes starting at once make one admin"
        admin_id = admins["items"][0]["metadata"]["name"]
        assert admin_id.startswith("user-")
        secret = upstream.get(f"/api/v1/namespaces/cattle-local-user-passwords/secrets/{admin_id}")
        assert secret["metadata"]["annotations"]["cattle.io/password-hash"] == "pbkdf2sha3512"
        assert set(secret["data"]) == {"password", "salt"}


@pytest.mark.requirement("SRV-019")
def test_cacerts_needs_no_token_and_everything_else_does(a: ServerProcess, servers: Servers) -> None:
    public = a.request("GET", "/v3/settings/cacerts")
    assert public.status == 200
    assert public.body["value"] == servers.pki.ca_pem.decode()
    assert public.body["id"] == "cacerts"
    assert public.body["type"] == "setting"
    for path in ("/v3/clusters", "/v3/settings", "/v3/settings/server-url", "/v3/users", "/v3/tokens"):
        denied = a.request("GET", path)
        assert denied.status == 401, path
        assert denied.raw == MUST_AUTHENTICATE


# -- login ------------------------------------------------------------------------------------------


@pytest.mark.requirement("TOK-001", "TOK-005", "TOK-013")
def test_login_answers_in_rancher_shape_and_stores_the_token_hashed(
    a: ServerProcess, servers: Servers, admin: str
) -> None:
    answer = a.login("admin", ADMIN_PASSWORD)
    assert answer.status == 201
    assert sorted(answer.body) == ["baseType", "expiresAt", "id", "token", "type"]
    assert answer.body["type"] == answer.body["baseType"] == "token"
    name, secret = answer.body["token"].split(":")
    _secret(servers, answer.body["token"])
    assert name == answer.body["id"]
    assert name.startswith("token-")
    assert len(name) == len("token-") + 5
    assert len(secret) == 54
    assert set(secret) <= set("bcdfghjklmnpqrstvwxz2456789")
    with servers.upstream() as upstream:
        stored = upstream.get(f"{MGMT}/tokens/{name}")
    assert stored["token"].startswith("$3:1:")
    assert secret not in stored["token"]
    assert stored["metadata"]["annotations"]["authn.management.cattle.io/token-hashed"] == "true"
    assert stored["metadata"]["labels"]["authn.management.cattle.io/kind"] == "session"
    assert stored["ttl"] == 960 * 60_000
    assert stored["userId"] == stored["metadata"]["labels"]["authn.management.cattle.io/token-userId"]


@pytest.mark.requirement("TOK-013")
def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(a: ServerProcess) -> None:
    wrong = a.login("admin", "not-the-password")
    unknown = a.login(f"nobody-{uuid.uuid4().hex[:6]}", "not-the-password")
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body == LOGIN_FAILED


@pytest.mark.requirement("TOK-002", "TOK-003", "TOK-004")
def test_bearer_basic_and_the_cookie_each_authenticate(a: ServerProcess, admin: str) -> None:
    assert a.request("GET", "/v3/users?me=true", headers={"Authorization": f"Bearer {admin}"}).status == 200
    assert a.request("GET", "/v3/users?me=true", headers={"Authorization": basic(admin)}).status == 200
    assert a.request("GET", "/v3/users?me=true", headers={"Cookie": f"R_SESS={admin}"}).status == 200
    # The cookie counts only when there is no Authorization header at all.
    both = a.request(
        "GET", "/v3/users?me=true", headers={"Authorization": "Bearer token-x:y", "Cookie": f"R_SESS={admin}"}
    )
    assert both.status == 401


@pytest.mark.requirement("TOK-004", "TOK-013")
def test_cookie_login_sets_r_sess(a: ServerProcess, servers: Servers) -> None:
    answer = a.login("admin", ADMIN_PASSWORD, responseType="cookie")
    assert answer.status == 200
    cookie = answer.headers["Set-Cookie"]
    value = cookie.split(";", 1)[0].removeprefix("R_SESS=")
    _secret(servers, value)
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    assert a.request("GET", "/v3/tokens", headers={"Cookie": f"R_SESS={value}"}).status == 200


# -- tokens -----------------------------------------------------------------------------------------


@pytest.mark.requirement("TOK-006", "TOK-007", "TOK-008", "TOK-013")
def test_disabled_expired_and_deleted_tokens_are_refused_on_the_next_request(
    a: ServerProcess, servers: Servers, admin: str
) -> None:
    def new_token(**body: Any) -> tuple[str, str]:
        created = a.request("POST", "/v3/tokens", body={"description": "test", **body}, token=admin)
        assert created.status == 201, created.raw
        return str(created.body["id"]), _secret(servers, str(created.body["token"]))

    name, token = new_token()
    assert a.request("GET", "/v3/tokens", token=token).status == 200
    disabled = a.request("PUT", f"/v3/tokens/{name}", body={"enabled": False}, token=admin)
    assert disabled.status == 200
    assert disabled.body["enabled"] is False
    refused = a.request("GET", "/v3/tokens", token=token)
    assert (refused.status, refused.raw) == (401, MUST_AUTHENTICATE)

    name, token = new_token()
    assert a.request("DELETE", f"/v3/tokens/{name}", token=admin).status == 204
    assert a.request("GET", "/v3/tokens", token=token).raw == MUST_AUTHENTICATE

    name, token = new_token(ttl=1500)
    assert a.request("GET", "/v3/tokens", token=token).status == 200
    created = a.request("GET", f"/v3/tokens/{name}", token=admin).body
    assert created["ttl"] == 1500
    assert created["expiresAt"]
    time.sleep(2)
    assert a.request("GET", "/v3/tokens", token=token).status == 401

    name, token = new_token()
    assert a.request("POST", "/v3/tokens?action=logout", token=token).status == 200
    assert a.request("GET", "/v3/tokens", token=token).status == 401


@pytest.mark.requirement("TOK-018")
def test_a_session_idle_past_the_idle_ttl_is_refused_by_every_process(
    a: ServerProcess, b: ServerProcess, servers: Servers
) -> None:
    login = a.login("admin", ADMIN_PASSWORD)
    assert login.status == 201, login.raw
    token = _secret(servers, str(login.body["token"]))
    name = token.split(":", 1)[0]
    setting = f"{MGMT}/settings/auth-user-session-idle-ttl-minutes"

    def status(server: ServerProcess) -> int:
        return server.request("GET", "/v3/tokens", token=token).status

    def seen(minutes_ago: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60 * minutes_ago))

    with servers.upstream() as upstream:
        previous = str(upstream.get(setting).get("value") or "")
        try:
            upstream.patch(setting, {"value": "10"})
            # Activity recorded 20 minutes ago (what Rancher's UserActivity API writes): idle for 10+.
            upstream.patch(f"{MGMT}/tokens/{name}", {"activityLastSeenAt": seen(20)})
            wait_for(
                lambda: status(a) == 401 and status(b) == 401,
                timeout_seconds=30,
                what="both processes to refuse the idle session",
            )
            assert a.request("GET", "/v3/tokens", token=token).raw == MUST_AUTHENTICATE
            upstream.patch(f"{MGMT}/tokens/{name}", {"activityLastSeenAt": seen(1)})
            wait_for(
                lambda: status(a) == 200 and status(b) == 200,
                timeout_seconds=30,
                what="recent activity to revive the session",
            )
            upstream.patch(f"{MGMT}/tokens/{name}", {"activityLastSeenAt": seen(20)})
            upstream.patch(setting, {"value": "0"})  # 0 turns the idle timeout off
            wait_for(
                lambda: status(a) == 200 and status(b) == 200,
                timeout_seconds=30,
                what="an idle timeout of 0 to let the session through",
            )
        finally:
            upstream.patch(setting, {"value": previous})


@pytest.mark.requirement("TOK-011")
def test_last_used_at_is_written(a: ServerProcess, servers: Servers, admin: str) -> None:
    name = admin.split(":", maxsplit=1)[0]
    a.request("GET", "/v3/tokens", token=admin)
    with servers.upstream() as upstream:
        stored = wait_for(
            lambda: upstream.get(f"{MGMT}/tokens/{name}").get("lastUsedAt"),
            timeout_seconds=30,
            what="lastUsedAt to be written",
        )
    assert stored.endswith("Z")


@pytest.mark.requirement("SRV-020")
def test_token_listing_shows_only_the_callers_tokens_and_never_a_secret(
    a: ServerProcess, servers: Servers, admin: str
) -> None:
    user_id, username, password = _user(a, admin, servers)
    token = _secret(servers, a.login(username, password).body["token"])
    listing = a.request("GET", "/v3/tokens", token=token)
    assert listing.status == 200
    assert listing.body["type"] == "collection"
    assert listing.body["resourceType"] == "token"
    assert {t["userId"] for t in listing.body["data"]} == {user_id}
    assert all("token" not in t for t in listing.body["data"])
    assert [t["current"] for t in listing.body["data"]] == [True]
    other = a.request("GET", f"/v3/tokens/{admin.split(':', maxsplit=1)[0]}", token=token)
    assert other.status == 404
    assert other.body["type"] == "error"


# -- two processes ----------------------------------------------------------------------------------


@pytest.mark.requirement("SRV-003")
def test_two_processes_serve_the_same_user_alike(
    a: ServerProcess, b: ServerProcess, servers: Servers, admin: str
) -> None:
    user_id, username, password = _user(a, admin, servers)
    token = _secret(
        servers, b.login(username, password).body["token"]
    )  # created on a, logged in on b at once
    for server in (a, b):
        me = server.request("GET", "/v3/users?me=true", token=token)
        assert me.status == 200
        assert [u["id"] for u in me.body["data"]] == [user_id]
    name = token.split(":")[0]
    assert b.request("PUT", f"/v3/tokens/{name}", body={"enabled": False}, token=token).status == 200
    wait_for(
        lambda: a.request("GET", "/v3/tokens", token=token).status == 401,
        timeout_seconds=30,
        what="the other process to refuse the disabled token",
    )


@pytest.mark.requirement("SRV-002")
def test_a_killed_process_loses_no_acknowledged_write(servers: Servers, b: ServerProcess, admin: str) -> None:
    victim = servers.start("victim")
    acknowledged: list[str] = []
    errors: list[BaseException] = []

    def stream() -> None:
        for index in range(1000):
            try:
                answer = victim.request(
                    "POST", "/v3/tokens", body={"description": f"write {index}"}, token=admin
                )
            except OSError:
                return  # the process is gone
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return
            if answer.status != 201:
                return
            acknowledged.append(str(answer.body["id"]))
            servers.secrets.append(str(answer.body["token"]).split(":", 1)[1])

    writer = threading.Thread(target=stream)
    writer.start()
    wait_for(lambda: len(acknowledged) >= 20, timeout_seconds=120, what="20 acknowledged writes")
    victim.kill()
    writer.join(60)
    assert not errors
    with servers.upstream() as upstream:
        stored = {t["metadata"]["name"] for t in upstream.list(f"{MGMT}/tokens")["items"]}
    assert set(acknowledged) <= stored
    listing = b.request("GET", "/v3/tokens?limit=-1", token=admin)
    assert set(acknowledged) <= {t["id"] for t in listing.body["data"]}


# -- the v3 API -------------------------------------------------------------------------------------


@pytest.mark.requirement("SRV-006")
def test_clusters_projects_bindings_and_visibility(a: ServerProcess, servers: Servers, admin: str) -> None:
    user_id, username, password = _user(a, admin, servers)
    token = _secret(servers, a.login(username, password).body["token"])
    name = f"imp-{uuid.uuid4().hex[:6]}"
    created = a.request("POST", "/v3/clusters", body={"name": name}, token=admin)
    assert created.status == 201, created.raw
    cluster_id = created.body["id"]
    assert cluster_id.startswith("c-")
    assert len(cluster_id) == 7
    assert created.body["name"] == name
    assert created.body["driver"] == "imported"
    assert created.body["actions"]["generateKubeconfig"].endswith(
        f"/v3/clusters/{cluster_id}?action=generateKubeconfig"
    )

    # The user sees neither the new cluster nor local, and cannot bind itself.
    assert [c["id"] for c in a.request("GET", "/v3/clusters", token=token).body["data"]] == []
    assert a.request("GET", f"/v3/clusters/{cluster_id}", token=token).status == 404
    denied = a.request(
        "POST",
        "/v3/clusterroletemplatebindings",
        body={"clusterId": cluster_id, "userId": user_id, "roleTemplateId": "cluster-owner"},
        token=token,
    )
    assert denied.status == 403
    assert denied.body["code"] == "PermissionDenied"

    crtb = a.request(
        "POST",
        "/v3/clusterroletemplatebindings",
        body={"clusterId": cluster_id, "userId": user_id, "roleTemplateId": "cluster-member"},
        token=admin,
    )
    assert crtb.status == 201, crtb.raw
    assert crtb.body["id"].startswith(f"{cluster_id}:crtb-")
    assert crtb.body["userId"] == user_id
    assert crtb.body["roleTemplateId"] == "cluster-member"
    assert [c["id"] for c in a.request("GET", "/v3/clusters", token=token).body["data"]] == [cluster_id]

    project = a.request("POST", "/v3/projects", body={"clusterId": cluster_id, "name": "team"}, token=token)
    assert project.status == 201, project.raw
    project_id = project.body["id"]
    assert project_id.startswith(f"{cluster_id}:p-")
    prtbs = a.request("GET", "/v3/projectroletemplatebindings", token=token).body["data"]
    assert [(p["projectId"], p["userId"], p["roleTemplateId"]) for p in prtbs] == [
        (project_id, user_id, "project-owner")
    ]
    assert prtbs[0]["id"].split(":")[1].startswith("prtb-")

    assert (
        a.request("DELETE", f"/v3/clusterroletemplatebindings/{crtb.body['id']}", token=token).status == 403
    )
    assert (
        a.request("DELETE", f"/v3/clusterroletemplatebindings/{crtb.body['id']}", token=admin).status == 200
    )
    # Still visible through the project binding.
    assert [c["id"] for c in a.request("GET", "/v3/clusters", token=token).body["data"]] == [cluster_id]
    assert a.request("DELETE", f"/v3/projects/{project_id}", token=token).status == 200
    assert a.request("GET", "/v3/clusters", token=token).body["data"] == []

    crt = a.request("POST", "/v3/clusterregistrationtokens", body={"clusterId": cluster_id}, token=admin)
    assert crt.status == 201, crt.raw
    assert crt.body["id"].startswith(f"{cluster_id}:")
    assert len(crt.body["token"]) == 54
    assert crt.body["clusterId"] == cluster_id
    servers.secrets.append(crt.body["token"])
    assert a.request("DELETE", f"/v3/clusters/{cluster_id}", token=admin).status == 200


@pytest.mark.requirement("TOK-016")
def test_a_cluster_scoped_token_is_refused_elsewhere(a: ServerProcess, servers: Servers, admin: str) -> None:
    created = a.request("POST", "/v3/tokens", body={"clusterId": "local"}, token=admin)
    assert created.status == 201, created.raw
    token = _secret(servers, created.body["token"])
    assert created.body["clusterId"] == "local"
    assert a.request("GET", "/v3/clusters/local", token=token).status == 200
    assert a.request("GET", "/v3/users", token=token).status == 401


@pytest.mark.requirement("SRV-007", "SRV-018")
def test_roletemplates_and_settings_read(a: ServerProcess, admin: str) -> None:
    templates = a.request("GET", "/v3/roletemplates?limit=-1", token=admin).body["data"]
    owner = next(t for t in templates if t["id"] == "cluster-owner")
    assert owner["context"] == "cluster"
    assert owner["builtin"] is True
    assert owner["type"] == "roleTemplate"
    ttl = a.request("GET", "/v3/settings/kubeconfig-default-token-ttl-minutes", token=admin).body
    assert ttl["default"] == "43200"


@pytest.mark.requirement("KCFG-001", "KCFG-002", "KCFG-003", "KCFG-004", "PROXY-024")
def test_generate_kubeconfig_reaches_the_local_cluster_with_kubectl(
    a: ServerProcess, servers: Servers, admin: str, tmp_path: Path, corral_binaries: Any
) -> None:
    answer = a.request("POST", "/v3/clusters/local?action=generateKubeconfig", token=admin)
    assert answer.status == 200, answer.raw
    assert answer.body["type"] == "generateKubeconfigOutput"
    text = answer.body["config"]
    config = yaml.safe_load(text)
    token = config["users"][0]["user"]["token"]
    servers.secrets.append(token.split(":", 1)[1])
    assert config["clusters"][0]["cluster"]["server"] == f"{a.url}/k8s/clusters/local"
    assert config["clusters"][0]["name"] == config["current-context"] == "local"
    folded = config["clusters"][0]["cluster"]["certificate-authority-data"]
    assert base64.b64decode(folded.replace("\\", "").replace(" ", "")) == servers.pki.ca_pem
    assert "\\\n      " in text  # folded as Rancher folds it
    name = token.split(":")[0]
    admin_id = a.request("GET", "/v3/users?me=true", token=admin).body["data"][0]["id"]
    assert name.startswith(f"kubeconfig-{admin_id}")
    assert len(name) == len(f"kubeconfig-{admin_id}") + 5
    with servers.upstream() as upstream:
        stored = upstream.get(f"{MGMT}/tokens/{name}")
    assert stored["ttl"] == 43200 * 60_000
    assert stored["isDerived"] is True
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    import subprocess

    kubectl = str(corral_binaries["kubectl"])
    result = subprocess.run(
        [kubectl, "--kubeconfig", str(path), "get", "namespaces", "-o", "name"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "namespace/cattle-system" in result.stdout


# -- bad input --------------------------------------------------------------------------------------

BAD = [
    ("POST", "/v3/tokens", b"{not json", 422),
    ("POST", "/v3/tokens", b"[1, 2]", 422),
    ("POST", "/v3/tokens", b'{"ttl": "ten"}', 422),
    ("POST", "/v3/tokens", b'{"ttl": -5}', 422),
    ("POST", "/v3/users", b'{"username": 5, "password": "x"}', 422),
    ("POST", "/v3/users", b'{"username": "short-pw", "password": "x"}', 422),
    ("POST", "/v3/clusters", b'{"name": "UPPER case"}', 422),
    ("POST", "/v3/clusters", b'{"name": "x", "driver": "rke"}', 422),
    (
        "POST",
        "/v3/clusterroletemplatebindings",
        b'{"clusterId": "c-none0", "userId": "u-x", "roleTemplateId": "cluster-owner"}',
        422,
    ),
    ("POST", "/v3/projectroletemplatebindings", b'{"projectId": "no-colon"}', 422),
    ("GET", "/v3/clusters/..%2f..%2fetc", None, 404),
    ("GET", "/v3/tokens/UPPER", None, 404),
    ("GET", "/v3/clusterroletemplatebindings/a:b:c", None, 404),
    ("GET", "/v3/nothing", None, 404),
    ("GET", "/v3/clusters/local/extra/parts", None, 404),
    ("POST", "/v3/clusters/local?action=explode", None, 422),
    ("PATCH", "/v3/settings", None, 405),
]


@pytest.mark.parametrize(
    ("method", "path", "raw", "status"), BAD, ids=[f"{m} {p} {r!r}"[:60] for m, p, r, _ in BAD]
)
@pytest.mark.requirement("SRV-005")
def test_bad_input_gets_rancher_error_shape(
    a: ServerProcess, admin: str, method: str, path: str, raw: bytes | None, status: int
) -> None:
    answer = a.request(method, path, raw=raw, token=admin)
    assert answer.status == status, answer.raw
    assert answer.body["type"] == "error"
    assert answer.body["baseType"] == "error"
    assert answer.body["status"] == status
    assert isinstance(answer.body["code"], str)
    assert "Traceback" not in answer.raw.decode()


BAD_TOKENS = [
    "Bearer ",
    "Bearer :",
    "Bearer token-abcde",
    "Bearer token-abcde:",
    "Bearer a:b:c",
    "Bearer ext/token-abcde:xyz",
    "Bearer ../../etc:passwd",
    "Bearer " + "x" * 5000 + ":y",
    "Basic !!!notbase64",
    "Basic " + base64.urlsafe_b64encode(b"\xff\xfe:\x00").decode(),
    "Digest abc",
    "Bearer token-zzzzz:" + "b" * 54,
]


@pytest.mark.parametrize("value", BAD_TOKENS, ids=[v[:30] for v in BAD_TOKENS])
@pytest.mark.requirement("SRV-019")
def test_malformed_tokens_get_401_must_authenticate(a: ServerProcess, value: str) -> None:
    answer = a.request("GET", "/v3/clusters", headers={"Authorization": value})
    assert (answer.status, answer.raw) == (401, MUST_AUTHENTICATE)


@pytest.mark.requirement("TOK-017")
def test_bad_login_bodies_get_the_public_api_error(a: ServerProcess) -> None:
    for raw in (b"{", b"[]", b'{"username": 1}', b""):
        answer = a.request("POST", "/v3-public/localProviders/local?action=login", raw=raw)
        assert answer.status == 422
        assert answer.body == {
            "code": "InvalidBodyContent",
            "status": 422,
            "type": "error",
            "baseType": "error",
        }
    assert a.request("POST", "/v3-public/localProviders/local?action=nothing", raw=b"{}").status == 404


@pytest.mark.requirement("KCFG-007")
def test_corral_kubeconfig_writes_a_proxy_kubeconfig_for_a_user(
    a: ServerProcess, servers: Servers, admin: str, tmp_path: Path, corral_binaries: Any
) -> None:
    import subprocess

    from click.testing import CliRunner

    from corral.cli import main

    user_id, username, _ = _user(a, admin, servers)
    granted = a.request(
        "POST",
        "/v3/clusterroletemplatebindings",
        body={"clusterId": "local", "userId": user_id, "roleTemplateId": "cluster-member"},
        token=admin,
    )
    assert granted.status == 201, granted.raw
    output = tmp_path / "user.kubeconfig"
    result = CliRunner().invoke(
        main,
        [
            "kubeconfig", "--user", username, "--cluster", "local",
            "--upstream-kubeconfig", str(servers.handle.kubeconfig), "--ttl-minutes", "60", "-o", str(output),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert output.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(output.read_text())
    token = config["users"][0]["user"]["token"]
    servers.secrets.append(token.split(":", 1)[1])
    assert config["clusters"][0]["cluster"]["server"] == f"{servers.started[0].url}/k8s/clusters/local"
    with servers.upstream() as upstream:
        stored = upstream.get(f"{MGMT}/tokens/{token.split(':')[0]}")
    assert stored["ttl"] == 60 * 60_000
    assert stored["userId"] == user_id
    kubectl = str(corral_binaries["kubectl"])
    whoami = subprocess.run(
        [kubectl, "--kubeconfig", str(output), "auth", "whoami",
         "-o", "jsonpath={.status.userInfo.username}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout == user_id

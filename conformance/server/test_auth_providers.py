"""External auth providers in a running server: OpenLDAP and Active Directory on a real slapd, GitHub on
a local stand-in of its API, then the real kubectl through the proxy as the users who logged in.

One server process, one slapd and one stand-in for the module. Bindings to users and to group
principals (a nested LDAP group, a GitHub team) reach the local cluster's RBAC; a group removed in the
directory or on GitHub takes the access away after the next refresh (``@every 1s`` here). The same
group bindings on a cluster with the Authorized Cluster Endpoint hold for a kubeconfig token used
straight against its kube-apiserver, which asks kube-api-auth, and go with the group the same way. Injection,
refused accounts, a paused directory and a failing, slow or rate-limiting GitHub get clear answers
while the local admin and tokens already issued keep working.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.server._ace import AceCluster, ace_cluster
from conformance.server._servers import ADMIN_PASSWORD, Pki, ServerProcess, start_server
from corral.controlplane.clusters import ClusterSet
from corral.model.trace import TokenReviewed, read_trace
from tests.server.providers import github_standin
from tests.server.providers.slapd import (
    AD_BASE,
    OPENLDAP_BASE,
    PASSWORDS,
    SERVICE_PASSWORD,
    Slapd,
    running_slapd,
    ssha,
)

MGMT = "/apis/management.cattle.io/v3"
ALICE = f"openldap_user://uid=alice,ou=people,{OPENLDAP_BASE}"
DEVS_DN = f"cn=devs,ou=groups,{OPENLDAP_BASE}"
ALL_STAFF = f"openldap_group://cn=all-staff,ou=groups,{OPENLDAP_BASE}"
OPS = f"openldap_group://cn=ops,ou=groups,{OPENLDAP_BASE}"
ERIN = f"activedirectory_user://cn=Erin Admin,cn=Users,{AD_BASE}"
STAFF = f"activedirectory_group://cn=Staff,cn=Groups,{AD_BASE}"
PLATFORM_TEAM = "github_team://1001"
AUTH_TIMEOUT = 3.0
LDAP_ADMIN_PASSWORD = "ldap-admin-pw-" + uuid.uuid4().hex[:6]
REMOVAL_DEADLINE = 30.0
"""How long a test waits for a removed group's access to go (the bound is measured, not asserted)."""


class StandInThread:
    """The GitHub stand-in served from its own event loop in a thread."""

    def __init__(self) -> None:
        self.state = github_standin.seeded()
        self.state.per_page = 100
        self.state.users[3] = github_standin.User(3, "gh-admin", "GitHub Admin", orgs={100}, teams=set())
        self.host = ""
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with github_standin.serving(self.state) as host:
            self.host = host
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> StandInThread:
        self._thread.start()
        assert self._ready.wait(10), "the GitHub stand-in did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    def code(self, user_id: int) -> str:
        return self._loop_call(lambda: self.state.issue_code(user_id))

    def _loop_call(self, work: Callable[[], str]) -> str:
        async def run() -> str:
            return work()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)


@dataclass
class World:
    server: ServerProcess
    slapd: Slapd
    github: StandInThread
    admin: str
    kubectl: str
    folder: Path
    upstream_ca: Path
    secrets: list[str] = field(default_factory=list)
    removal_bounds: dict[str, float] = field(default_factory=dict)

    def v3(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        return self.server.request(method, path, body=body, token=token or self.admin)

    def login(self, provider: str, body: dict[str, Any]) -> Any:
        kind = {"openldap": "openLdap", "activedirectory": "activeDirectory", "github": "github"}[provider]
        answer = self.server.request("POST", f"/v3-public/{kind}Providers/{provider}?action=login", body=body)
        if answer.status == 201:
            self.secrets.append(answer.body["token"].split(":", 1)[1])
        return answer

    def token(self, provider: str, body: dict[str, Any]) -> str:
        answer = self.login(provider, body)
        assert answer.status == 201, answer.raw
        return str(answer.body["token"])

    def kubeconfig(self, token: str) -> Path:
        path = self.folder / f"kubeconfig-{uuid.uuid4().hex[:8]}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": f"{self.server.url}/k8s/clusters/local",
                        "certificate-authority": str(self.folder / "pki" / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "u"}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def kubectl_ok(self, token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig(token)), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def user_of(self, principal: str) -> dict[str, Any]:
        with_principal = [
            u for u in self.v3("GET", "/v3/users").body["data"] if principal in (u.get("principalIds") or [])
        ]
        assert len(with_principal) == 1, with_principal
        return with_principal[0]

    def bind_cluster(self, *, cluster: str = "local", role: str = "cluster-owner", **subject: str) -> str:
        body = {"clusterId": cluster, "roleTemplateId": role, **subject}
        answer = self.v3("POST", "/v3/clusterroletemplatebindings", body)
        assert answer.status == 201, answer.raw
        return str(answer.body["id"])


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 60.0) -> float:
    """Seconds until ``check`` held (polled every 0.1 s); fails with ``what`` after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def openldap_config(slapd: Slapd, **overrides: Any) -> dict[str, Any]:
    return slapd.openldap_settings(
        **{"nestedGroupMembershipEnabled": True, "connectionTimeout": 1000, **overrides}
    )


def ad_config(slapd: Slapd) -> dict[str, Any]:
    return slapd.ad_settings(nestedGroupMembershipEnabled=True, connectionTimeout=1000)


def seed_admins(slapd: Slapd) -> None:
    """A directory account per flavour for the admin's testAndApply (its principal joins the admin)."""
    slapd.ldap(
        "ldapadd",
        OPENLDAP_BASE,
        f"dn: uid=ldapadmin,ou=people,{OPENLDAP_BASE}\nobjectClass: inetOrgPerson\nuid: ldapadmin\n"
        f"cn: LDAP Admin\nsn: Admin\nuserPassword: {ssha(LDAP_ADMIN_PASSWORD)}\n",
    )
    slapd.ldap(
        "ldapadd",
        AD_BASE,
        f"dn: cn=AD Admin,cn=Users,{AD_BASE}\nobjectClass: top\nobjectClass: person\n"
        f"objectClass: organizationalPerson\nobjectClass: user\ncn: AD Admin\nsn: Admin\n"
        f"sAMAccountName: adadmin\nuserAccountControl: 512\nuserPassword: {ssha(LDAP_ADMIN_PASSWORD)}\n",
    )


@pytest.fixture(scope="module")
def world(
    cluster_set: ClusterSet, tmp_path_factory: pytest.TempPathFactory, corral_binaries: Any
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("authproviders")
    password_file = folder / "admin.password"
    password_file.write_text(ADMIN_PASSWORD)
    password_file.chmod(0o600)
    handle = next(iter(cluster_set))
    (folder / "slapd").mkdir()
    with running_slapd(folder / "slapd") as slapd, StandInThread() as github:
        seed_admins(slapd)
        server = start_server(
            "authproviders",
            kubeconfig=handle.kubeconfig,
            pki=Pki.create(folder / "pki"),
            folder=folder,
            password_file=password_file,
            extra_args=("--auth-timeout", str(AUTH_TIMEOUT)),
        )
        try:
            admin = server.admin_token()
            world = World(
                server=server,
                slapd=slapd,
                github=github,
                admin=admin,
                kubectl=str(corral_binaries["kubectl"]),
                folder=folder,
                upstream_ca=handle.kubeconfig,
                secrets=[ADMIN_PASSWORD, admin.split(":", 1)[1], SERVICE_PASSWORD, LDAP_ADMIN_PASSWORD],
            )
            world.secrets += [*PASSWORDS.values(), github_standin.CLIENT_SECRET]
            for name, value in (
                ("auth-user-info-resync-cron", "@every 1s"),
                ("auth-user-info-max-age-seconds", "1"),
            ):
                assert world.v3("PUT", f"/v3/settings/{name}", {"value": value}).status == 200
            configure(world)
            yield world
        finally:
            server.stop()
            logs = server.logs()
            for token in list(github.state.tokens):
                world.secrets.append(token)
            for secret in world.secrets:
                assert secret not in logs, "a secret appears in the server's log"


def configure(world: World) -> None:
    """testAndApply for each provider, as the admin, with a directory (or GitHub) account of theirs."""
    for name, key, config, login in (
        ("openldap", "ldapConfig", openldap_config(world.slapd), {"username": "ldapadmin"}),
        ("activedirectory", "activeDirectoryConfig", ad_config(world.slapd), {"username": "adadmin"}),
    ):
        answer = world.v3(
            "POST",
            f"/v3/authConfigs/{name}?action=testAndApply",
            {key: config, **login, "password": LDAP_ADMIN_PASSWORD, "enabled": True},
        )
        assert answer.status == 200, answer.raw
        world.secrets.append(answer.body["token"].split(":", 1)[1])
    github_config = {
        "hostname": world.github.host,
        "tls": False,
        "clientId": github_standin.CLIENT_ID,
        "clientSecret": github_standin.CLIENT_SECRET,
    }
    answer = world.v3(
        "POST",
        "/v3/authConfigs/github?action=testAndApply",
        {"githubConfig": github_config, "code": world.github.code(3), "enabled": True},
    )
    assert answer.status == 200, answer.raw
    world.secrets.append(answer.body["token"].split(":", 1)[1])


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.requirement("SRV-022")
def test_auth_configs_are_stored_as_rancher_stores_them(world: World, cluster_set: ClusterSet) -> None:
    listing = world.v3("GET", "/v3/authConfigs")
    assert listing.status == 200, listing.raw
    by_id = {item["id"]: item for item in listing.body["data"]}
    assert set(by_id) >= {"local", "activedirectory", "openldap", "github"}
    assert {by_id[n]["type"] for n in ("activedirectory", "openldap", "github")} == {
        "activeDirectoryConfig",
        "openLdapConfig",
        "githubConfig",
    }
    assert all(by_id[n]["enabled"] is True for n in ("activedirectory", "openldap", "github"))
    assert "serviceAccountPassword" not in by_id["openldap"]
    assert "clientSecret" not in by_id["github"]
    assert set(by_id["github"]["actions"]) == {"testAndApply", "configureTest", "disable"}
    with next(iter(cluster_set)).client() as upstream:
        stored = upstream.get(f"{MGMT}/authconfigs/openldap")
        assert stored["serviceAccountPassword"] == "cattle-global-data:openldapconfig-serviceaccountpassword"
        secret = upstream.get(
            "/api/v1/namespaces/cattle-global-data/secrets/openldapconfig-serviceaccountpassword"
        )
        assert set(secret["data"]) == {"serviceaccountpassword"}
        github = upstream.get(f"{MGMT}/authconfigs/github")
        assert github["clientSecret"] == "cattle-global-data:githubconfig-clientsecret"
    test = world.v3(
        "POST",
        "/v3/authConfigs/github?action=configureTest",
        {"hostname": "ghe.example", "clientId": "abc", "tls": True},
    )
    assert test.body == {
        "redirectUrl": "https://ghe.example/login/oauth/authorize?client_id=abc",
        "type": "githubConfigTestOutput",
    }
    bad = world.v3(
        "POST",
        "/v3/authConfigs/openldap?action=testAndApply",
        {"ldapConfig": {**openldap_config(world.slapd), "port": 99999}, "username": "x", "password": "y"},
    )
    assert (bad.status, bad.body["code"]) == (422, "InvalidFormat"), bad.raw
    assert "port" in bad.body["message"]


@pytest.mark.requirement("SRV-022")
def test_a_standard_user_may_not_read_or_change_auth_configs(world: World) -> None:
    token = world.token("openldap", {"username": "dave", "password": PASSWORDS["dave"]})
    assert world.v3("GET", "/v3/authConfigs", token=token).status == 403
    answer = world.v3("POST", "/v3/authConfigs/openldap?action=disable", token=token)
    assert answer.status == 403


# -- logins, users and groups -----------------------------------------------------------------------


@pytest.mark.requirement("SRV-023")
def test_openldap_login_creates_the_user_once_with_nested_group_principals(
    world: World, cluster_set: ClusterSet
) -> None:
    first = world.token("openldap", {"username": "alice", "password": PASSWORDS["alice"]})
    second = world.token("openldap", {"username": "alice", "password": PASSWORDS["alice"]})
    user = world.user_of(ALICE)
    user_id = user["id"]
    assert user["principalIds"] == [ALICE, f"local://{user_id}"]
    me = [world.v3("GET", "/v3/users?me=true", token=t).body["data"][0]["id"] for t in (first, second)]
    assert me == [user_id, user_id]
    with next(iter(cluster_set)).client() as upstream:
        attribute = upstream.get(f"{MGMT}/userattributes/{user_id}")
        token = upstream.get(f"{MGMT}/tokens/{first.split(':')[0]}")
    groups = {item["metadata"]["name"] for item in attribute["GroupPrincipals"]["openldap"]["items"]}
    assert groups == {
        f"openldap_group://{DEVS_DN}",
        f"openldap_group://cn=eng,ou=groups,{OPENLDAP_BASE}",
        ALL_STAFF,
    }
    assert attribute["ExtraByProvider"]["openldap"] == {"principalid": [ALICE], "username": ["alice"]}
    assert token["authProvider"] == "openldap"
    assert token["userPrincipal"]["metadata"]["name"] == ALICE
    mine = world.v3("GET", "/v3/principals", token=first)
    assert {p["id"] for p in mine.body["data"]} == {ALICE, *groups}


@pytest.mark.requirement("SRV-024")
@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("openldap", {"username": "alice", "password": "wrong"}),
        ("openldap", {"username": "bob", "password": PASSWORDS["bob"]}),  # locked (ppolicy)
        ("openldap", {"username": "nobody", "password": "x"}),
        ("openldap", {"username": "*)(uid=*))(|(uid=*", "password": "x"}),
        ("openldap", {"username": "*", "password": PASSWORDS["alice"]}),
        ("activedirectory", {"username": "frank", "password": PASSWORDS["frank"]}),  # ACCOUNTDISABLE
        ("activedirectory", {"username": "*)(sAMAccountName=*", "password": "x"}),
        ("github", {"code": "not-a-code"}),
    ],
    ids=[
        "wrong-password",
        "locked",
        "unknown",
        "injection",
        "star",
        "ad-disabled",
        "ad-injection",
        "bad-code",
    ],
)
def test_refused_logins_get_one_answer_and_no_user(world: World, provider: str, body: dict[str, Any]) -> None:
    before = len(world.v3("GET", "/v3/users").body["data"])
    answer = world.login(provider, body)
    assert (answer.status, answer.body["code"], answer.body["message"]) == (
        401,
        "Unauthorized",
        "authentication failed",
    )
    assert len(world.v3("GET", "/v3/users").body["data"]) == before


@pytest.mark.requirement("SRV-024")
def test_bad_login_bodies_are_refused_with_the_field_named(world: World) -> None:
    answer = world.login("openldap", {"username": "alice"})
    assert (answer.status, answer.body["code"]) == (422, "MissingRequired")
    assert "password" in answer.body["message"]
    answer = world.login("github", {"code": 5})
    assert (answer.status, answer.body["code"]) == (422, "InvalidFormat")


@pytest.mark.requirement("SRV-023")
def test_principal_search_finds_directory_users_and_groups(world: World) -> None:
    found = world.v3("POST", "/v3/principals?action=search", {"name": "ali", "principalType": "user"})
    assert found.status == 200, found.raw
    assert ALICE in {p["id"] for p in found.body["data"]}
    groups = world.v3("POST", "/v3/principals?action=search", {"name": "all-st", "principalType": "group"})
    assert ALL_STAFF in {p["id"] for p in groups.body["data"]}
    assert all(p["principalType"] == "group" for p in groups.body["data"])
    injected = world.v3("POST", "/v3/principals?action=search", {"name": "*)(uid=*", "principalType": "user"})
    assert injected.status == 200
    assert injected.body["data"] == []


@pytest.mark.requirement("SRV-023")
def test_access_mode_required_admits_only_listed_principals(world: World) -> None:
    current = world.v3("GET", "/v3/authConfigs/openldap").body
    changed = world.v3(
        "PUT", "/v3/authConfigs/openldap", {"accessMode": "required", "allowedPrincipalIds": [OPS]}
    )
    assert changed.status == 200, changed.raw
    try:
        refused = world.login("openldap", {"username": "alice", "password": PASSWORDS["alice"]})
        assert (refused.status, refused.body["code"]) == (403, "PermissionDenied")
        world.token("openldap", {"username": "dave", "password": PASSWORDS["dave"]})
    finally:
        restored = world.v3(
            "PUT",
            "/v3/authConfigs/openldap",
            {"accessMode": current["accessMode"], "allowedPrincipalIds": []},
        )
        assert restored.status == 200, restored.raw


# -- kubectl through the proxy, bindings to users and groups ----------------------------------------


def membership(uid: str) -> str:
    """LDIF that makes ``uid`` the only member of devs (a groupOfNames needs one)."""
    return (
        f"dn: {DEVS_DN}\nchangetype: modify\nreplace: member\nmember: uid={uid},ou=people,{OPENLDAP_BASE}\n"
    )


def can_list_namespaces(world: World, token: str) -> bool:
    result = world.kubectl_ok(token, "get", "namespaces", "-o", "name")
    if result.returncode == 0:
        return True
    assert "forbidden" in result.stderr.lower(), result.stderr
    return False


@pytest.mark.requirement("SRV-025")
def test_nested_ldap_group_binding_gives_kubectl_access_and_its_removal_takes_it(world: World) -> None:
    token = world.token("openldap", {"username": "alice", "password": PASSWORDS["alice"]})
    assert not can_list_namespaces(world, token)
    binding = world.bind_cluster(groupPrincipalId=ALL_STAFF)
    try:
        wait_until(
            lambda: can_list_namespaces(world, token), what="access through the nested group all-staff"
        )
        who = world.kubectl_ok(token, "auth", "whoami", "-o", "json")
        assert who.returncode == 0, who.stderr
        assert ALL_STAFF in who.stdout
        world.slapd.modify(
            OPENLDAP_BASE,
            membership("dave"),
        )
        removed = time.monotonic()
        try:
            wait_until(
                lambda: not can_list_namespaces(world, token),
                what="access gone after the removal",
                timeout=REMOVAL_DEADLINE,
            )
            world.removal_bounds["openldap"] = time.monotonic() - removed
        finally:
            world.slapd.modify(
                OPENLDAP_BASE,
                membership("alice"),
            )
    finally:
        world.v3("DELETE", f"/v3/clusterroletemplatebindings/{binding}")


@pytest.mark.requirement("SRV-025")
def test_active_directory_user_and_group_bindings(world: World) -> None:
    token = world.token("activedirectory", {"username": "CORP\\erin", "password": PASSWORDS["erin"]})
    user = world.user_of(ERIN)
    assert not can_list_namespaces(world, token)
    by_user = world.bind_cluster(userPrincipalId=ERIN)
    try:
        wait_until(lambda: can_list_namespaces(world, token), what="access through erin's own binding")
    finally:
        world.v3("DELETE", f"/v3/clusterroletemplatebindings/{by_user}")
    wait_until(lambda: not can_list_namespaces(world, token), what="access gone with the binding")
    by_group = world.bind_cluster(groupPrincipalId=STAFF)  # Staff holds Domain Admins, which holds erin
    try:
        wait_until(lambda: can_list_namespaces(world, token), what="access through the nested AD group Staff")
    finally:
        world.v3("DELETE", f"/v3/clusterroletemplatebindings/{by_group}")
    assert user["principalIds"][0] == ERIN


@pytest.mark.requirement("SRV-025")
def test_github_team_binding_and_its_removal(world: World, cluster_set: ClusterSet) -> None:
    token = world.token("github", {"code": world.github.code(1)})
    user = world.user_of("github_user://1")
    with next(iter(cluster_set)).client() as upstream:
        attribute = upstream.get(f"{MGMT}/userattributes/{user['id']}")
        secret = upstream.get(f"/api/v1/namespaces/cattle-system/secrets/{user['id']}-secret")
    groups = {i["metadata"]["name"] for i in attribute["GroupPrincipals"]["github"]["items"]}
    assert groups == {
        "github_org://100",
        "github_org://200",
        PLATFORM_TEAM,
        "github_team://1002",
        "github_team://2001",
    }
    assert set(secret["data"]) == {"github"}
    assert not can_list_namespaces(world, token)
    binding = world.bind_cluster(groupPrincipalId=PLATFORM_TEAM)
    try:
        wait_until(lambda: can_list_namespaces(world, token), what="access through the Platform team")
        world.github.state.users[1].teams.discard(1001)
        removed = time.monotonic()
        try:
            wait_until(
                lambda: not can_list_namespaces(world, token),
                what="access gone after the team removal",
                timeout=REMOVAL_DEADLINE,
            )
            world.removal_bounds["github"] = time.monotonic() - removed
        finally:
            world.github.state.users[1].teams.add(1001)
    finally:
        world.v3("DELETE", f"/v3/clusterroletemplatebindings/{binding}")


# -- kubectl through the Authorized Cluster Endpoint -------------------------------------------------


@pytest.fixture(scope="module")
def ace(
    world: World,
    cluster_set: ClusterSet,
    corral_binaries: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AceCluster]:
    """A cluster registered with the module's server, ACE on, its apiserver's token webhook kube-api-auth."""
    created = world.v3("POST", "/v3/clusters", {"name": "providers-ace"})
    assert created.status == 201, created.raw
    cluster_id = str(created.body["id"])
    with ace_cluster(
        cluster_id=cluster_id,
        upstream=next(iter(cluster_set)),
        binaries=corral_binaries,
        folder=tmp_path_factory.mktemp("providers-ace"),
    ) as cluster:
        try:
            yield cluster
        finally:
            deleted = world.v3("DELETE", f"/v3/clusters/{cluster_id}")
            assert deleted.status == 200, deleted.raw
    logs = cluster.log.read_text(errors="replace")
    for secret in world.secrets:
        assert secret not in logs, "a secret appears in kube-api-auth's log"


def ace_kubeconfig(world: World, ace: AceCluster, cluster_set: ClusterSet, login: str) -> Path:
    """generateKubeconfig as the user on the ACE cluster; its token (scoped to the cluster upstream) in a
    kubeconfig straight to the cluster's apiserver."""
    answer = world.v3("POST", f"/v3/clusters/{ace.cluster_id}?action=generateKubeconfig", token=login)
    assert answer.status == 200, answer.raw
    bearer = str(yaml.safe_load(answer.body["config"])["users"][0]["user"]["token"])
    name, _, secret = bearer.partition(":")
    world.secrets.append(secret)
    with next(iter(cluster_set)).client() as upstream:
        assert upstream.get(f"{MGMT}/tokens/{name}")["clusterName"] == ace.cluster_id
    return ace.kubeconfig(bearer, name=name)


def ace_kubectl(world: World, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [world.kubectl, "--kubeconfig", str(config), "--request-timeout=20s", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def ace_can(world: World, config: Path, *args: str) -> bool:
    """Whether kubectl through ACE may do ``args``: False on Forbidden (authenticated, not authorised)
    and on Unauthorized (the token's copy not there yet); any other failure fails the test."""
    result = ace_kubectl(world, config, *args)
    if result.returncode == 0:
        return True
    stderr = result.stderr.lower()
    assert any(word in stderr for word in ("forbidden", "unauthorized", "provide credentials")), stderr
    return False


def ace_group_access_and_removal(
    world: World,
    ace: AceCluster,
    cluster_set: ClusterSet,
    *,
    login: str,
    user_id: str,
    group: str,
    remove: Callable[[], None],
    restore: Callable[[], None],
) -> tuple[float, float]:
    """Bind ``group`` as cluster-member on the ACE cluster; the user's scoped token may list nodes (what
    cluster-member grants) and not secrets or namespaces; after ``remove`` the group leaves the user's
    ClusterUserAttribute and kubectl is refused. Returns the seconds until each (measured, not asserted)."""
    binding = world.bind_cluster(cluster=ace.cluster_id, role="cluster-member", groupPrincipalId=group)
    try:
        config = ace_kubeconfig(world, ace, cluster_set, login)
        wait_until(lambda: ace_can(world, config, "get", "nodes"), what=f"nodes through ACE via {group}")
        who = ace_kubectl(world, config, "auth", "whoami", "-o", "json")
        assert who.returncode == 0, who.stderr
        identity = json.loads(who.stdout)["status"]["userInfo"]
        assert identity["username"] == user_id
        assert group in identity["groups"]
        for refused in (("get", "secrets", "-A"), ("get", "namespaces"), ("create", "namespace", "nope")):
            result = ace_kubectl(world, config, *refused)
            assert result.returncode != 0, refused
            assert "forbidden" in result.stderr.lower(), result.stderr
        reviews = [e for e in read_trace(ace.trace) if isinstance(e, TokenReviewed)]
        assert any(e.user == user_id and e.authenticated for e in reviews), "kube-api-auth never answered"
        attribute = ace.cluster_user_attribute(user_id)
        assert attribute is not None
        assert group in attribute["groups"]
        remove()
        removed = time.monotonic()
        try:
            copied = wait_until(
                lambda: group not in ((ace.cluster_user_attribute(user_id) or {}).get("groups") or ()),
                what="the group gone from the ClusterUserAttribute",
                timeout=REMOVAL_DEADLINE,
            )
            wait_until(
                lambda: not ace_can(world, config, "get", "nodes"),
                what="nodes refused through ACE after the removal",
                timeout=REMOVAL_DEADLINE,
            )
            refused_after = time.monotonic() - removed
            result = ace_kubectl(world, config, "get", "nodes")
            assert "forbidden" in result.stderr.lower(), result.stderr  # still authenticated, no longer bound
        finally:
            restore()
        return copied, refused_after
    finally:
        world.v3("DELETE", f"/v3/clusterroletemplatebindings/{binding}")


@pytest.mark.requirement("ACE-022", "ACE-023")
def test_nested_ldap_group_binding_through_ace_and_its_removal(
    world: World, ace: AceCluster, cluster_set: ClusterSet, record_property: Callable[[str, object], None]
) -> None:
    login = world.token("openldap", {"username": "alice", "password": PASSWORDS["alice"]})
    copied, refused = ace_group_access_and_removal(
        world,
        ace,
        cluster_set,
        login=login,
        user_id=world.user_of(ALICE)["id"],
        group=ALL_STAFF,
        remove=lambda: world.slapd.modify(OPENLDAP_BASE, membership("dave")),
        restore=lambda: world.slapd.modify(OPENLDAP_BASE, membership("alice")),
    )
    world.removal_bounds["openldap-ace"] = refused
    record_property("ace_removal_attribute_seconds", round(copied, 2))
    record_property("ace_removal_refused_seconds", round(refused, 2))


@pytest.mark.requirement("ACE-022", "ACE-023")
def test_github_team_binding_through_ace_and_its_removal(
    world: World, ace: AceCluster, cluster_set: ClusterSet, record_property: Callable[[str, object], None]
) -> None:
    login = world.token("github", {"code": world.github.code(1)})
    teams = world.github.state.users[1].teams
    copied, refused = ace_group_access_and_removal(
        world,
        ace,
        cluster_set,
        login=login,
        user_id=world.user_of("github_user://1")["id"],
        group=PLATFORM_TEAM,
        remove=lambda: teams.discard(1001),
        restore=lambda: teams.add(1001),
    )
    world.removal_bounds["github-ace"] = refused
    record_property("ace_removal_attribute_seconds", round(copied, 2))
    record_property("ace_removal_refused_seconds", round(refused, 2))


# -- outages ----------------------------------------------------------------------------------------


@pytest.mark.requirement("SRV-026")
def test_a_paused_directory_answers_within_the_timeout_and_nothing_else_stops(world: World) -> None:
    earlier = world.token("openldap", {"username": "dave", "password": PASSWORDS["dave"]})
    with world.slapd.paused():
        answer = world.login("openldap", {"username": "dave", "password": PASSWORDS["dave"]})
        assert answer.status == 503, answer.raw
        assert answer.body["code"] == "ServiceUnavailable"
        assert "openldap" in answer.body["message"]
        message = answer.body["message"]
        assert "timed out" in message or f"no answer within {AUTH_TIMEOUT:g} s" in message, message
        assert world.server.admin_token()
        assert world.v3("GET", "/v3/users?me=true", token=earlier).status == 200
    world.token("openldap", {"username": "dave", "password": PASSWORDS["dave"]})


@pytest.mark.requirement("SRV-026")
@pytest.mark.parametrize(
    ("knob", "value", "status", "code"),
    [
        ("fail_status", 502, 503, "ServiceUnavailable"),
        ("rate_limit", 403, 429, "RateLimited"),
        ("rate_limit", 429, 429, "RateLimited"),
        ("latency", AUTH_TIMEOUT + 2, 503, "ServiceUnavailable"),
    ],
    ids=["5xx", "rate-limit-403", "rate-limit-429", "slow"],
)
def test_github_failures_get_clear_answers(
    world: World, knob: str, value: float, status: int, code: str
) -> None:
    earlier = world.token("github", {"code": world.github.code(2)})
    code_value = world.github.code(2)
    setattr(world.github.state, knob, value)
    try:
        answer = world.login("github", {"code": code_value})
        assert (answer.status, answer.body["code"]) == (status, code), answer.raw
        assert "github" in answer.body["message"]
        assert world.server.admin_token()
        assert world.v3("GET", "/v3/users?me=true", token=earlier).status == 200
    finally:
        setattr(world.github.state, knob, 0.0 if knob == "latency" else None)


@pytest.mark.requirement("SRV-022")
def test_disabling_a_provider_refuses_its_logins_and_tokens(world: World) -> None:
    token = world.token("activedirectory", {"username": "erin", "password": PASSWORDS["erin"]})
    assert world.v3("POST", "/v3/authConfigs/activedirectory?action=disable").status == 200
    try:
        wait_until(
            lambda: world.v3("GET", "/v3/users?me=true", token=token).status == 401, what="token refused"
        )
        answer = world.login("activedirectory", {"username": "erin", "password": PASSWORDS["erin"]})
        assert answer.status == 404, answer.raw
    finally:
        again = world.v3("PUT", "/v3/authConfigs/activedirectory", {"enabled": True})
        assert again.status == 200, again.raw
    world.token("activedirectory", {"username": "erin", "password": PASSWORDS["erin"]})

"""The whole reference topology of the smoke scenario, brought up once by ``corral up`` for this module.

Users' kubeconfigs from ``generateKubeconfig`` drive the real kubectl through the server's proxy:
the verbs, ``auth can-i --list`` and ``--as``; isolation between users and bindings of groups; the
five impersonation objects; a group change on the next request; an account removed with its
user's last binding; fifty users' first requests at once; header attacks; ``corral doctor``; and
the trace the server wrote, checked by `corral.checks`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import os
import queue
import ssl
import subprocess
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from conformance import run_v3
from corral.bundled import scenario_path
from corral.checks import check_failover_within, check_no_success_while_paths_down, check_slos
from corral.cli import main
from corral.controlplane import build
from corral.k8s import KubeClient, KubeConfig, wait_for
from corral.model import ImpersonationAccountEnsured, RequestCompleted, Scenario
from corral.model.trace import read_trace
from corral.run.up import down, up
from corral.server.doctor import check_impersonation

RBAC = "/apis/rbac.authorization.k8s.io/v1"
MGMT = "/apis/management.cattle.io/v3"
NS = "cattle-impersonation-system"


@dataclass(frozen=True)
class Topology:
    run_dir: Path
    doc: dict[str, Any]
    kubectl: Path
    scenario: Scenario

    @property
    def admin_token(self) -> str:
        return Path(self.doc["server"]["admin"]["token_file"]).read_text().strip()

    def cluster_id(self, name: str) -> str:
        return str(self.doc["clusters"][name]["id"])

    def user_id(self, name: str) -> str:
        return str(self.doc["users"][name]["id"])

    def admin(self, cluster: str) -> KubeClient:
        path = (
            self.doc["upstream"]["admin_kubeconfig"]
            if cluster == "local"
            else self.doc["clusters"][cluster]["admin_kubeconfig"]
        )
        return KubeClient(KubeConfig.load(path))

    def kubectl_as(
        self, user: str, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        kubeconfig = self.doc["users"][user]["kubeconfig"]
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", kubeconfig, *args],
            capture_output=True, text=True, timeout=timeout, check=check,
        )  # fmt: skip

    def v3(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> dict[str, Any]:
        return run_v3.call(self.doc, method, path, body, token=token or self.admin_token)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, corral_binaries: build.Built) -> Iterator[Topology]:
    run_dir = tmp_path_factory.mktemp("topology")
    doc = up(scenario_path(), run_dir, binaries=corral_binaries, detached=False)
    try:
        yield Topology(
            run_dir=run_dir,
            doc=doc,
            kubectl=corral_binaries["kubectl"],
            scenario=Scenario.load(scenario_path()),
        )
    finally:
        down(run_dir)


def context_of(topology: Topology, cluster: str) -> str:
    """The kubeconfig context generateKubeconfig named after the cluster's display name."""
    return cluster


# -- the file ------------------------------------------------------------------------------------


@pytest.mark.requirement("SRV-012")
def test_topology_paths_are_absolute_and_secrets_private(topology: Topology) -> None:
    doc = topology.doc
    secret_files = [doc["server"]["admin"]["password_file"], doc["server"]["admin"]["token_file"]]
    secret_files += [u["password_file"] for u in doc["users"].values()] + [
        u["kubeconfig"] for u in doc["users"].values()
    ]
    for path in [
        doc["server"]["ca_file"],
        *secret_files,
        *(c["admin_kubeconfig"] for c in doc["clusters"].values()),
    ]:
        assert Path(path).is_absolute(), path
        assert Path(path).is_file(), path
    for path in secret_files:
        assert os.stat(path).st_mode & 0o077 == 0, path
    assert set(doc["clusters"]) == {"c-us", "c-au"}
    assert {p["role"] for p in doc["processes"]} >= {"server", "upstream-apiserver", "kube-apiserver", "etcd"}
    assert all(p["pid"] > 0 for p in doc["processes"])


# -- kubectl through the proxy -------------------------------------------------------------------


@pytest.mark.requirement("PROXY-014", "PROXY-023")
def test_kubectl_verbs_through_the_proxy(topology: Topology) -> None:
    ctx = ["--context", context_of(topology, "c-us"), "-n", "team-a"]
    name = f"cm-{uuid.uuid4().hex[:6]}"
    nodes = topology.kubectl_as(
        "alice", "--context", context_of(topology, "c-au"), "get", "nodes", "-o", "name"
    )
    assert nodes.returncode == 0, nodes.stderr
    assert sorted(nodes.stdout.split()) == ["node/c-au-cp", "node/c-au-w1", "node/c-au-w2"]
    watch = subprocess.Popen(
        [str(topology.kubectl), "--kubeconfig", topology.doc["users"]["alice"]["kubeconfig"], *ctx,
         "get", "configmaps", "--watch", "-o", "name", "--request-timeout=120s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            lines.put(line.strip())

    def watch_printed(wanted: str) -> bool:
        while not lines.empty():
            seen.append(lines.get_nowait())
        return wanted in seen

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        # A sentinel the watch must print first: then it is open, and sees the create below.
        sentinel = f"{name}-sentinel"
        made = topology.kubectl_as("alice", *ctx, "create", "configmap", sentinel, "--from-literal=a=0")
        assert made.returncode == 0, made.stderr
        wait_for(
            lambda: watch_printed(f"configmap/{sentinel}"),
            timeout_seconds=60,
            what="the watch through the proxy to print the sentinel",
        )
        created = topology.kubectl_as("alice", *ctx, "create", "configmap", name, "--from-literal=a=1")
        assert created.returncode == 0, created.stderr
        assert (
            f"configmap/{name}"
            in topology.kubectl_as("alice", *ctx, "get", "configmaps", "-o", "name").stdout
        )
        got = topology.kubectl_as("alice", *ctx, "get", "configmap", name, "-o", "jsonpath={.data.a}")
        assert got.stdout == "1"
        updated = topology.kubectl_as("alice", *ctx, "label", "configmap", name, "tier=demo")
        assert updated.returncode == 0, updated.stderr
        deleted = topology.kubectl_as("alice", *ctx, "delete", "configmap", name)
        assert deleted.returncode == 0, deleted.stderr
        topology.kubectl_as("alice", *ctx, "delete", "configmap", sentinel)
        wait_for(
            lambda: watch_printed(f"configmap/{name}"),
            timeout_seconds=60,
            what="the watch through the proxy to print the created config map",
        )
    finally:
        watch.terminate()
        watch.wait(timeout=30)
        reader.join(timeout=30)
        if watch.stdout is not None:
            watch.stdout.close()
    assert f"configmap/{name}" in seen


@pytest.mark.requirement("PROXY-023")
def test_auth_can_i_list_through_the_proxy(topology: Topology) -> None:
    listed = topology.kubectl_as(
        "alice", "--context", context_of(topology, "c-us"), "-n", "team-a", "auth", "can-i", "--list"
    )
    assert listed.returncode == 0, listed.stderr
    configmaps = [line for line in listed.stdout.splitlines() if line.startswith("configmaps ")]
    assert configmaps
    assert "create" in configmaps[0]
    other = topology.kubectl_as(
        "alice",
        "--context",
        context_of(topology, "c-us"),
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        "kube-system",
    )
    assert other.stdout.strip() == "no"


@pytest.mark.requirement("PROXY-009", "PROXY-010")
def test_as_is_allowed_to_the_admin_and_refused_to_a_user(topology: Topology) -> None:
    alice, bob = topology.user_id("alice"), topology.user_id("bob")
    refused = topology.kubectl_as(
        "alice", "--context", context_of(topology, "c-us"), "--as", bob, "get", "pods", "-n", "kube-system"
    )
    assert refused.returncode != 0
    assert "impersonate" in refused.stderr.lower() or "forbidden" in refused.stderr.lower()
    admin_kubeconfig = topology.run_dir / "admin.kubeconfig"
    answer = topology.v3("POST", f"/v3/clusters/{topology.cluster_id('c-us')}?action=generateKubeconfig")
    admin_kubeconfig.write_text(answer["config"])
    admin_kubeconfig.chmod(0o600)

    def as_admin(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(topology.kubectl), "--kubeconfig", str(admin_kubeconfig), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    as_alice = as_admin("--as", alice, "--as-group", "system:authenticated", "auth", "can-i", "create",
                        "configmaps", "-n", "team-a")  # fmt: skip
    assert as_alice.stdout.strip() == "yes", as_alice.stderr
    as_alice_secrets = as_admin("--as", alice, "get", "secrets", "-n", "kube-system")
    assert as_alice_secrets.returncode != 0
    assert "forbidden" in as_alice_secrets.stderr.lower()


@pytest.mark.requirement("PROXY-022", "SRV-008")
def test_isolation_between_users_and_group_bindings(topology: Topology) -> None:
    us = context_of(topology, "c-us")
    denied = topology.kubectl_as("alice", "--context", us, "get", "secrets", "-n", "kube-system")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    allowed = topology.kubectl_as("bob", "--context", us, "get", "secrets", "-n", "kube-system")
    assert allowed.returncode == 0, allowed.stderr
    assert topology.kubectl_as("alice", "--context", us, "get", "nodes").returncode != 0
    # A binding of alice's group "devs" (not of alice) lets her list c-us's nodes.
    binding = topology.v3(
        "POST",
        "/v3/clusterroletemplatebindings",
        {"type": "clusterRoleTemplateBinding", "clusterId": topology.cluster_id("c-us"), "groupPrincipalId": "local://devs",
         "roleTemplateId": "cluster-member"},
    )  # fmt: skip
    try:
        wait_for(
            lambda: topology.kubectl_as("alice", "--context", us, "get", "nodes").returncode == 0,
            timeout_seconds=60,
            what="the group binding to reach c-us",
        )
        assert (
            topology.kubectl_as("bob", "--context", us, "get", "secrets", "-n", "kube-system").returncode == 0
        )
    finally:
        topology.v3("DELETE", f"/v3/clusterroletemplatebindings/{binding['id']}")


@pytest.mark.requirement("PROXY-008")
def test_header_attacks_gain_nothing(topology: Topology) -> None:
    base = f"{topology.doc['server']['url']}/k8s/clusters/{topology.cluster_id('c-us')}"
    url = f"{base}/api/v1/namespaces/kube-system/secrets"
    kubeconfig = KubeConfig.load(
        topology.doc["users"]["alice"]["kubeconfig"], context=context_of(topology, "c-us")
    )
    bob = topology.user_id("bob")
    attacks = [
        {"Impersonate-User": bob},
        {"Impersonate-Group": "system:masters"},
        {"impersonate-user": "admin", "Connection": "Impersonate-User"},
        {"Connection": "Impersonate-User, Impersonate-Group", "Impersonate-Group": "system:masters"},
        {"Impersonate-Extra-Principalid": "local://admin"},
        {"IMPERSONATE-USER": "system:admin"},
    ]

    async def probe() -> list[int]:
        context = ssl.create_default_context(cafile=topology.doc["server"]["ca_file"])
        async with aiohttp.ClientSession() as session:
            statuses = []
            for headers in attacks:
                async with session.get(
                    url, headers={"Authorization": f"Bearer {kubeconfig.token}", **headers}, ssl=context
                ) as r:
                    statuses.append(r.status)
            return statuses

    statuses = asyncio.run(probe())
    assert all(status in (401, 403) for status in statuses), statuses


# -- the impersonation accounts --------------------------------------------------------------------


@pytest.mark.requirement("IMP-001", "IMP-002", "IMP-003", "IMP-004", "IMP-005", "IMP-006")
def test_the_five_objects_after_a_first_request(topology: Topology) -> None:
    assert (
        topology.kubectl_as("alice", "--context", context_of(topology, "c-au"), "get", "nodes").returncode
        == 0
    )
    alice = topology.user_id("alice")
    with topology.admin("c-au") as admin:
        report = check_impersonation(admin, cluster="c-au", user=alice, groups=["devs"])
        assert report.healthy, report.lines()
        role = admin.get(f"{RBAC}/clusterroles/cattle-impersonation-{alice}")
    assert [r["resources"][0] for r in role["rules"]] == [
        "users", "userextras/requesttokenid", "userextras/requesthost", "groups",
        "userextras/principalid", "userextras/username",
    ]  # fmt: skip


def new_bound_user(topology: Topology, cluster: str, role: str = "cluster-member") -> tuple[str, str, str]:
    """A fresh user bound in ``cluster``: (id, token, crtb id)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    body = {
        "type": "user",
        "username": name,
        "password": password,
        "enabled": True,
        "mustChangePassword": False,
    }
    user = topology.v3("POST", "/v3/users", body)
    binding = {"type": "clusterRoleTemplateBinding", "clusterId": topology.cluster_id(cluster),
               "userId": user["id"], "roleTemplateId": role}  # fmt: skip
    crtb = topology.v3("POST", "/v3/clusterroletemplatebindings", binding)
    credentials = {"username": name, "password": password, "responseType": "json"}
    login = topology.v3("POST", "/v3-public/localProviders/local?action=login", credentials)
    return str(user["id"]), str(login["token"]), str(crtb["id"])


def proxy_get(topology: Topology, token: str, cluster: str, path: str) -> int:
    """The status of one GET through the proxy, on a connection of its own, closed before returning."""
    url = urllib.parse.urlsplit(topology.doc["server"]["url"])
    context = ssl.create_default_context(cafile=topology.doc["server"]["ca_file"])
    connection = http.client.HTTPSConnection(url.hostname or "", url.port, context=context, timeout=60)
    try:
        connection.request(
            "GET",
            f"/k8s/clusters/{topology.cluster_id(cluster)}{path}",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.requirement("IMP-011")
def test_group_change_shows_on_the_next_request(topology: Topology) -> None:
    user_id, token, _ = new_bound_user(topology, "c-au")
    assert proxy_get(topology, token, "c-au", "/api/v1/nodes") == 200
    with topology.admin("local") as upstream:
        upstream.patch(
            f"{MGMT}/userattributes/{user_id}",
            {"GroupPrincipals": {"local": {"items": [{"metadata": {"name": "local://qa"}}]}}},
        )
    with topology.admin("c-au") as admin:

        def next_request_has_qa() -> dict[str, Any] | None:
            # The server learns of the change through its watch of user attributes; the request
            # after that is the one to rewrite the role.
            assert proxy_get(topology, token, "c-au", "/api/v1/nodes") == 200
            role: dict[str, Any] = admin.get(f"{RBAC}/clusterroles/cattle-impersonation-{user_id}")
            return role if "qa" in role["rules"][3]["resourceNames"] else None

        role = wait_for(next_request_has_qa, timeout_seconds=60, what="the group change on a request")
    assert "qa" in role["rules"][3]["resourceNames"]


@pytest.mark.requirement("IMP-010")
def test_removing_the_last_binding_removes_the_account(topology: Topology) -> None:
    user_id, token, crtb = new_bound_user(topology, "c-au")
    assert proxy_get(topology, token, "c-au", "/api/v1/nodes") == 200
    name = f"cattle-impersonation-{user_id}"
    topology.v3("DELETE", f"/v3/clusterroletemplatebindings/{crtb}")
    with topology.admin("c-au") as admin:
        wait_for(
            lambda: (
                not admin.exists(f"{RBAC}/clusterroles/{name}")
                and not admin.exists(f"{RBAC}/clusterrolebindings/{name}")
                and not admin.exists(f"/api/v1/namespaces/{NS}/serviceaccounts/{name}")
            ),
            timeout_seconds=60,
            what="the account's objects to go with the last binding",
        )


@pytest.mark.requirement("IMP-012")
def test_fifty_users_first_requests_create_each_account_once(topology: Topology) -> None:
    users = [new_bound_user(topology, "c-us") for _ in range(50)]

    # Fifty first requests at once, each on its own connection.
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(lambda u: proxy_get(topology, u[1], "c-us", "/api/v1/nodes"), users))
    assert statuses == [200] * 50
    with topology.admin("c-us") as admin:
        secrets = admin.list(
            f"/api/v1/namespaces/{NS}/secrets", label_selector="cattle.io/service-account.name"
        )
        roles = {r["metadata"]["name"] for r in admin.list(f"{RBAC}/clusterroles")["items"]}
    per_account = Counter(s["metadata"]["labels"]["cattle.io/service-account.name"] for s in secrets["items"])
    for user_id, _, _ in users:
        assert f"cattle-impersonation-{user_id}" in roles
        assert per_account[f"cattle-impersonation-{user_id}"] == 1


# -- doctor and trace ------------------------------------------------------------------------------


@pytest.mark.requirement("IMP-014")
def test_doctor_finds_a_deleted_cluster_role_binding(topology: Topology) -> None:
    assert (
        topology.kubectl_as("alice", "--context", context_of(topology, "c-au"), "get", "nodes").returncode
        == 0
    )
    args = ["doctor", "impersonation", "--dir", str(topology.run_dir), "--cluster", "c-au", "--user", "alice"]
    healthy = CliRunner().invoke(main, args)
    assert healthy.exit_code == 0, healthy.output
    with topology.admin("c-au") as admin:
        admin.delete(f"{RBAC}/clusterrolebindings/cattle-impersonation-{topology.user_id('alice')}")
    broken = CliRunner().invoke(main, args)
    assert broken.exit_code == 1
    assert f"MISSING: ClusterRoleBinding cattle-impersonation-{topology.user_id('alice')}" in broken.output
    # The next request through the proxy repairs it.
    wait_for(
        lambda: (
            topology.kubectl_as("alice", "--context", context_of(topology, "c-au"), "get", "nodes").returncode
            == 0
            and CliRunner().invoke(main, args).exit_code == 0
        ),
        timeout_seconds=30,
        what="the account to be repaired",
    )


@pytest.mark.requirement("TRACE-001", "TRACE-002", "TRACE-005")
def test_the_trace_has_the_model_s_events_and_passes_the_checks(topology: Topology) -> None:
    assert (
        topology.kubectl_as("bob", "--context", context_of(topology, "c-us"), "get", "namespaces").returncode
        == 0
    )
    events = list(read_trace(topology.doc["server"]["trace_file"]))
    proxied = [e for e in events if isinstance(e, RequestCompleted)]
    ensured = [e for e in events if isinstance(e, ImpersonationAccountEnsured)]
    assert proxied
    assert all(e.path == "proxy" for e in proxied)
    assert ensured
    assert any(e.created for e in ensured)
    assert check_failover_within(topology.scenario, events) == []
    assert check_no_success_while_paths_down(topology.scenario, events) == []
    # The SLO check runs on the measured trace unchanged; this module's traffic (refusals on purpose,
    # fifty first requests at once) is not the scenario's workload, so its verdicts are not asserted.
    slos = check_slos(topology.scenario, events)
    assert all(v.check.startswith("slo-") for v in slos)

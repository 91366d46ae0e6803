"""The Authorized Cluster Endpoint of a whole topology, brought up once by ``corral up`` for this module.

The ace-topology scenario: c-ace with ACE on its control-plane node, c-lb with two control-plane
apiservers behind HAProxy. The users' kubeconfigs drive the real kubectl through ACE contexts and
through the server's proxy: reads, writes and watches; the same RBAC answers on both paths; a
revocation reaching the cluster (timed, not asserted); an expired and an unscoped token refused; the
FQDN with one apiserver stopped; and, last, every server process stopped: ACE keeps serving, the
proxy fails, and a revocation made meanwhile applies once the server is back.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from click.testing import CliRunner

from conformance import run_v3
from corral.auth import hashers
from corral.bundled import scenario_path
from corral.cli import main
from corral.controlplane import build
from corral.controlplane.processes import ProcessGroup
from corral.errors import KubeAPIError, NotFoundError
from corral.k8s import KubeClient, KubeConfig
from corral.kubeapiauth import objects
from corral.model import RequestCompleted, TokenReviewed
from corral.model.trace import TraceWriter, read_trace
from corral.run.up import down, up

pytestmark = pytest.mark.local_only

MGMT = "/apis/management.cattle.io/v3"
CAT = f"/apis/{objects.GROUP}/{objects.VERSION}/namespaces/{objects.NAMESPACE}/clusterauthtokens"


@dataclass
class Topology:
    run_dir: Path
    doc: dict[str, Any]
    kubectl_bin: Path
    folder: Path
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def admin_token(self) -> str:
        return Path(self.doc["server"]["admin"]["token_file"]).read_text().strip()

    def upstream(self) -> KubeClient:
        return KubeClient(KubeConfig.load(self.doc["upstream"]["admin_kubeconfig"]))

    def admin(self, cluster: str) -> KubeClient:
        return KubeClient(KubeConfig.load(self.doc["clusters"][cluster]["admin_kubeconfig"]))

    def kubeconfig(self, user: str) -> Path:
        return Path(self.doc["users"][user]["kubeconfig"])

    def kubectl_with(
        self, kubeconfig: Path, context: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run(
            [str(self.kubectl_bin), f"--kubeconfig={kubeconfig}", f"--context={context}",
             "--request-timeout=20s", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "HOME": str(self.folder)},
        )  # fmt: skip
        if "-fqdn" in context or context.count("-") >= 2:  # an ACE context (<cluster>-<node> or -fqdn)
            self.record_ace(context, args, done, time.monotonic() - started)
        return done

    def kubectl(self, user: str, context: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl_with(self.kubeconfig(user), context, *args)

    def record_ace(
        self, context: str, args: tuple[str, ...], done: subprocess.CompletedProcess[str], seconds: float
    ) -> None:
        """kubectl through ACE as the run's trace has it: a RequestCompleted with path ace."""
        status = 200 if done.returncode == 0 else (401 if "Unauthorized" in done.stderr else 403)
        event = RequestCompleted(
            t=round(time.time() - float(self.doc["server"]["trace_epoch"]), 6),
            path="ace",
            cluster=context.rsplit("-", 1)[0]
            if context.endswith("-fqdn")
            else "-".join(context.split("-")[:2]),
            user="",
            verb=args[0] if args else "",
            status=status,
            latency_seconds=round(seconds, 6),
        )
        with self.lock, Path(self.doc["server"]["trace_file"]).open("a", encoding="utf-8") as stream:
            TraceWriter(stream).write(event)

    def v3(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> dict[str, Any]:
        return run_v3.call(self.doc, method, path, body, token=token or self.admin_token)

    def login(self, user: str) -> str:
        password = Path(self.doc["users"][user]["password_file"]).read_text()
        body = {"username": user, "password": password, "responseType": "json"}
        return str(self.v3("POST", "/v3-public/localProviders/local?action=login", body)["token"])

    def fresh_kubeconfig(self, user: str, cluster: str) -> tuple[Path, str]:
        """The user's kubeconfig with a new kubeconfig token for ``cluster`` (from generateKubeconfig)."""
        cluster_id = self.doc["clusters"][cluster]["id"]
        generated = self.v3(
            "POST", f"/v3/clusters/{cluster_id}?action=generateKubeconfig", token=self.login(user)
        )
        token = yaml.safe_load(generated["config"])["users"][0]["user"]["token"]
        return self.with_token(user, cluster, token), token.split(":", 1)[0]

    def with_token(self, user: str, cluster: str, token: str) -> Path:
        document = yaml.safe_load(self.kubeconfig(user).read_text())
        for entry in document["users"]:
            if entry["name"] == cluster:
                entry["user"]["token"] = token
        path = self.folder / f"{user}-{secrets.token_hex(4)}.kubeconfig"
        path.write_text(yaml.safe_dump(document))
        path.chmod(0o600)
        return path

    def copy_of(self, cluster: str, token: str) -> dict[str, Any] | None:
        with self.admin(cluster) as admin:
            try:
                return admin.get(f"{CAT}/{token}")
            except KubeAPIError:  # absent, or the kind not yet served: no copy
                return None

    def reviews(self, cluster: str, bearer: str) -> list[int]:
        """The status each of the cluster's kube-api-auth answers a TokenReview of ``bearer`` with."""
        body = json.dumps({"kind": "TokenReview", "spec": {"token": bearer}}).encode()
        statuses = []
        for base in self.doc["clusters"][cluster]["kube_api_auth"]:
            request = urllib.request.Request(base + "/v1/authenticate", data=body, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as e:
                statuses.append(e.code)
            except OSError:
                statuses.append(0)  # that node's kube-api-auth is away
        return statuses

    def bearer(self, kubeconfig: Path, cluster: str) -> str:
        document = yaml.safe_load(kubeconfig.read_text())
        return str(next(u for u in document["users"] if u["name"] == cluster)["user"]["token"])

    def processes(self, role: str, cluster: str | None = None) -> list[dict[str, Any]]:
        return [
            p
            for p in self.doc["processes"]
            if p["role"] == role and (cluster is None or p["cluster"] == cluster)
        ]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, corral_binaries: build.Built) -> Iterator[Topology]:
    run_dir = tmp_path_factory.mktemp("ace-topology")
    started = time.monotonic()
    doc = up(scenario_path("ace-topology"), run_dir, binaries=corral_binaries, detached=False)
    print(f"ace topology up in {time.monotonic() - started:.1f}s")
    try:
        yield Topology(run_dir=run_dir, doc=doc, kubectl_bin=corral_binaries["kubectl"], folder=run_dir)
    finally:
        down(run_dir)


def wait(condition: Any, *, timeout: float = 30.0, every: float = 0.02, what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took (fail past ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(every)
    return time.monotonic() - started


def refused(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and "Unauthorized" in done.stderr


# -- the wiring ------------------------------------------------------------------------------------


@pytest.mark.requirement("ACE-015", "ACE-016", "ACE-021", "KCFG-006")
def test_topology_lists_the_ace_pieces_and_doctor_finds_them_wired(topology: Topology) -> None:
    clusters = topology.doc["clusters"]
    assert len(clusters["c-ace"]["kube_api_auth"]) == 1
    assert len(clusters["c-lb"]["kube_api_auth"]) == 2
    assert clusters["c-lb"]["ace_endpoints"][0].startswith("https://localhost:")
    assert clusters["c-ace"]["ace_endpoints"] == [clusters["c-ace"]["api_server"]]
    nodes = {(p["cluster"], p["node"]) for p in topology.processes("kube-apiserver")}
    assert {("c-lb", "c-lb-cp1"), ("c-lb", "c-lb-cp2"), ("c-ace", "c-ace-cp")} <= nodes
    assert {p["node"] for p in topology.processes("kube-api-auth", "c-lb")} == {"c-lb-cp1", "c-lb-cp2"}
    assert len(topology.processes("load-balancer", "c-lb")) == 1
    contexts = {
        c["name"]: c["context"] for c in yaml.safe_load(topology.kubeconfig("carol").read_text())["contexts"]
    }
    assert contexts["c-ace-cp"]["user"] == contexts["c-ace"]["user"] == "c-ace"
    assert contexts["c-lb-fqdn"]["user"] == "c-lb"
    assert "c-lb-cp1" not in contexts  # with an FQDN, no per-node entries
    for cluster in ("c-ace", "c-lb"):
        result = CliRunner().invoke(
            main, ["doctor", "ace", "--cluster", cluster, "--dir", str(topology.run_dir)]
        )
        assert result.exit_code == 0, result.output
        assert "token(s) copied" in result.output
        assert result.output.count("points at http://127.0.0.1:") == len(clusters[cluster]["kube_api_auth"])


# -- the path ----------------------------------------------------------------------------------------


@pytest.mark.requirement("ACE-017")
def test_an_ace_context_reads_writes_and_watches(topology: Topology) -> None:
    name = f"ace-{secrets.token_hex(3)}"
    watch = subprocess.Popen(
        [str(topology.kubectl_bin), f"--kubeconfig={topology.kubeconfig('carol')}", "--context=c-ace-cp",
         "get", "configmaps", "-n", "default", "--watch-only", "-o", "name", "--request-timeout=30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(topology.folder)},
    )  # fmt: skip
    try:
        assert topology.kubectl("carol", "c-ace-cp", "get", "namespaces").returncode == 0
        time.sleep(0.5)  # the watch's first request is on its way; a missed event fails below, not a hang
        created = topology.kubectl("carol", "c-ace-cp", "create", "configmap", name, "-n", "default")
        assert created.returncode == 0, created.stderr
        assert watch.stdout is not None
        line = watch.stdout.readline().strip()
        assert line == f"configmap/{name}"
    finally:
        watch.kill()
        watch.communicate()
    got = topology.kubectl("carol", "c-ace-cp", "get", "configmap", name, "-n", "default", "-o", "json")
    assert json.loads(got.stdout)["metadata"]["name"] == name
    assert topology.kubectl("carol", "c-ace-cp", "delete", "configmap", name, "-n", "default").returncode == 0
    through_lb = topology.kubectl("carol", "c-lb-fqdn", "get", "namespaces", "default", "-o", "name")
    # carol is a member of c-lb: she may not list namespaces; a get of one is refused the same way.
    assert "Forbidden" in through_lb.stderr
    assert "Unauthorized" not in through_lb.stderr


CHECKS = [
    ("list", "namespaces", ""),
    ("create", "configmaps", "default"),
    ("list", "pods", "team-d"),
    ("create", "deployments.apps", "team-d"),
    ("get", "configmaps", "ops"),
    ("create", "configmaps", "ops"),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("get", "clusterauthtokens.cluster.cattle.io", "cattle-system"),
]


@pytest.mark.requirement("ACE-018")
def test_every_rbac_decision_through_ace_equals_the_proxys(topology: Topology) -> None:
    cases = []
    for user in ("carol", "dave", "erin"):
        contexts = {c["name"] for c in yaml.safe_load(topology.kubeconfig(user).read_text())["contexts"]}
        for proxy, ace in (("c-ace", "c-ace-cp"), ("c-lb", "c-lb-fqdn")):
            if proxy in contexts:
                assert ace in contexts
                cases += [(user, proxy, ace, check) for check in CHECKS]

    def decide(user: str, context: str, check: tuple[str, str, str]) -> str:
        verb, resource, namespace = check
        plural, _, group = resource.partition(".")
        config = KubeConfig.load(topology.kubeconfig(user), context=context)
        with KubeClient(config) as client:
            return "yes" if client.can_i(verb, plural, namespace=namespace, group=group) else "no"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        by_proxy = list(pool.map(lambda c: decide(c[0], c[1], c[3]), cases))
        by_ace = list(pool.map(lambda c: decide(c[0], c[2], c[3]), cases))
    differ = [(c[0], c[2], c[3], p, a) for c, p, a in zip(cases, by_proxy, by_ace, strict=True) if p != a]
    assert differ == []
    # The users' bindings allow some of these and refuse others.
    assert "yes" in by_ace
    assert "no" in by_ace


@pytest.mark.requirement("ACE-017")
def test_kubectl_latency_through_ace_and_through_the_proxy(topology: Topology, record_property: Any) -> None:
    """Recorded, not asserted: p50 of 30 ``kubectl get`` through each path, alternating."""
    times: dict[str, list[float]] = {"c-ace-cp": [], "c-ace": []}
    for _ in range(30):
        for context, samples in times.items():
            started = time.monotonic()
            done = topology.kubectl("carol", context, "get", "namespace", "default", "-o", "name")
            samples.append(time.monotonic() - started)
            assert done.returncode == 0, done.stderr
    ace, proxy = statistics.median(times["c-ace-cp"]), statistics.median(times["c-ace"])
    record_property("kubectl_get_p50_ace_seconds", round(ace, 4))
    record_property("kubectl_get_p50_proxy_seconds", round(proxy, 4))
    print(f"kubectl get p50: ACE {ace * 1000:.0f} ms, proxy {proxy * 1000:.0f} ms")


@pytest.mark.requirement("TRACE-004")
def test_token_reviews_and_ace_requests_are_in_the_runs_trace(topology: Topology) -> None:
    assert topology.kubectl("dave", "c-ace-cp", "get", "pods", "-n", "team-d").returncode == 0
    events = list(read_trace(Path(topology.doc["server"]["trace_file"])))
    reviews = [e for e in events if isinstance(e, TokenReviewed)]
    dave = topology.doc["users"]["dave"]["id"]
    assert any(r.cluster == "c-ace" and r.user == dave and r.authenticated for r in reviews)
    assert any(r.cluster == "c-lb" and r.authenticated for r in reviews)
    assert any(isinstance(e, RequestCompleted) and e.path == "ace" and e.status == 200 for e in events)


# -- tokens ----------------------------------------------------------------------------------------


@pytest.mark.requirement("ACE-008", "ACE-005", "ACE-002")
def test_disabling_and_deleting_a_token_reach_the_cluster(topology: Topology, record_property: Any) -> None:
    kubeconfig, name = topology.fresh_kubeconfig("carol", "c-ace")
    bearer = topology.bearer(kubeconfig, "c-ace")
    wait(lambda: topology.reviews("c-ace", bearer) == [200], what="the new token accepted by kube-api-auth")
    assert topology.kubectl_with(kubeconfig, "c-ace-cp", "get", "namespaces").returncode == 0
    with topology.upstream() as upstream:
        upstream.patch(f"{MGMT}/tokens/{name}", {"enabled": False})
    started = time.monotonic()
    wait(lambda: topology.reviews("c-ace", bearer) == [401], what="kube-api-auth refusing the disabled token")
    reached = time.monotonic() - started
    assert (topology.copy_of("c-ace", name) or {}).get("enabled") is False
    # kube-apiserver keeps a token it accepted for 10 s (its own cache in front of every token
    # authenticator, besides the webhook's --authentication-token-webhook-cache-ttl).
    wait(lambda: refused(topology.kubectl_with(kubeconfig, "c-ace-cp", "get", "namespaces")), what="refusal")
    refused_after = time.monotonic() - started
    record_property("revocation_disable_kube_api_auth_seconds", round(reached, 3))
    record_property("revocation_disable_kubectl_refused_seconds", round(refused_after, 3))
    print(f"disable: kube-api-auth refuses after {reached:.3f}s, kubectl after {refused_after:.3f}s")

    kubeconfig, name = topology.fresh_kubeconfig("dave", "c-lb")
    bearer = topology.bearer(kubeconfig, "c-lb")
    wait(lambda: set(topology.reviews("c-lb", bearer)) <= {200, 0}, what="the new token accepted")
    topology.v3("DELETE", f"/v3/tokens/{name}", token=topology.login("dave"))  # only its owner sees it
    started = time.monotonic()
    wait(lambda: set(topology.reviews("c-lb", bearer)) <= {401, 0}, what="every kube-api-auth refusing")
    reached = time.monotonic() - started
    record_property("revocation_delete_kube_api_auth_seconds", round(reached, 3))
    print(f"delete: every kube-api-auth of c-lb refuses after {reached:.3f}s")
    assert topology.copy_of("c-lb", name) is None
    with topology.admin("c-lb") as admin, pytest.raises(NotFoundError):
        admin.get(f"/api/v1/namespaces/cattle-system/secrets/{name}")
    assert refused(topology.kubectl_with(kubeconfig, "c-lb-fqdn", "get", "pods", "-n", "ops"))


@pytest.mark.requirement("ACE-004")
def test_a_token_that_is_not_cluster_scoped_is_refused_by_ace(topology: Topology) -> None:
    login = topology.login("erin")  # a session token: no cluster
    kubeconfig = topology.with_token("erin", "c-ace", login)
    assert topology.kubectl_with(kubeconfig, "c-ace", "get", "pods", "-n", "team-e").returncode == 0
    done = topology.kubectl_with(kubeconfig, "c-ace-cp", "get", "pods", "-n", "team-e")
    assert refused(done), done.stderr
    assert topology.copy_of("c-ace", login.split(":", 1)[0]) is None


@pytest.mark.requirement("ACE-012")
def test_an_expired_token_is_refused_through_its_copied_expiry(topology: Topology) -> None:
    user = topology.doc["users"]["carol"]["id"]
    secret = secrets.token_hex(27)
    with topology.upstream() as upstream:
        token = upstream.create(
            f"{MGMT}/tokens",
            {
                "apiVersion": "management.cattle.io/v3",
                "kind": "Token",
                "metadata": {
                    "generateName": f"kubeconfig-{user}",
                    "annotations": {"authn.management.cattle.io/token-hashed": "true"},
                },
                "token": hashers.hash_secret(secret),
                "userId": user,
                "authProvider": "local",
                "ttl": 3000,
                "enabled": True,
                "clusterName": topology.doc["clusters"]["c-ace"]["id"],
            },
        )
    name = token["metadata"]["name"]
    kubeconfig = topology.with_token("carol", "c-ace", f"{name}:{secret}")
    wait(lambda: topology.copy_of("c-ace", name) is not None, what="the token's copy")
    copy = topology.copy_of("c-ace", name)
    assert copy is not None
    assert copy["expiresAt"]
    expires = objects.parse_rfc3339(copy["expiresAt"], what="expiresAt")
    # Not used before it expires, so no cache in front of kube-api-auth remembers it as valid.
    wait(lambda: objects.now_utc() > expires, what="the copy's expiresAt to pass", every=0.1)
    assert refused(topology.kubectl_with(kubeconfig, "c-ace-cp", "get", "namespaces"))
    assert (topology.copy_of("c-ace", name) or {}).get("enabled") is True  # refused for its expiry alone


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.requirement("ACE-020")
def test_the_fqdn_keeps_working_with_one_apiserver_stopped(topology: Topology) -> None:
    (record,) = [p for p in topology.processes("kube-apiserver", "c-lb") if p["node"] == "c-lb-cp2"]
    process = psutil.Process(record["pid"])
    process.kill()  # the node is gone (the cluster's controllers reach c-lb-cp1, which stays)
    process.wait(30)
    for _ in range(6):  # round robin: every other connection would have gone to the stopped one
        done = topology.kubectl("dave", "c-lb-fqdn", "get", "configmaps", "-n", "ops")
        assert done.returncode == 0, done.stderr


def _ready_lines(log: Path) -> int:
    return log.read_text(errors="replace").count("corral server ready on ")


@pytest.mark.requirement("ACE-019", "ACE-007")
def test_with_the_server_down_ace_works_and_a_revocation_waits_for_its_return(
    topology: Topology, record_property: Any
) -> None:
    kubeconfig, name = topology.fresh_kubeconfig("carol", "c-ace")
    wait(lambda: topology.copy_of("c-ace", name) is not None, what="the new token's copy")
    servers = topology.processes("server")
    saved = []
    for record in servers:
        process = psutil.Process(record["pid"])
        saved.append((process.cmdline(), process.environ()))
        process.send_signal(signal.SIGTERM)
    for record in servers:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(record["pid"]).wait(30)
    try:
        proxy = topology.kubectl("carol", "c-ace", "get", "namespaces")
        assert proxy.returncode != 0
        assert "refused" in proxy.stderr  # kubectl: "The connection to the server HOST:PORT was refused"
        assert topology.doc["server"]["url"].split("//")[1] in proxy.stderr
        for context in ("c-ace-cp",):
            done = topology.kubectl_with(kubeconfig, context, "get", "namespaces")
            assert done.returncode == 0, done.stderr
        assert topology.kubectl("dave", "c-lb-fqdn", "get", "pods", "-n", "ops").returncode == 0
        # Revoked in the server's store while no server runs: the cluster cannot know yet.
        with topology.upstream() as upstream:
            upstream.patch(f"{MGMT}/tokens/{name}", {"enabled": False})
        assert topology.kubectl_with(kubeconfig, "c-ace-cp", "get", "namespaces").returncode == 0
        assert (topology.copy_of("c-ace", name) or {}).get("enabled") is True
    finally:
        group = ProcessGroup.resume(topology.run_dir, detached=False)
        for index, (argv, env) in enumerate(saved):
            log = group.log_path(f"server-{index}")
            before = _ready_lines(log)
            group.forget([f"server-{index}"])
            restarted = time.monotonic()
            group.start(f"server-{index}", argv, role="server", env=env)
            wait(
                lambda log=log, before=before: _ready_lines(log) > before,
                timeout=120,
                every=0.1,
                what="the server",
            )
    ready = time.monotonic() - restarted
    bearer = topology.bearer(kubeconfig, "c-ace")
    wait(lambda: topology.reviews("c-ace", bearer) == [401], timeout=60, what="kube-api-auth refusing")
    after = time.monotonic() - restarted
    record_property("revocation_after_reconnect_seconds", round(after, 3))
    record_property("revocation_after_reconnect_from_ready_seconds", round(after - ready, 3))
    print(
        f"revocation after the server's return: {after:.3f}s from its start, {after - ready:.3f}s from ready"
    )
    assert (topology.copy_of("c-ace", name) or {}).get("enabled") is False
    wait(lambda: refused(topology.kubectl_with(kubeconfig, "c-ace-cp", "get", "namespaces")), what="refusal")
    assert topology.kubectl("carol", "c-ace", "get", "namespaces").returncode == 0  # the proxy is back


@pytest.mark.requirement("TOK-015")
def test_secrets_are_not_in_kube_api_auth_logs(topology: Topology) -> None:
    logs = list((topology.run_dir / "logs").glob("kube-api-auth-*.log"))
    assert logs
    text = "".join(p.read_text(errors="replace") for p in logs)
    for user in topology.doc["users"].values():
        document = yaml.safe_load(Path(user["kubeconfig"]).read_text())
        for entry in document["users"]:
            secret = entry["user"]["token"].split(":", 1)[1]
            assert secret not in text
            assert base64.b64encode(secret.encode()).decode() not in text

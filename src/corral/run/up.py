"""``corral up`` / ``corral down``: a scenario's whole reference topology on this machine, and its end.

``up`` starts the upstream control plane (cluster ``local``) and the scenario's downstream clusters
with the local provider, the server process(es) on the upstream (TLS from a CA of corral's own,
written to the run folder), then, through the server's v3 API as an operator would: the clusters
(registered with their ``cattle`` credential, as an agent would register them), the users with
their passwords, group principals and role-template bindings, and each user's kubeconfig from
``generateKubeconfig``. Clusters with ``ace`` get their kube-api-auth and load balancer
(`corral.run.ace`); the server's ``generateKubeconfig`` adds their ACE contexts. ``RUN/topology.json``
says where everything is. A crashed run is reaped by the next ``up`` or ``down`` of the same folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import filelock
import yaml

from corral.controlplane import build
from corral.controlplane.clusters import ClusterSet
from corral.controlplane.local import LocalProvider, etcd_of
from corral.controlplane.pki import CertificateAuthority
from corral.controlplane.processes import ProcessGroup, free_port, read_state, reap_stale, tail
from corral.errors import AlreadyExistsError, ConfigError, CorralError, KubeAPIError, NotFoundError
from corral.k8s import KubeClient, KubeConfig
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.kubeconfig import write_private
from corral.model import Scenario
from corral.model.topology import NODE_MODES, Cluster, Node
from corral.run import ace
from corral.run.links import UpLinks, start_links
from corral.run.server_faults import remember_server
from corral.run.topology import TOPOLOGY_FILE, write_topology
from corral.server.cattle import ensure_cattle_credential
from corral.server.crds import crds
from corral.server.registration import condition_true, register_cluster

logger = logging.getLogger(__name__)

__all__ = ["UPSTREAM", "UpError", "down", "up"]

UPSTREAM: Final = "local"
ADMIN: Final = "admin"
READY_LINE: Final = "corral server ready on "
CLUSTERS_DIR: Final = "clusters"
MGMT: Final = "/apis/management.cattle.io/v3"
PROJECT_ID: Final = "field.cattle.io/projectId"
Progress = Callable[[str], None]


class UpError(CorralError):
    """A step of ``corral up`` failed; the message names the step (never a secret)."""


# -- the server's v3 API ---------------------------------------------------------------------------


class _V3:
    """Blocking JSON requests to the server's v3 API over TLS with the run's CA."""

    def __init__(self, url: str, ca_file: Path) -> None:
        self.url = url.rstrip("/")
        self._tls = ssl.create_default_context(cafile=str(ca_file))

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        bare = path.split("?", maxsplit=1)[0]
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - https only
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=60) as answer:  # noqa: S310
                raw = answer.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:512].decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(json.loads(detail).get("message", detail))
            raise UpError(f"{method} {bare}: {e.code}: {detail}") from None
        except OSError as e:
            raise UpError(f"{method} {bare}: cannot reach {self.url}: {e}") from None
        decoded = json.loads(raw) if raw else {}
        return decoded if isinstance(decoded, dict) else {"data": decoded}

    def login(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password, "responseType": "json"}
        return self.call("POST", "/v3-public/localProviders/local?action=login", body)


# -- up ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    lock = filelock.FileLock(str(run_dir / ".corral-up.lock"))
    try:
        lock.acquire(timeout=300)
    except filelock.Timeout as e:
        raise UpError(f"another corral up or down holds {run_dir}") from e
    try:
        yield
    finally:
        lock.release()


def _with_upstream(scenario: Scenario) -> Scenario:
    if any(c.name == UPSTREAM for c in scenario.clusters):
        raise ConfigError(f"{scenario.source}: the cluster name {UPSTREAM!r} is the upstream's; rename it")
    upstream = Cluster(
        name=UPSTREAM,
        region=scenario.server.region,
        nodes=(Node(name=f"{UPSTREAM}-node", roles=("controlplane", "etcd", "worker")),),
    )
    return dataclasses.replace(scenario, clusters=(upstream, *scenario.clusters))


def _reap(run_dir: Path) -> int:
    """Stop what an earlier run of this folder left running: servers first, then the clusters."""
    reaped = len(reap_stale(run_dir))
    clusters = run_dir / CLUSTERS_DIR
    if clusters.is_dir():
        reaped += len(read_state(clusters))
        LocalProvider().down(clusters)
    return reaped


@dataclasses.dataclass(slots=True, kw_only=True)
class _Run:
    """What the steps of one ``up`` share."""

    scenario: Scenario
    run_dir: Path
    clusters: ClusterSet
    group: ProcessGroup
    report: Progress
    ready_timeout: float
    ace: dict[str, ace.ClusterAce] = dataclasses.field(default_factory=dict)
    links: UpLinks | None = None
    """WAN links every connection crosses (``--wan``); None: all on loopback directly."""
    real_nodes: bool = False

    def node_hosts(self) -> list[str]:
        """Where real nodes reach the host (their clusters' API addresses): the server listens there too."""
        if not self.real_nodes:
            return []
        from corral.run.agents import api_host

        return sorted({api_host(self.clusters[c.name]) for c in self.scenario.clusters})


def up(
    scenario_path: Path,
    run_dir: Path,
    *,
    progress: Progress | None = None,
    binaries: build.Built | None = None,
    detached: bool = True,
    ready_timeout_seconds: float = 120.0,
    node_mode: str | None = None,
    wan: bool = False,
) -> dict[str, Any]:
    """Bring the scenario's topology up in ``run_dir``; return the topology document it wrote.

    ``node_mode`` (``virtual`` or ``real``; None: the scenario's) applies to the downstream clusters;
    the upstream's node stays a Node object only. ``wan`` puts toxiproxy links between the
    scenario's regions on every connection (`corral.run.links`).
    """
    report = progress or (lambda line: logger.info("%s", line))
    scenario = Scenario.load(scenario_path)
    if node_mode is not None and node_mode not in NODE_MODES:
        raise ConfigError(f"node mode must be one of {', '.join(NODE_MODES)}, got {node_mode!r}")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        if _reap(run_dir):
            report(f"reaped what an earlier run left in {run_dir}")
        (run_dir / TOPOLOGY_FILE).unlink(missing_ok=True)
        binaries = binaries or build.ensure_built(build.CONTROL_PLANE)
        real_nodes = (node_mode or scenario.node_mode) == "real"
        ace_plans = ace.plan(scenario, run_dir, real_nodes=real_nodes)
        provider = LocalProvider(
            detached=detached,
            binaries=binaries,
            node_mode=node_mode or scenario.node_mode,
            virtual_clusters=frozenset({UPSTREAM}),
            node_webhooks=ace.node_webhooks(ace_plans),
            on_node_addresses=functools.partial(ace.place, ace_plans),
            webhook_version=None,  # no TokenReview version, as Rancher starts the apiserver (v1beta1)
        )
        clusters = provider.up(_with_upstream(scenario), run_dir / CLUSTERS_DIR, progress=report)
        group = ProcessGroup(run_dir, detached=detached)
        try:
            run = _Run(scenario=scenario, run_dir=run_dir, clusters=clusters, group=group, report=report,
                       ready_timeout=ready_timeout_seconds, ace=ace_plans,
                       real_nodes=real_nodes)  # fmt: skip
            if wan:
                run.links = _start_links(run)
            return _up(run)
        except BaseException:
            group.stop()
            provider.down(run_dir / CLUSTERS_DIR)
            raise


def _up(run: _Run) -> dict[str, Any]:
    scenario, run_dir, clusters, report, ready_timeout = (
        run.scenario,
        run.run_dir,
        run.clusters,
        run.report,
        run.ready_timeout,
    )
    started, epoch = time.monotonic(), time.time()
    upstream = clusters[UPSTREAM]
    with upstream.client() as admin:
        for manifest in crds():
            admin.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", manifest)
    secrets_dir = run_dir / "secrets"
    ca_file, cert_file, key_file = _server_pki(run_dir / "server", extra_hosts=run.node_hosts())
    password_file = write_private(secrets_dir / "admin.password", _password().encode())
    trace_file = run_dir / "trace.jsonl"
    trace_file.touch()
    argv = [
        "--kubeconfig", str(upstream.kubeconfig),
        "--tls-cert", str(cert_file),
        "--tls-key", str(key_file),
        "--bootstrap-password-file", str(password_file),
        "--trace", str(trace_file),
        "--tls-ca", str(ca_file),
    ]  # fmt: skip
    urls = _start_servers(run, argv)
    report(f"{len(urls)} server process(es) ready at {', '.join(urls)}")
    api = _V3(urls[0], ca_file)
    login = _retry(
        lambda: api.login(ADMIN, password_file.read_text()), ready_timeout, "the admin's first login"
    )
    admin_token = str(login["token"])
    token_file = write_private(secrets_dir / "admin.token", admin_token.encode())

    cluster_ids = _clusters(run, api, admin_token)
    _start_agents(run, api, admin_token, cluster_ids, ca_file)
    _start_ace(run, cluster_ids, trace_file, epoch)
    _await_ace_seen(run, api, admin_token, cluster_ids)
    users = _users(run, api, admin_token, cluster_ids)
    if run.ace:
        with upstream.client() as upstream_admin:
            ace.wait_copied(
                run.ace,
                upstream=upstream_admin,
                handles=run.clusters.clusters,
                cluster_ids=cluster_ids,
                report=report,
                timeout_seconds=run.ready_timeout,
            )
    document = {
        "server": {
            "url": urls[0],
            "urls": urls,
            "ca_file": str(ca_file),
            "admin": {
                "id": str(login.get("userId", "")),
                "username": ADMIN,
                "password_file": str(password_file),
                "token_file": str(token_file),
            },
            "trace_file": str(trace_file),
            "trace_epoch": epoch,  # Unix time the trace's t of kube-api-auth and test clients count from
        },
        "upstream": {"api_server": upstream.server, "admin_kubeconfig": str(upstream.kubeconfig)},
        "clusters": {
            c.name: {
                "id": cluster_ids[c.name],
                "api_server": clusters[c.name].server,
                "admin_kubeconfig": str(clusters[c.name].kubeconfig),
                **ace.entries(run.ace, c.name),
            }
            for c in scenario.clusters
        },
        "users": users,
        "processes": _processes(run_dir, scenario),
        "kubectl": str(clusters.kubectl) if clusters.kubectl else None,
    }
    if run.links is not None:
        run.links.route_users(scenario, document)
    write_topology(run_dir, document)
    report(f"topology of {scenario.name} up in {time.monotonic() - started:.1f}s: {run_dir / TOPOLOGY_FILE}")
    return document


# -- the Authorized Cluster Endpoint --------------------------------------------------------------------


def _start_ace(run: _Run, cluster_ids: Mapping[str, str], trace_file: Path, epoch: float) -> None:
    """kube-api-auth and load balancers of the ACE clusters; their Cluster objects say ACE is on."""
    if not run.ace:
        return
    ace.attach(run.ace, run.clusters.clusters)
    with run.clusters[UPSTREAM].client() as upstream:  # first: kubeconfig tokens are scoped from now on
        ace.enable(upstream, run.ace, cluster_ids)
    ace.start(
        run.ace,
        handles=run.clusters.clusters,
        group=run.group,
        trace_file=trace_file,
        trace_epoch=epoch,
        report=run.report,
        timeout_seconds=run.ready_timeout,
    )


def _await_ace_seen(run: _Run, api: _V3, token: str, cluster_ids: Mapping[str, str]) -> None:
    """Wait until the server's cache shows each ACE cluster's ``localClusterAuthEndpoint``: the users'
    ``generateKubeconfig`` that follows reads it there (the token's scope and the ACE contexts)."""

    def seen(cluster_id: str) -> dict[str, Any]:
        answer = api.call("GET", f"/v3/clusters/{cluster_id}", token=token)
        endpoint = answer.get("localClusterAuthEndpoint") or (answer.get("spec") or {}).get(
            "localClusterAuthEndpoint"
        )
        if not (isinstance(endpoint, dict) and endpoint.get("enabled") is True):
            raise UpError(f"cluster {cluster_id} does not show localClusterAuthEndpoint enabled yet")
        return answer

    for name in run.ace:
        _retry(
            functools.partial(seen, cluster_ids[name]),
            run.ready_timeout,
            f"the server's view of {name}'s ACE",
        )


# -- agents ------------------------------------------------------------------------------------------


def _start_agents(run: _Run, api: _V3, token: str, cluster_ids: Mapping[str, str], ca_file: Path) -> None:
    """Each downstream cluster's agents by profile (Pods on real nodes, else processes), once it serves.

    A registration token per cluster comes from the v3 API; the agents get it as Rancher mounts it.
    A server without the tunnel endpoints (404) gets no agents: the in-process registration stands.
    """
    from corral.agent.config import ca_checksum
    from corral.agent.fleet import start_cluster_agents

    probe = urllib.request.Request(api.url + "/v3/connect", method="GET")  # noqa: S310 - https only
    try:
        with urllib.request.urlopen(probe, context=api._tls, timeout=10):  # noqa: S310
            pass
    except urllib.error.HTTPError as e:
        if e.code == 404:
            run.report("the server has no /v3/connect: no agents started")
            return
    except OSError:
        return
    checksum = ca_checksum(ca_file.read_text())
    for cluster in run.scenario.clusters:
        cluster_id = cluster_ids[cluster.name]
        body = {"type": "clusterRegistrationToken", "clusterId": cluster_id}
        crt = api.call("POST", "/v3/clusterregistrationtokens", body, token=token)
        if run.real_nodes:
            _deploy_agents(run, cluster, api.url, str(crt["token"]), checksum)
            continue
        agents = start_cluster_agents(
            run.run_dir,
            cluster=cluster_id,
            profile=cluster.agent,
            replicas=cluster.cluster_agents,
            nodes=[n.name for n in cluster.nodes],
            server=run.links.agent_server(run.scenario, cluster.name, api.url) if run.links else api.url,
            token=str(crt["token"]),
            ca_checksum=checksum,
            kubeconfig=run.clusters[cluster.name].kubeconfig,
            etcd=etcd_of(run.clusters.run_dir, cluster.name),
            etcd_nodes=[n.name for n in cluster.nodes if {"etcd", "controlplane"} & set(n.roles)],
        )
        run.report(f"cluster {cluster.name}: {len(agents)} agent process(es) started")


def _start_links(run: _Run) -> UpLinks:
    binary = build.ensure_built(["toxiproxy-server"])["toxiproxy-server"]
    links = start_links(run.group, run.scenario, Path(binary))
    run.report(f"WAN links between {', '.join(run.scenario.regions)} on toxiproxy at {links.api}")
    return links


def _deploy_agents(run: _Run, cluster: Cluster, server_url: str, token: str, checksum: str) -> None:
    """Real nodes: the agents as Rancher deploys them; they reach the server where nodes reach the host."""
    from corral.agent.manifests import AgentDeployment
    from corral.controlplane.images import CORRAL_IMAGE
    from corral.run.agents import api_host, deploy_agents, wait_agents

    handle = run.clusters[cluster.name]
    host, port = api_host(handle), server_url.rsplit(":", 1)[1]
    deployment = AgentDeployment(
        server=f"https://{host}:{port}",
        token=token,
        ca_checksum=checksum,
        nodes=len(cluster.nodes),
        image=CORRAL_IMAGE,
        node_agents=cluster.agent == "rke1",
        api_address=handle.server.removeprefix("https://"),
    )
    deploy_agents(handle, deployment)
    wait_agents(handle, deployment, timeout_seconds=run.ready_timeout)
    run.report(f"cluster {cluster.name}: cattle-cluster-agent ({deployment.replicas}) deployed")


def _password() -> str:
    return secrets.token_urlsafe(18)


def _server_pki(folder: Path, *, extra_hosts: list[str] | None = None) -> tuple[Path, Path, Path]:
    ca = CertificateAuthority.create("corral-server-ca")
    pair = ca.issue_serving("corral-server", hosts=("127.0.0.1", "localhost", *(extra_hosts or ())))
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = folder / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    cert_file = folder / "tls.crt"
    cert_file.write_bytes(pair.cert_pem)
    key_file = write_private(folder / "tls.key", pair.key_pem)  # the CA's key stays in memory only
    return ca_file, cert_file, key_file


def _start_servers(run: _Run, common: list[str]) -> list[str]:
    """``corral server`` per replica, each on its own port; wait for each one's ready line."""
    group, ready_timeout = run.group, run.ready_timeout
    ports = [free_port() for _ in range(run.scenario.server.replicas)]
    urls = [f"https://127.0.0.1:{port}" for port in ports]
    for index, port in enumerate(ports):
        argv = [
            sys.executable, "-m", "corral", "server", *common,
            "--listen", f"127.0.0.1:{port}",
            *(arg for host in run.node_hosts() for arg in ("--also-listen", f"{host}:{port}")),
            "--server-url", urls[0],
            "--data-dir", str(run.run_dir / "server" / str(index)),
        ]  # fmt: skip
        group.start(f"server-{index}", argv, role="server", env={**os.environ, "PYTHONUNBUFFERED": "1"})
        remember_server(run.run_dir, name=f"server-{index}", argv=argv)
    for index in range(len(ports)):
        name = f"server-{index}"
        deadline = time.monotonic() + ready_timeout
        while READY_LINE not in tail(group.log_path(name), 200):
            group.check_alive(name)
            if time.monotonic() > deadline:
                raise UpError(
                    f"{name} not ready after {ready_timeout:g}s; last lines of {group.log_path(name)}:\n"
                    + tail(group.log_path(name))
                )
            time.sleep(0.1)
    return urls


def _retry(step: Callable[[], dict[str, Any]], timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        except UpError as e:
            if time.monotonic() > deadline:
                raise UpError(f"{what}: {e}") from None
            time.sleep(0.5)


def _clusters(run: _Run, api: _V3, token: str) -> dict[str, str]:
    """Create each cluster through the v3 API and register it with its ``cattle`` credential."""
    scenario, clusters, ready_timeout = run.scenario, run.clusters, run.ready_timeout
    ids: dict[str, str] = {}
    upstream_config = clusters[UPSTREAM].admin_config()
    for cluster in scenario.clusters:
        created = api.call("POST", "/v3/clusters", {"type": "cluster", "name": cluster.name}, token=token)
        ids[cluster.name] = cluster_id = str(created["id"])
        handle = clusters[cluster.name]
        with handle.client() as admin:
            sa_token = ensure_cattle_credential(admin)

        address = (
            run.links.dial_address(scenario, cluster.name, handle.server) if run.links else handle.server
        )
        asyncio.run(_register(upstream_config, cluster_id, address, sa_token, handle.ca_pem or b""))
        run.report(f"cluster {cluster.name} is {cluster_id}, registered")
    with clusters[UPSTREAM].client() as upstream:
        for name, cluster_id in ids.items():
            deadline = time.monotonic() + ready_timeout
            while not condition_true(upstream.get(f"{MGMT}/clusters/{cluster_id}"), "Ready"):
                if time.monotonic() > deadline:
                    raise UpError(f"cluster {name} ({cluster_id}) not Ready after {ready_timeout:g}s")
                time.sleep(0.2)
    return ids


async def _register(upstream: KubeConfig, cluster_id: str, server: str, sa_token: str, ca: bytes) -> None:
    async with AsyncKubeClient(upstream) as client:
        address = server.removeprefix("https://")
        await register_cluster(client, cluster_id, address=address, sa_token=sa_token, ca_cert_pem=ca)


def _users(run: _Run, api: _V3, token: str, cluster_ids: Mapping[str, str]) -> dict[str, Any]:
    """Create the users, their groups and bindings, and write their kubeconfigs."""
    scenario, clusters, run_dir = run.scenario, run.clusters, run.run_dir
    out: dict[str, Any] = {}
    projects: dict[tuple[str, str], str] = {}
    with clusters[UPSTREAM].client() as upstream:
        for user in scenario.users:
            password = _password()
            created = api.call(
                "POST",
                "/v3/users",
                {"type": "user", "username": user.name, "name": user.name, "password": password,
                 "enabled": True, "mustChangePassword": False},
                token=token,
            )  # fmt: skip
            user_id = str(created["id"])
            password_file = write_private(run_dir / "secrets" / f"{user.name}.password", password.encode())
            with contextlib.suppress(UpError):  # a server without global roles lets the user log in anyway
                grb = {"type": "globalRoleBinding", "globalRoleId": "user", "userId": user_id}
                api.call("POST", "/v3/globalrolebindings", grb, token=token)
            user_token = str(api.login(user.name, password)["token"])
            if user.groups:
                _set_groups(upstream, user_id, user.groups)
            for binding in user.bindings:
                cluster_id = cluster_ids[binding.cluster]
                who = {"userId": user_id, "roleTemplateId": binding.role}
                if binding.project is None:
                    crtb = {"type": "clusterRoleTemplateBinding", "clusterId": cluster_id, **who}
                    api.call("POST", "/v3/clusterroletemplatebindings", crtb, token=token)
                    continue
                key = (binding.cluster, binding.project)
                if key not in projects:
                    body = {"type": "project", "name": binding.project, "clusterId": cluster_id}
                    projects[key] = str(api.call("POST", "/v3/projects", body, token=token)["id"])
                prtb = {"type": "projectRoleTemplateBinding", "projectId": projects[key], **who}
                api.call("POST", "/v3/projectroletemplatebindings", prtb, token=token)
                _project_namespaces(clusters, binding.cluster, projects[key], binding.namespaces)
            bound = [cluster_ids[b.cluster] for b in user.bindings] or list(cluster_ids.values())
            kubeconfig = _kubeconfig(
                api, user_token, list(dict.fromkeys(bound)), run_dir / "users" / user.name
            )
            out[user.name] = {
                "id": user_id,
                "username": user.name,
                "password_file": str(password_file),
                "kubeconfig": str(kubeconfig),
            }
            run.report(
                f"user {user.name} is {user_id}: {len(user.bindings)} binding(s), kubeconfig {kubeconfig}"
            )
    return out


def _set_groups(upstream: KubeClient, user_id: str, groups: tuple[str, ...]) -> None:
    """Give the user group principals, as an external auth provider's login would."""
    principals = {"local": {"items": [{"metadata": {"name": f"local://{g}"}, "principalType": "group",
                                       "provider": "local", "displayName": g} for g in groups]}}  # fmt: skip
    path = f"{MGMT}/userattributes/{user_id}"
    try:
        upstream.patch(path, {"GroupPrincipals": principals})
    except NotFoundError:
        body = {
            "apiVersion": "management.cattle.io/v3",
            "kind": "UserAttribute",
            "metadata": {"name": user_id},
            "UserName": user_id,
            "GroupPrincipals": principals,
        }
        with contextlib.suppress(AlreadyExistsError):
            upstream.create(f"{MGMT}/userattributes", body)


def _project_namespaces(
    clusters: ClusterSet, cluster: str, project_id: str, namespaces: tuple[str, ...]
) -> None:
    """Create the project's namespaces downstream, annotated with the project as Rancher's UI does."""
    with clusters[cluster].client() as admin:
        for namespace in namespaces:
            body = {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": namespace, "annotations": {PROJECT_ID: project_id}}}  # fmt: skip
            try:
                admin.create("/api/v1/namespaces", body)
            except AlreadyExistsError:
                admin.patch(
                    f"/api/v1/namespaces/{namespace}", {"metadata": {"annotations": {PROJECT_ID: project_id}}}
                )
            except KubeAPIError as e:
                raise UpError(f"namespace {namespace} of project {project_id} in {cluster}: {e}") from None


def _kubeconfig(api: _V3, token: str, cluster_ids: list[str], path: Path) -> Path:
    """The user's kubeconfig: ``generateKubeconfig`` for each cluster, merged into one file."""
    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
    }
    for cluster_id in cluster_ids:
        try:
            answer = api.call("POST", f"/v3/clusters/{cluster_id}?action=generateKubeconfig", token=token)
        except UpError as e:
            logger.warning("no kubeconfig for %s: %s", cluster_id, e)
            continue
        config = yaml.safe_load(answer["config"])
        for key in ("clusters", "users", "contexts"):
            merged[key].extend(config.get(key) or [])
        merged.setdefault("current-context", config.get("current-context"))
    return write_private(path.with_suffix(".kubeconfig"), yaml.safe_dump(merged, sort_keys=False).encode())


def _processes(run_dir: Path, scenario: Scenario) -> list[dict[str, Any]]:
    names = [UPSTREAM, *(c.name for c in scenario.clusters)]
    node_cluster = {node.name: c.name for c in scenario.clusters for node in c.nodes}
    out: list[dict[str, Any]] = []
    for record in read_state(run_dir / CLUSTERS_DIR):
        if record.node:  # a real node's kubelet or containerd
            cluster = node_cluster.get(record.node)
            out.append({"role": record.role, "cluster": cluster, "node": record.node, "pid": record.pid})
            continue
        cluster = next((n for n in names if record.name.endswith(f"-{n}")), None)
        role = record.role
        if cluster == UPSTREAM:
            role, cluster = f"upstream-{role.removeprefix('kube-')}", None
        out.append({"role": role, "cluster": cluster, "node": None, "pid": record.pid})
    for r in read_state(run_dir):  # servers, agents, kube-api-auth (per node), load balancers
        cluster = node_cluster.get(r.node) if r.node else None
        if r.role == "load-balancer":
            cluster = next((n for n in names if r.name.endswith(f"-{n}")), None)
        out.append({"role": r.role, "cluster": cluster, "node": r.node or None, "pid": r.pid})
    return out


# -- down --------------------------------------------------------------------------------------------


def down(run_dir: Path) -> None:
    """Stop the server processes and the clusters ``up`` started in ``run_dir`` (also after a crash)."""
    run_dir = run_dir.resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"no run folder at {str(run_dir)!r}")
    with _locked(run_dir):
        _reap(run_dir)
        (run_dir / TOPOLOGY_FILE).unlink(missing_ok=True)

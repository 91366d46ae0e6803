"""The plan of a load run: which (path, cluster, user) is reached where and how, and the run's bounds.

Built from a topology (``RUN/topology.json`` of `corral up`, or the clusters alone of a
`corral cluster up` folder) and written as JSON for the locust processes, which read it with
`loadtests.kubetraffic.read_plan`. Credentials go to 0600 files beside it, never into the plan:

* direct: the cluster's admin kubeconfig (the scenario's direct path is the admin's);
* proxy: the user's kubeconfig context whose server is ``<server>/k8s/clusters/<id>``, its token;
* ace: the user's contexts whose server is one of the cluster's ACE endpoints, the same token.

With WAN links every URL is the entrance of the link its path crosses (`corral.wan.rewrite`).
The fixtures reads go to (a namespace, ConfigMaps of each response size, a RoleBinding that lets
the topology's users edit there) are seeded with admin credentials by `seed`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from corral.errors import ConfigError
from corral.k8s import AlreadyExistsError, KubeClient, KubeConfig
from corral.k8s.kubeconfig import write_private
from corral.model import ACCESS_PATHS, Scenario
from corral.wan import Endpoints

logger = logging.getLogger(__name__)

NAMESPACE = "corral-load"
RUN_LABEL = "corral-load/run"
LIST_LABEL = "corral-load/list"
OBJECT_OVERHEAD_BYTES = 300
MAX_OBJECT_BYTES = 500_000
MAX_LIST_OBJECTS = 50
"""Naming and sizing of the objects: the same constants as loadtests/kubetraffic.py (a test holds
them equal; the load processes import nothing of corral but its model)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    path: str
    cluster: str
    user: str
    urls: tuple[str, ...]
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "cluster": self.cluster,
            "user": self.user,
            "urls": list(self.urls),
            "ca_file": self.ca_file,
            "cert_file": self.cert_file,
            "key_file": self.key_file,
            "token_file": self.token_file,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What stops a run by itself: wall time, request count, and the scenario's clock compressed."""

    max_seconds: float = 60.0
    max_requests: int = 10_000
    time_scale: float = 1.0
    """Wall seconds per scenario second (0.1 plays a 300 s scenario in 30 s; rates stay per wall second)."""
    users: int = 8
    """Greenlets over all locust processes."""
    request_timeout_seconds: float = 10.0
    retries: int = 2
    max_streams: int = 20

    def __post_init__(self) -> None:
        checks = (
            (self.max_seconds > 0, f"max_seconds must be > 0, got {self.max_seconds:g}"),
            (self.max_requests > 0, f"max_requests must be > 0, got {self.max_requests}"),
            (self.time_scale > 0, f"time_scale must be > 0, got {self.time_scale:g}"),
            (self.users > 0, f"users must be > 0, got {self.users}"),
            (self.request_timeout_seconds > 0, "request_timeout_seconds must be > 0"),
            (self.retries >= 0, f"retries must be >= 0, got {self.retries}"),
            (self.max_streams >= 0, f"max_streams must be >= 0, got {self.max_streams}"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    scenario_file: Path
    run_id: str
    out_dir: Path
    bounds: Bounds
    targets: tuple[Target, ...]
    paths: tuple[str, ...]
    namespace: str = NAMESPACE
    epoch: float = 0.0
    stop_at: float = 0.0
    admin: Mapping[str, KubeConfig] = field(default_factory=dict, repr=False)
    """cluster -> admin credentials on the cluster's own address (seeding and the check after)."""
    user_ids: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    """(path, user, cluster) the workload names but the topology gives the user no way to reach."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario_file": str(self.scenario_file),
            "run_id": self.run_id,
            "epoch": self.epoch,
            "stop_at": self.stop_at,
            "time_scale": self.bounds.time_scale,
            "max_requests": self.bounds.max_requests,
            "users": self.bounds.users,
            "namespace": self.namespace,
            "request_timeout_seconds": self.bounds.request_timeout_seconds,
            "retries": self.bounds.retries,
            "max_streams": self.bounds.max_streams,
            "out_dir": str(self.out_dir),
            "paths": list(self.paths),
            "targets": [t.to_json() for t in self.targets],
        }


def topology_from_cluster_dir(scenario: Scenario, run_dir: Path) -> dict[str, Any]:
    """The clusters of a `corral cluster up` folder as a topology (no server, no users: direct only)."""
    clusters = {}
    for cluster in scenario.clusters:
        path = run_dir / f"kube_config_{cluster.name}.yml"
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no kubeconfig of cluster {cluster.name!r} ({path.name})")
        clusters[cluster.name] = {
            "id": cluster.name,
            "api_server": KubeConfig.load(path).server,
            "admin_kubeconfig": str(path.resolve()),
        }
    return {"clusters": clusters, "users": {}, "processes": []}


def read_topology(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the topology: {e.strerror or e}") from e
    except ValueError as e:
        raise ConfigError(f"{path}: the topology is not JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), dict):
        raise ConfigError(f"{path}: a topology is an object with clusters keyed by the scenario's names")
    return data


def available_paths(topology: Mapping[str, Any]) -> tuple[str, ...]:
    """The access paths a topology can carry: direct always, proxy with a server and users, ACE with
    ACE endpoints and users."""
    paths = ["direct"]
    users = topology.get("users") or {}
    if topology.get("server") and users:
        paths.append("proxy")
    if users and any((c or {}).get("ace_endpoints") for c in topology["clusters"].values()):
        paths.append("ace")
    return tuple(p for p in ACCESS_PATHS if p in paths)


def build_plan(
    scenario: Scenario,
    scenario_file: Path,
    topology: Mapping[str, Any],
    *,
    out_dir: Path,
    run_id: str,
    bounds: Bounds,
    paths: Iterable[str] | None = None,
    endpoints: Endpoints | None = None,
) -> Plan:
    """Targets for every (path, cluster, user) the scenario's workload uses on the chosen paths.

    `paths` defaults to those the topology carries; asking for one it cannot carry is an error
    that says what is missing. Without `endpoints` (no WAN) URLs are the topology's own.
    """
    carried = available_paths(topology)
    wanted = tuple(paths) if paths is not None else carried
    for path in wanted:
        if path not in ACCESS_PATHS:
            raise ConfigError(f"unknown access path {path!r} (paths: {', '.join(ACCESS_PATHS)})")
        if path not in carried:
            need = {"proxy": "a server and users (corral up)", "ace": "users and ACE endpoints"}.get(path, "")
            raise ConfigError(f"the topology cannot carry the {path} path: it needs {need}")
    credentials = out_dir / "credentials"
    credentials.mkdir(parents=True, exist_ok=True, mode=0o700)
    clusters = topology["clusters"]
    users = topology.get("users") or {}
    admin = {name: KubeConfig.load(entry["admin_kubeconfig"]) for name, entry in clusters.items()}
    files = _Files(credentials)
    targets: list[Target] = []
    unreachable: list[str] = []
    used = _used(scenario, wanted)
    for path, cluster, user in sorted(used):
        if cluster not in clusters:
            raise ConfigError(f"the topology has no cluster {cluster!r} of scenario {scenario.name!r}")
        entry = clusters[cluster]
        if path == "direct":
            url = endpoints.apiserver_for_user[(user, cluster)] if endpoints else entry["api_server"]
            targets.append(files.target(path, cluster, user, (url,), admin[cluster], key=f"admin-{cluster}"))
            continue
        if user not in users:
            raise ConfigError(f"the topology has no user {user!r}, whom the {path} workload needs")
        user_config = Path(users[user]["kubeconfig"])
        if path == "proxy":
            server = str(topology["server"]["url"]).rstrip("/")
            base = endpoints.server_for_user[user] if endpoints else server
            url = f"{base.rstrip('/')}/k8s/clusters/{entry['id']}"
            # a `corral up --wan` kubeconfig already names the link's entrance
            wanted_servers = (f"{server}/k8s/clusters/{entry['id']}", url)
            config = _context_for(user_config, lambda s, w=wanted_servers: s in w)
            if config is None:
                unreachable.append(f"proxy {user} -> {cluster}: no context in the user's kubeconfig")
                continue
            targets.append(files.target(path, cluster, user, (url,), config, key=f"{user}-proxy-{cluster}"))
        else:
            ace = [str(u).rstrip("/") for u in entry.get("ace_endpoints") or ()]
            routed = [u.rstrip("/") for u in endpoints.ace_for_user[(user, cluster)]] if endpoints else []
            config = _context_for(user_config, lambda s, a=(*ace, *routed): s in a) if ace else None
            if config is None:
                why = "no ACE context in the user's kubeconfig" if ace else "the cluster has no ACE endpoint"
                unreachable.append(f"ace {user} -> {cluster}: {why}")
                continue
            urls = endpoints.ace_for_user[(user, cluster)] if endpoints else tuple(ace)
            targets.append(
                files.target(path, cluster, user, tuple(urls), config, key=f"{user}-ace-{cluster}")
            )
    if not targets:
        raise ConfigError(
            f"scenario {scenario.name!r} sends no requests on the path(s) {', '.join(wanted)}"
            + (f" ({'; '.join(unreachable)})" if unreachable else "")
        )
    return Plan(
        scenario_file=scenario_file.resolve(),
        run_id=run_id,
        out_dir=out_dir.resolve(),
        bounds=bounds,
        targets=tuple(targets),
        paths=wanted,
        admin=admin,
        user_ids=tuple(str(u["id"]) for name, u in users.items() if "id" in u),
        unreachable=tuple(unreachable),
    )


def _used(scenario: Scenario, paths: tuple[str, ...]) -> set[tuple[str, str, str]]:
    used: set[tuple[str, str, str]] = set()
    for entry in scenario.workload:
        if entry.path not in paths:
            continue
        for user in entry.select_users(scenario.users):
            for cluster in entry.select_clusters(scenario.clusters):
                used.add((entry.path, cluster.name, user.name))
    return used


def _context_for(path: Path, matches: Any) -> KubeConfig | None:
    """The context of a user's kubeconfig whose server `matches` (None: the user has none there)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the user's kubeconfig") from e
    names = [c.get("name") for c in (data or {}).get("contexts") or () if isinstance(c, Mapping)]
    for name in names:
        config = KubeConfig.from_dict(data, base_dir=path.parent, source=str(path), context=name)
        if matches(config.server.rstrip("/")):
            if not config.token:
                raise ConfigError(f"{path}: context {name!r} has no token")
            return config
    return None


class _Files:
    """Credential files, one set per identity, 0600 in the run's credentials folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, key: str, suffix: str, data: bytes | None) -> str | None:
        if data is None:
            return None
        path = self.folder / f"{_safe(key)}.{suffix}"
        write_private(path, data)
        return str(path)

    def target(
        self, path: str, cluster: str, user: str, urls: tuple[str, ...], config: KubeConfig, *, key: str
    ) -> Target:
        for url in urls:
            if urlsplit(url).scheme != "https":
                raise ConfigError(f"{path} endpoint of {cluster!r} is not https: {url!r}")
        if config.exec_plugin is not None:
            raise ConfigError(
                f"the {path} credentials of {cluster!r} use an exec plugin, which load runs lack"
            )
        return Target(
            path=path,
            cluster=cluster,
            user=user,
            urls=urls,
            ca_file=self._file(key, "ca.pem", config.ca_pem),
            cert_file=self._file(key, "cert.pem", config.cert_pem),
            key_file=self._file(key, "key.pem", config.key_pem),
            token_file=self._file(key, "token", config.token.encode() if config.token else None),
        )


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)


# -- seeding -----------------------------------------------------------------------------------------


def fixture_sizes(scenario: Scenario) -> dict[str, set[int]]:
    sizes: dict[str, set[int]] = {"get": set(), "list": set()}
    for entry in scenario.workload:
        for kind in entry.mix:
            if kind.verb in sizes:
                sizes[kind.verb].add(kind.response_bytes)
    return sizes


def list_fixture_sizes(response_bytes: int) -> list[int]:
    count = min(MAX_LIST_OBJECTS, max(1, math.ceil(response_bytes / MAX_OBJECT_BYTES)))
    each = max(0, min(MAX_OBJECT_BYTES, response_bytes // count - OBJECT_OVERHEAD_BYTES))
    return [each] * count


def seed(
    client: KubeClient, scenario: Scenario, *, namespace: str = NAMESPACE, user_ids: Iterable[str] = ()
) -> int:
    """Create the namespace, the read fixtures and the users' RoleBinding on one cluster (idempotent);
    returns how many objects were created."""
    created = 0

    def ensure(collection: str, obj: dict[str, Any]) -> None:
        nonlocal created
        try:
            client.create(collection, obj)
            created += 1
        except AlreadyExistsError:
            pass

    ensure("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    sizes = fixture_sizes(scenario)
    for size in sorted(sizes["get"]):
        pad = max(0, min(MAX_OBJECT_BYTES, size - OBJECT_OVERHEAD_BYTES))
        ensure(cms, _configmap(f"corral-load-get-{size}", pad, {}))
    for size in sorted(sizes["list"]):
        for index, pad in enumerate(list_fixture_sizes(size)):
            ensure(cms, _configmap(f"corral-load-list-{size}-{index}", pad, {LIST_LABEL: str(size)}))
    subjects = [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": uid} for uid in sorted(user_ids)
    ]
    if subjects:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "corral-load-edit", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": subjects,
        }
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
        client.apply(path, binding, force=True)
    return created


def _configmap(name: str, pad: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"pad": "x" * pad},
    }


def run_id_for(scenario: Scenario, epoch: float) -> str:
    """A short, DNS-safe id of one run (object names start with it)."""
    return "r" + hashlib.sha256(f"{scenario.name}/{epoch}".encode()).hexdigest()[:8]

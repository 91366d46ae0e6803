"""The ``reference`` target: corral's own topology of a scenario, as ``corral up`` describes it.

``RUN/topology.json`` says where everything is (the server's URL, CA and admin token file, each
cluster's id and admin kubeconfig, each user's kubeconfig and password file, the processes); this
module turns it into a `Target`. Bringing a topology up is ``corral up``'s job: when this build has
none, the target is unavailable and its tests are deselected with that reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from conformance.targets.base import (
    Capability,
    ClusterAccess,
    ServerAccess,
    Target,
    TargetUnavailableError,
    UserAccess,
)
from corral.errors import ConfigError
from corral.model import Scenario

logger = logging.getLogger(__name__)

TOPOLOGY_FILE = "topology.json"
UP_MODULE = "corral.run.up"

#: What any reference topology offers, whatever its scenario.
ALWAYS = frozenset({Capability.WRITE, Capability.CORRAL, Capability.TRACE, Capability.STOP_SERVER})


def expected_capabilities(scenario: Scenario) -> frozenset[Capability]:
    """What ``corral up`` of ``scenario`` will offer, known before it runs (to deselect at collection)."""
    extra = {Capability.AGENT_FAULTS}
    if any(cluster.agent == "rke1" for cluster in scenario.clusters):
        extra.add(Capability.NODE_AGENTS)
    if any(cluster.ace for cluster in scenario.clusters):
        extra.add(Capability.ACE)
    return ALWAYS | extra


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported (a missing parent package counts as missing)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def unavailable_reason() -> str:
    """Why ``corral up`` cannot bring a reference topology up in this build ("" when it can)."""
    if not has_module(UP_MODULE):
        return "the reference target needs `corral up` (corral.run.up), which this build does not have"
    return ""


def read_topology(run_dir: Path) -> dict[str, Any]:
    """``RUN/topology.json`` with the keys the suites use checked; `ConfigError` naming what is wrong."""
    path = run_dir / TOPOLOGY_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the topology (did `corral up` run there?): {e.strerror}"
        ) from e
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from e
    _need(document, path, "server", dict)
    for key in ("url", "ca_file"):
        _need(document["server"], path, f"server.{key}", str, key)
    _need(document["server"], path, "server.admin", dict, "admin")
    _need(document["server"]["admin"], path, "server.admin.token_file", str, "token_file")
    for section in ("clusters", "users"):
        _need(document, path, section, dict)
    for name, cluster in document["clusters"].items():
        for key in ("id", "admin_kubeconfig"):
            _need(cluster, path, f"clusters.{name}.{key}", str, key)
    for name, user in document["users"].items():
        for key in ("id", "username", "kubeconfig"):
            _need(user, path, f"users.{name}.{key}", str, key)
    _need(document, path, "processes", list)
    return dict(document)


def _need(holder: Any, path: Path, where: str, kind: type, key: str | None = None) -> None:
    key = key or where
    if not isinstance(holder, dict) or not isinstance(holder.get(key), kind):
        raise ConfigError(f"{path}: {where} must be a {kind.__name__}")


def reference_target(run_dir: Path) -> Target:
    """The target described by ``RUN/topology.json`` (written by ``corral up``)."""
    document = read_topology(run_dir)
    server = document["server"]
    token = _read_secret(Path(server["admin"]["token_file"]))
    clusters = {
        name: ClusterAccess(
            name=name,
            id=entry["id"],
            admin_kubeconfig=Path(entry["admin_kubeconfig"]),
            api_server=entry.get("api_server", ""),
            ace_endpoints=tuple(entry.get("ace_endpoints", ())),
            kube_api_auth=tuple(entry.get("kube_api_auth", ())),
        )
        for name, entry in document["clusters"].items()
    }
    users = {name: _user(name, entry) for name, entry in document["users"].items()}
    roles = {str(p.get("role")) for p in document["processes"] if isinstance(p, dict)}
    capabilities = set(ALWAYS)
    if "cluster-agent" in roles:
        capabilities.add(Capability.AGENT_FAULTS)
    if "node-agent" in roles:
        capabilities.add(Capability.NODE_AGENTS)
    if any(c.ace_endpoints for c in clusters.values()):
        capabilities.add(Capability.ACE)
    if "server" not in roles:
        capabilities.discard(Capability.STOP_SERVER)
    return Target(
        name="reference",
        server=ServerAccess(url=server["url"], ca_file=server["ca_file"], admin_token=token),
        clusters=clusters,
        users=users,
        capabilities=frozenset(capabilities),
        run_dir=run_dir,
    )


def _user(name: str, entry: dict[str, Any]) -> UserAccess:
    kubeconfig = Path(entry["kubeconfig"])
    password_file = entry.get("password_file")
    return UserAccess(
        name=name,
        id=entry["id"],
        username=entry["username"],
        token=kubeconfig_token(kubeconfig),
        password=_read_secret(Path(password_file)) if password_file else "",
        kubeconfig=kubeconfig,
    )


def kubeconfig_token(path: Path) -> str:
    """The token of a generated kubeconfig's (first) user; `ConfigError` when it has none."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the kubeconfig: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML: {type(e).__name__}") from None
    for entry in (document or {}).get("users") or []:
        token = ((entry or {}).get("user") or {}).get("token")
        if token:
            return str(token)
    raise ConfigError(f"{path}: no user with a token")


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e


def bring_up(scenario_path: Path, run_dir: Path, *, binaries: Any) -> Target:
    """``corral up`` of a scenario into ``run_dir``, as a target; `TargetUnavailableError` without it."""
    reason = unavailable_reason()
    if reason:
        raise TargetUnavailableError(reason)
    module = importlib.import_module(UP_MODULE)
    module.up(scenario_path, run_dir, binaries=binaries, detached=False)
    return reference_target(run_dir)


def tear_down(run_dir: Path) -> None:
    importlib.import_module(UP_MODULE).down(run_dir)

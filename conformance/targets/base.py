"""What a conformance suite needs from the system under test, whatever it is.

A target gives the server (URL, CA, an admin token and a v3 client), each downstream cluster (id, admin
kubeconfig), users with tokens and kubeconfigs, ways to make users, tokens and bindings through the v3
API (tracked and removed afterwards), and its capabilities. Tests that need a capability the target
lacks are deselected with the reason; nothing that cannot hold on a target is passed silently.
"""

from __future__ import annotations

import enum
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.targets.v3 import Observer, V3Client, V3Error

logger = logging.getLogger(__name__)

PASSWORD_ALPHABET = string.ascii_letters + string.digits


class Capability(enum.StrEnum):
    """What a test may need of a target beyond the v3 API and the proxy."""

    WRITE = "write"
    """Users, tokens, bindings and objects may be created (not ``--corral-read-only``)."""
    STOP_SERVER = "stop-server"
    """Server processes can be stopped and started by the suite."""
    NODE_AGENTS = "node-agents"
    """Some cluster has node agents (rke1 profile; Rancher before 2.12)."""
    AGENT_FAULTS = "agent-faults"
    """Cluster and node agents can be killed, frozen, stopped and restarted by the suite."""
    ACE = "ace"
    """Some cluster has an Authorized Cluster Endpoint."""
    TRACE = "trace"
    """The system writes a trace of the run (corral's reference topology)."""
    CORRAL = "corral"
    """corral's own tools and files are there (topology.json, corral doctor, corral fault)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerAccess:
    url: str
    ca_file: str | None
    admin_token: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterAccess:
    """A downstream cluster: its name in the scenario (or Rancher's display name) and the server's id."""

    name: str
    id: str
    admin_kubeconfig: Path
    api_server: str = ""
    ace_endpoints: tuple[str, ...] = ()
    kube_api_auth: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UserAccess:
    name: str
    id: str
    username: str
    token: str = field(repr=False)
    password: str = field(default="", repr=False)
    kubeconfig: Path | None = None


class TargetUnavailableError(Exception):
    """The target cannot run here (no container engine, no corral up); tests are deselected with it."""


@dataclass(slots=True, kw_only=True)
class Target:
    """A system under test that speaks the v3 API: corral's reference topology or a real Rancher."""

    name: str
    server: ServerAccess
    clusters: dict[str, ClusterAccess]
    users: dict[str, UserAccess] = field(default_factory=dict)
    capabilities: frozenset[Capability] = frozenset()
    rancher_version: str | None = None
    """The Rancher version it behaves as; None for corral (which follows current Rancher)."""
    run_dir: Path | None = None
    observer: Observer | None = None
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list, repr=False)

    @property
    def read_only(self) -> bool:
        return Capability.WRITE not in self.capabilities

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def v3(self, token: str | None = None) -> V3Client:
        """A v3 client as admin (or with ``token``); read-only when the target is."""
        return V3Client(
            url=self.server.url,
            token=token or self.server.admin_token,
            ca_file=self.server.ca_file,
            read_only=self.read_only,
            observer=self.observer,
        )

    def cluster(self, name_or_id: str) -> ClusterAccess:
        for item in self.clusters.values():
            if name_or_id in (item.name, item.id):
                return item
        raise KeyError(f"no cluster {name_or_id!r} on target {self.name} (known: {', '.join(self.clusters)})")

    # -- things made for a test, undone afterwards ----------------------------------------------

    def make_user(self, prefix: str = "conf") -> UserAccess:
        """A new local user with a login token; deleted (with its tokens) at cleanup."""
        api = self.v3()
        username = f"{prefix}-{secrets.token_hex(4)}"
        password = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(24))
        created = api.create_user(username, password)
        user_id = str(created["id"])
        self._remember(f"user {user_id}", lambda: api.delete_user(user_id))
        token = api.login(username, password)
        return UserAccess(name=username, id=user_id, username=username, token=token, password=password)

    def bind_cluster(
        self, cluster: str, role: str, *, user: UserAccess | None = None, group: str = ""
    ) -> str:
        api = self.v3()
        binding = api.bind_cluster(
            self.cluster(cluster).id, role, user_id=user.id if user else "", group_principal_id=group
        )
        self._remember(f"binding {binding}", lambda: api.delete("clusterroletemplatebindings", binding))
        return binding

    def make_project(self, cluster: str, name: str) -> str:
        api = self.v3()
        project = api.create_project(self.cluster(cluster).id, name)
        self._remember(f"project {project}", lambda: api.delete("projects", project))
        return project

    def bind_project(
        self, project_id: str, role: str, *, user: UserAccess | None = None, group: str = ""
    ) -> str:
        api = self.v3()
        binding = api.bind_project(
            project_id, role, user_id=user.id if user else "", group_principal_id=group
        )
        self._remember(f"binding {binding}", lambda: api.delete("projectroletemplatebindings", binding))
        return binding

    def kubeconfig_for(self, user: UserAccess, cluster: str, folder: Path) -> Path:
        """``generateKubeconfig`` as the user, written 0600 into ``folder``."""
        text = self.v3(user.token).generate_kubeconfig(self.cluster(cluster).id)
        path = folder / f"kubeconfig-{user.name}-{self.cluster(cluster).name}.yaml"
        path.touch(mode=0o600)
        path.write_text(text, encoding="utf-8")
        return path

    def _remember(self, what: str, undo: Callable[[], None]) -> None:
        self._undo.append((what, undo))

    def cleanup(self) -> list[str]:
        """Undo what was made, newest first; the list of what could not be undone (and why)."""
        failed = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except V3Error as e:
                if e.status != 404:
                    failed.append(f"{what}: {e}")
        return failed

    def describe(self) -> dict[str, Any]:
        """What the report's environment section shows (no secrets)."""
        return {
            "target": self.name,
            "server": self.server.url,
            "rancher_version": self.rancher_version or "corral (current Rancher behaviour)",
            "clusters": ", ".join(f"{c.name} ({c.id})" for c in self.clusters.values()),
            "capabilities": ", ".join(sorted(self.capabilities)),
        }

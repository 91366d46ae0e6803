"""Who may see and change what in the v3 API, from the cached role-template bindings (Rancher's model).

Admins (bound to the ``admin`` GlobalRole) may do everything. Anyone else sees the clusters they are
bound to by a ClusterRoleTemplateBinding (as user or through a group) or hold a project in, the
projects of clusters they own or are bound to, and may change bindings only where they are owners.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from corral.auth.identity import UserInfo
from corral.server.state import JSON, ServerState

logger = logging.getLogger(__name__)

__all__ = ["Access"]

CLUSTER_OWNER: Final = "cluster-owner"
PROJECT_OWNER: Final = "project-owner"


class Access:
    """Decisions for one server state; every method reads only the caches."""

    #: Remembered visibilities; emptied when it grows past this.
    MEMO_LIMIT: Final = 20_000

    def __init__(self, state: ServerState) -> None:
        self.state = state
        # (user, groups) -> visible cluster ids, valid while the bindings' caches are unchanged
        self._visible: dict[tuple[str, tuple[str, ...]], frozenset[str] | None] = {}
        self._visible_at: tuple[int, int, int] = (-1, -1, -1)

    def is_admin(self, user: UserInfo) -> bool:
        return self.state.is_admin(user.name)

    def _principals(self, user: UserInfo) -> set[str]:
        groups = set(user.groups)
        return groups | {f"local://{g}" for g in groups}

    def _bindings(self, informer: Any, user: UserInfo) -> list[JSON]:
        found = {id(b): b for b in informer.by_index("user", user.name)}
        for group in self._principals(user):
            for binding in informer.by_index("group", group):
                found[id(binding)] = binding
        return list(found.values())

    def cluster_bindings(self, user: UserInfo) -> list[JSON]:
        return self._bindings(self.state.crtbs, user)

    def project_bindings(self, user: UserInfo) -> list[JSON]:
        return self._bindings(self.state.prtbs, user)

    def cluster_roles(self, user: UserInfo, cluster: str) -> set[str]:
        return {
            str(b.get("roleTemplateName"))
            for b in self.cluster_bindings(user)
            if b.get("clusterName") == cluster
        }

    def project_roles(self, user: UserInfo, project_id: str) -> set[str]:
        return {
            str(b.get("roleTemplateName"))
            for b in self.project_bindings(user)
            if b.get("projectName") == project_id
        }

    def visible_clusters(self, user: UserInfo) -> frozenset[str] | None:
        """Ids of the clusters the user may see; None means all (an admin).

        Remembered per user and groups until a binding (global, cluster or project) changes: the
        proxy asks this for every request.
        """
        state = self.state
        now = (state.globalrolebindings.generation, state.crtbs.generation, state.prtbs.generation)
        if now != self._visible_at:
            self._visible.clear()
            self._visible_at = now
        key = (user.name, user.groups)
        if key in self._visible:
            return self._visible[key]
        visible = self._visible_clusters(user)
        if len(self._visible) >= self.MEMO_LIMIT:
            self._visible.clear()
        self._visible[key] = visible
        return visible

    def _visible_clusters(self, user: UserInfo) -> frozenset[str] | None:
        if self.is_admin(user):
            return None
        ids = {str(b.get("clusterName")) for b in self.cluster_bindings(user)}
        ids |= {str(b.get("projectName", "")).split(":", 1)[0] for b in self.project_bindings(user)}
        return frozenset(i for i in ids if i)

    def can_see_cluster(self, user: UserInfo, cluster: str) -> bool:
        visible = self.visible_clusters(user)
        return visible is None or cluster in visible

    def owns_cluster(self, user: UserInfo, cluster: str) -> bool:
        return self.is_admin(user) or CLUSTER_OWNER in self.cluster_roles(user, cluster)

    def member_of_cluster(self, user: UserInfo, cluster: str) -> bool:
        return self.is_admin(user) or bool(self.cluster_roles(user, cluster))

    def can_see_project(self, user: UserInfo, project_id: str) -> bool:
        cluster = project_id.split(":", 1)[0]
        if self.owns_cluster(user, cluster):
            return True
        return bool(self.project_roles(user, project_id))

    def owns_project(self, user: UserInfo, project_id: str) -> bool:
        cluster = project_id.split(":", 1)[0]
        return self.owns_cluster(user, cluster) or PROJECT_OWNER in self.project_roles(user, project_id)

    def filter_clusters(self, user: UserInfo, clusters: Iterable[JSON]) -> list[JSON]:
        visible = self.visible_clusters(user)
        return [c for c in clusters if visible is None or c["metadata"]["name"] in visible]

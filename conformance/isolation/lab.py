"""A generated RBAC world made real on a target, and its decisions compared path by path.

The lab holds a pool of users made through the v3 API (with groups where corral's upstream can give
them some), their generated kubeconfigs and a few namespaces per downstream cluster. For one world it
makes the projects and role-template bindings through the v3 API, places namespaces in projects, waits
until each binding shows downstream, then asks every decision through the proxy (SelfSubjectAccessReview
with the user's kubeconfig, a real request where one is cheap, ``kubectl auth can-i`` once per world)
and, when asked, through ACE, and compares each answer with Kubernetes' own: a SubjectAccessReview
with admin credentials for the user's id and groups. Answers are read between two reviews that agree,
so a binding still settling is asked again, until a deadline. Everything made is removed afterwards.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.isolation.worlds import Decision, Resource, Shape, World
from conformance.targets import Target, UserAccess, V3Error
from corral.k8s import ForbiddenError, KubeAPIError, KubeClient, KubeConfig, NotFoundError

logger = logging.getLogger(__name__)

PROJECT_ID = "field.cattle.io/projectId"
BASE_GROUPS = ("system:authenticated", "system:cattle:authenticated")
SETTLE_SECONDS = 60.0
"""How long a world's bindings (and their removal) may take to show downstream."""
AGREE_SECONDS = 10.0
"""How long, once they show downstream, the paths' answers may take to agree with Kubernetes' own (the
server's caches learn of bindings through watches); a decision still differing then is a failure."""
POLL_SECONDS = 0.2
ABSENT = "corral-isolation-absent"
"""The name of an object no world makes: a real GET or DELETE of it is 404 when allowed, 403 when not."""
WITNESS_USER = "corral-isolation-witness"

# For each built-in template, one decision it certainly allows: cluster-wide, or in a project namespace.
_CLUSTER_WITNESS = {
    "cluster-owner": ("delete", Resource("", "nodes", namespaced=False)),
    "cluster-member": ("list", Resource("", "nodes", namespaced=False)),
}
_PROJECT_WITNESS = {
    "project-owner": ("create", Resource("rbac.authorization.k8s.io", "rolebindings", namespaced=True)),
    "project-member": ("create", Resource("", "configmaps", namespaced=True)),
    "read-only": ("list", Resource("", "pods", namespaced=True)),
}
_PROMOTED_WITNESS = ("list", Resource("", "persistentvolumes", namespaced=False))
"""A project template's promoted rules: what a binding of a project without namespaces still gives."""


@dataclass(slots=True)
class Tally:
    """What a run checked: worlds, decisions per path, real requests and kubectl questions."""

    worlds: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {"proxy": 0, "ace": 0})
    real_requests: int = 0
    kubectl: int = 0
    refused_by_proxy: int = 0
    retries: int = 0

    @property
    def total(self) -> int:
        return sum(self.decisions.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    user: str
    groups: tuple[str, ...]


@dataclass(slots=True, kw_only=True)
class PoolUser:
    access: UserAccess
    groups: tuple[str, ...]
    kubeconfigs: dict[str, Path] = field(default_factory=dict)

    @property
    def identity(self) -> Identity:
        return Identity(user=self.access.id, groups=(*self.groups, *BASE_GROUPS))


class WorldMismatchError(AssertionError):
    """A world's decisions differ between a path and Kubernetes' own answer (a test failure)."""


class Lab:
    """The pool and the namespaces on one target; `check` makes a world, compares, and removes it."""

    def __init__(
        self, *, target: Target, folder: Path, kubectl: Path, users: int = 3, namespaces: int = 3
    ) -> None:
        self.target = target
        self.folder = folder
        self.kubectl = kubectl
        self.suffix = secrets.token_hex(3)
        self.groups = (f"iso-red-{self.suffix}", f"iso-blue-{self.suffix}")
        self.namespaces = tuple(f"iso-{self.suffix}-{i}" for i in range(namespaces))
        self.user_count = users
        self.pool: list[PoolUser] = []
        self.admins: dict[str, KubeClient] = {}
        self.clients: dict[tuple[int, str, str], KubeClient] = {}
        self._stack = ExitStack()

    # -- the pool, once per module --------------------------------------------------------------

    def open(self) -> Shape:
        """Make the pool, give it groups where the target can, make the namespaces; the worlds' shape."""
        upstream = self._upstream()
        memberships = [(self.groups[0],), self.groups, ()] if upstream else [(), (), ()]
        memberships = (memberships * self.user_count)[: self.user_count]
        for index in range(self.user_count):
            user = PoolUser(access=self.target.make_user(f"iso{index}"), groups=memberships[index])
            if user.groups and upstream is not None:
                items = [{"metadata": {"name": f"local://{g}"}} for g in user.groups]
                upstream.patch(
                    f"/apis/management.cattle.io/v3/userattributes/{user.access.id}",
                    {"GroupPrincipals": {"local": {"items": items}}},
                )
            self.pool.append(user)
        for cluster in self.target.clusters.values():
            admin = self._stack.enter_context(KubeClient(KubeConfig.load(cluster.admin_kubeconfig)))
            self.admins[cluster.name] = admin
            for namespace in self.namespaces:
                admin.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        self._kubeconfigs()
        return Shape(
            clusters=tuple(self.target.clusters),
            users=self.user_count,
            groups=self.groups,
            namespaces=len(self.namespaces),
            memberships=tuple(u.groups for u in self.pool),
        )

    def _kubeconfigs(self) -> None:
        """Each pool user's generated kubeconfig for each cluster. Only a member may generate one, so
        each user is a cluster-member for that moment; worlds start once no such binding shows."""
        api = self.target.v3()
        witness = _CLUSTER_WITNESS["cluster-member"]
        for cluster in self.target.clusters.values():
            for user in self.pool:
                binding = api.bind_cluster(cluster.id, "cluster-member", user_id=user.access.id)
                try:
                    self._wait(
                        lambda u=user, c=cluster.name: (
                            [] if self._can_generate(u, c) else [(u.identity, *witness, "")]
                        ),
                        "a cluster-member binding that never let its user generate a kubeconfig",
                        cluster.name,
                    )
                finally:
                    api.delete("clusterroletemplatebindings", binding)
            admin = self.admins[cluster.name]
            self._wait(
                lambda a=admin: [
                    (u.identity, *witness, "") for u in self.pool if self._sar(a, u.identity, *witness, "")
                ],
                "pool users still cluster members",
                cluster.name,
            )

    def _can_generate(self, user: PoolUser, cluster: str) -> bool:
        try:
            user.kubeconfigs[cluster] = self.target.kubeconfig_for(user.access, cluster, self.folder)
        except V3Error as e:
            if e.status in (403, 404):
                return False
            raise
        return True

    def close(self) -> None:
        for admin in self.admins.values():
            for namespace in self.namespaces:
                try:
                    admin.delete(f"/api/v1/namespaces/{namespace}")
                except KubeAPIError as e:
                    logger.warning("could not delete namespace %s: %s", namespace, e)
        self._stack.close()

    def _upstream(self) -> KubeClient | None:
        """corral's upstream, where user attributes (and so local users' groups) live; None elsewhere."""
        if self.target.run_dir is None:
            return None
        path = self.target.run_dir / "topology.json"
        if not path.exists():
            return None
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        kubeconfig = (document.get("upstream") or {}).get("admin_kubeconfig")
        if not kubeconfig:
            return None
        return self._stack.enter_context(KubeClient(KubeConfig.load(kubeconfig)))

    def ace_contexts(self, cluster: str) -> list[str]:
        """The ACE contexts (``<cluster>-<node>``, ``<cluster>-fqdn``) of the pool's kubeconfig for it."""
        document = yaml.safe_load(self.pool[0].kubeconfigs[cluster].read_text(encoding="utf-8"))
        current = document.get("current-context")
        return [c["name"] for c in document.get("contexts") or [] if c["name"] != current]

    # -- one world --------------------------------------------------------------------------------

    def check(self, world: World, tally: Tally, *, paths: tuple[str, ...] = ("proxy",)) -> None:
        """Make the world, compare its decisions on ``paths`` with Kubernetes', remove it; raises
        `WorldMismatchError` naming every decision that differs (or a binding that never showed)."""
        tally.worlds += 1
        admin = self.admins[world.cluster]
        with self._made(world) as witnesses:
            self._wait(
                lambda: [w for w in witnesses if not self._sar(admin, *w)],
                "bindings that never took effect downstream",
                world.cluster,
            )
            problems = self._compare(world, tally, paths)
            if problems:
                raise WorldMismatchError("\n".join(problems))
        # Removal shows downstream too: no witness of a removed binding is allowed any more.
        self._wait(
            lambda: [w for w in witnesses if self._sar(admin, *w)],
            "bindings still in effect after their removal",
            world.cluster,
        )

    @contextmanager
    def _made(self, world: World) -> Iterator[list[tuple[Identity, str, Resource, str]]]:
        """The world's projects, placements and bindings; yields each binding's witness decision."""
        cluster = self.target.cluster(world.cluster)
        admin = self.admins[world.cluster]
        api = self.target.v3()
        undo: list[Callable[[], object]] = []
        witnesses: list[tuple[Identity, str, Resource, str]] = []
        try:
            projects = []
            for index in range(world.projects):
                project = api.create_project(cluster.id, f"iso-{self.suffix}-p{index}-{secrets.token_hex(2)}")
                undo.append(lambda p=project: api.delete("projects", p))
                projects.append(project)
            for ns_index, project_index in enumerate(world.placement):
                if project_index is None:
                    continue
                full = projects[project_index]
                path = f"/api/v1/namespaces/{self.namespaces[ns_index]}"
                admin.patch(
                    path,
                    {
                        "metadata": {
                            "annotations": {PROJECT_ID: full},
                            "labels": {PROJECT_ID: full.split(":")[-1]},
                        }
                    },
                )
                undo.append(
                    lambda p=path: admin.patch(
                        p, {"metadata": {"annotations": {PROJECT_ID: None}, "labels": {PROJECT_ID: None}}}
                    )
                )
            for binding in world.bindings:
                subject = binding.subject
                user = self.pool[subject.index].access if subject.kind == "user" else None
                group = f"local://{self.groups[subject.index]}" if subject.kind == "group" else ""
                identity = (
                    self.pool[subject.index].identity
                    if subject.kind == "user"
                    else Identity(user=WITNESS_USER, groups=(self.groups[subject.index],))
                )
                if binding.project is None:
                    made = api.bind_cluster(cluster.id, binding.role, user_id=user.id if user else "",
                                            group_principal_id=group)  # fmt: skip
                    undo.append(lambda b=made: api.delete("clusterroletemplatebindings", b))
                    verb, resource = _CLUSTER_WITNESS[binding.role]
                    witnesses.append((identity, verb, resource, ""))
                    continue
                made = api.bind_project(
                    projects[binding.project],
                    binding.role,
                    user_id=user.id if user else "",
                    group_principal_id=group,
                )
                undo.append(lambda b=made: api.delete("projectroletemplatebindings", b))
                held = world.namespaces_of(binding.project)
                if held:
                    verb, resource = _PROJECT_WITNESS[binding.role]
                    witnesses.append((identity, verb, resource, self.namespaces[held[0]]))
                else:
                    witnesses.append((identity, *_PROMOTED_WITNESS, ""))
            yield witnesses
        finally:
            # Namespaces leave their projects first: a project removed with namespaces may take them along.
            failures = []
            for step in reversed(undo):
                try:
                    step()
                except Exception as e:  # every step is tried; the first failures are reported
                    failures.append(f"{type(e).__name__}: {e}")
            if failures:
                raise RuntimeError("could not remove a world: " + "; ".join(failures[:3]))

    def _wait(
        self, pending: Callable[[], list[tuple[Identity, str, Resource, str]]], what: str, cluster: str
    ) -> None:
        deadline = time.monotonic() + SETTLE_SECONDS
        left = pending()
        while left and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            left = pending()
        if left:
            named = "; ".join(f"{i.user} {v} {r} {ns or '(cluster)'}" for i, v, r, ns in left)
            raise WorldMismatchError(f"{what} within {SETTLE_SECONDS:.0f} s (cluster {cluster}): {named}")

    # -- comparisons ------------------------------------------------------------------------------

    def _compare(self, world: World, tally: Tally, paths: tuple[str, ...]) -> list[str]:
        """Ask every decision on every path until each agrees with Kubernetes or the deadline passes."""
        admin = self.admins[world.cluster]
        pending = [(path, d) for path in paths for d in world.decisions]
        deadline = time.monotonic() + AGREE_SECONDS
        first = True
        problems: list[str] = []
        while pending:
            problems = []
            still = []
            for path, decision in pending:
                problem = self._one(
                    admin, world, path, decision, tally, with_kubectl=first and path == "proxy"
                )
                first = False
                if problem:
                    problems.append(problem)
                    still.append((path, decision))
                else:
                    tally.decisions[path] += 1
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            tally.retries += 1
            time.sleep(POLL_SECONDS)
        return problems

    def _one(
        self,
        admin: KubeClient,
        world: World,
        path: str,
        decision: Decision,
        tally: Tally,
        *,
        with_kubectl: bool,
    ) -> str:
        user = self.pool[decision.user]
        namespace = self.namespaces[decision.namespace] if decision.namespace is not None else ""
        resource = decision.resource
        before = self._sar(admin, user.identity, decision.verb, resource, namespace)
        answers = {f"{path} review": self._review(world.cluster, path, decision, namespace, tally)}
        if path == "proxy":
            real = self._real(world.cluster, decision, namespace, tally)
            if real is not None:
                answers["proxy request"] = real
            if with_kubectl:
                answers["kubectl auth can-i"] = self._kubectl(world.cluster, decision, namespace, tally)
        after = self._sar(admin, user.identity, decision.verb, resource, namespace)
        if before != after:
            return f"{decision.label()}: Kubernetes' own answer changed while asking"
        wrong = {k: v for k, v in answers.items() if v != before}
        if not wrong:
            return ""
        said = ", ".join(f"{k} {'allowed' if v else 'denied'}" for k, v in wrong.items())
        return f"{decision.label()}: Kubernetes {'allows' if before else 'denies'}, but {said}"

    def _sar(
        self, admin: KubeClient, identity: Identity, verb: str, resource: Resource, namespace: str
    ) -> bool:
        return admin.allows(
            identity.user, identity.groups, verb, resource.name, namespace=namespace, group=resource.group
        )

    def _client(self, user: int, cluster: str, context: str) -> KubeClient:
        key = (user, cluster, context)
        if key not in self.clients:
            config = KubeConfig.load(self.pool[user].kubeconfigs[cluster], context=context or None)
            self.clients[key] = self._stack.enter_context(KubeClient(config))
        return self.clients[key]

    def _review(self, cluster: str, path: str, decision: Decision, namespace: str, tally: Tally) -> bool:
        context = "" if path == "proxy" else self.ace_contexts(cluster)[0]
        client = self._client(decision.user, cluster, context)
        try:
            return client.can_i(
                decision.verb, decision.resource.name, namespace=namespace, group=decision.resource.group
            )
        except ForbiddenError:
            # The proxy refuses a user with no membership in the cluster before asking it: a denial.
            tally.refused_by_proxy += 1
            return False

    def _real(self, cluster: str, decision: Decision, namespace: str, tally: Tally) -> bool | None:
        """A real request through the proxy where it changes nothing: get, list and delete of an object
        no one made (allowed: 404 or 200; refused: 403); None for the other verbs."""
        resource = decision.resource
        if decision.verb not in ("get", "list", "delete") or (resource.namespaced and not namespace and
                                                              decision.verb != "list"):  # fmt: skip
            return None
        base = f"/apis/{resource.group}/v1" if resource.group else "/api/v1"
        where = f"/namespaces/{namespace}" if namespace else ""
        collection = f"{base}{where}/{resource.name}"
        method, url = ("GET", collection) if decision.verb == "list" else (
            "DELETE" if decision.verb == "delete" else "GET", f"{collection}/{ABSENT}")  # fmt: skip
        client = self._client(decision.user, cluster, "")
        tally.real_requests += 1
        try:
            client.request(method, url)
        except NotFoundError:
            return True
        except ForbiddenError:
            return False
        return True

    def _kubectl(self, cluster: str, decision: Decision, namespace: str, tally: Tally) -> bool:
        resource = decision.resource
        args = [str(self.kubectl), "--kubeconfig", str(self.pool[decision.user].kubeconfigs[cluster]), "auth",
                "can-i", decision.verb, str(resource)]  # fmt: skip
        if namespace:
            args += ["-n", namespace]
        elif resource.namespaced:
            args.append("--all-namespaces")
        tally.kubectl += 1
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        answer = done.stdout.strip()
        if not answer and "forbidden" in done.stderr.lower():
            return False  # the proxy refused the user before asking the cluster
        if answer not in ("yes", "no"):
            raise AssertionError(f"kubectl auth can-i answered {answer!r}: {_first_line(done.stderr)}")
        return answer == "yes"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def as_json(tally: Tally) -> dict[str, Any]:
    return {
        "worlds": tally.worlds,
        **{f"decisions_{path}": count for path, count in tally.decisions.items()},
        "real_requests": tally.real_requests,
        "kubectl": tally.kubectl,
        "refused_by_proxy": tally.refused_by_proxy,
    }

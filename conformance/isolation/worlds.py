"""Generated RBAC worlds: users in groups, projects of namespaces, role-template bindings, and questions.

A world lives in one downstream cluster: a few namespaces placed in projects (or in none), cluster and
project role-template bindings of the built-in templates to pool users or to groups, and a sample of
(user, verb, resource, namespace) decisions to ask. Worlds are plain frozen values so that hypothesis
can shrink a failing one to a minimal example, and `describe` writes one out for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

CLUSTER_ROLES = ("cluster-member", "cluster-owner")
PROJECT_ROLES = ("read-only", "project-member", "project-owner")
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
MAX_PROJECTS = 2
MAX_BINDINGS = 4
MIN_DECISIONS = 16
MAX_DECISIONS = 40


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    name: str
    namespaced: bool

    def __str__(self) -> str:
        return f"{self.name}.{self.group}" if self.group else self.name


RESOURCES = (
    Resource("", "configmaps", namespaced=True),
    Resource("", "pods", namespaced=True),
    Resource("", "secrets", namespaced=True),
    Resource("", "serviceaccounts", namespaced=True),
    Resource("", "persistentvolumeclaims", namespaced=True),
    Resource("apps", "deployments", namespaced=True),
    Resource("rbac.authorization.k8s.io", "rolebindings", namespaced=True),
    Resource("", "nodes", namespaced=False),
    Resource("", "namespaces", namespaced=False),
    Resource("", "persistentvolumes", namespaced=False),
    Resource("storage.k8s.io", "storageclasses", namespaced=False),
    Resource("rbac.authorization.k8s.io", "clusterroles", namespaced=False),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    """What worlds are drawn over: the clusters, the pool of users, the groups and the namespaces."""

    clusters: tuple[str, ...]
    users: int
    groups: tuple[str, ...]
    namespaces: int
    memberships: tuple[tuple[str, ...], ...]
    """The groups of each pool user (empty where the target cannot give local users groups)."""


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # "user" or "group"
    index: int

    def label(self, shape: Shape) -> str:
        return f"user{self.index}" if self.kind == "user" else f"group {shape.groups[self.index]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingSpec:
    subject: Subject
    role: str
    project: int | None
    """None for a cluster role-template binding, else the index of the project."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    user: int
    verb: str
    resource: Resource
    namespace: int | None
    """Index of the world's namespace; None for a cluster-scoped resource or across all namespaces."""

    def label(self, namespaces: tuple[str, ...] | None = None) -> str:
        where = ""
        if self.namespace is not None:
            where = f" in {namespaces[self.namespace] if namespaces else f'ns{self.namespace}'}"
        elif self.resource.namespaced:
            where = " in all namespaces"
        return f"user{self.user} {self.verb} {self.resource}{where}"


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    cluster: str
    projects: int
    placement: tuple[int | None, ...]
    """For each namespace, the project holding it (None: in no project)."""
    bindings: tuple[BindingSpec, ...]
    decisions: tuple[Decision, ...]

    def namespaces_of(self, project: int) -> list[int]:
        return [ns for ns, p in enumerate(self.placement) if p == project]


@st.composite
def _binding(draw: st.DrawFn, shape: Shape, projects: int) -> BindingSpec:
    kinds = ["user", "group"] if shape.groups else ["user"]
    kind = draw(st.sampled_from(kinds))
    index = draw(st.integers(0, (shape.users if kind == "user" else len(shape.groups)) - 1))
    if projects and draw(st.booleans()):
        return BindingSpec(
            subject=Subject(kind, index),
            role=draw(st.sampled_from(PROJECT_ROLES)),
            project=draw(st.integers(0, projects - 1)),
        )
    return BindingSpec(subject=Subject(kind, index), role=draw(st.sampled_from(CLUSTER_ROLES)), project=None)


@st.composite
def _decision(draw: st.DrawFn, shape: Shape) -> Decision:
    resource = draw(st.sampled_from(RESOURCES))
    verb = draw(st.sampled_from(VERBS))
    namespace: int | None = None
    if resource.namespaced:
        # Across all namespaces only for the verbs kubectl asks that way (list, watch).
        choices: list[int | None] = list(range(shape.namespaces))
        if verb in ("list", "watch"):
            choices.append(None)
        namespace = draw(st.sampled_from(choices))
    return Decision(
        user=draw(st.integers(0, shape.users - 1)), verb=verb, resource=resource, namespace=namespace
    )


@st.composite
def worlds(draw: st.DrawFn, shape: Shape) -> World:
    """A world over ``shape``; shrinks toward one cluster, no project, few bindings and few decisions."""
    cluster = draw(st.sampled_from(shape.clusters))
    projects = draw(st.integers(0, MAX_PROJECTS))
    placement = tuple(
        draw(st.one_of(st.none(), st.integers(0, projects - 1)) if projects else st.none())
        for _ in range(shape.namespaces)
    )
    bindings = tuple(draw(st.lists(_binding(shape, projects), max_size=MAX_BINDINGS, unique=True)))
    decisions = tuple(
        draw(st.lists(_decision(shape), min_size=MIN_DECISIONS, max_size=MAX_DECISIONS, unique=True))
    )
    return World(
        cluster=cluster, projects=projects, placement=placement, bindings=bindings, decisions=decisions
    )


def describe(world: World, shape: Shape, *, problems: tuple[str, ...] = ()) -> str:
    """The world in a few lines: what the report shows of a minimal failing example."""
    lines = [f"cluster {world.cluster}"]
    for project in range(world.projects):
        held = ", ".join(f"ns{n}" for n in world.namespaces_of(project)) or "no namespace"
        lines.append(f"project p{project}: {held}")
    outside = [f"ns{n}" for n, p in enumerate(world.placement) if p is None]
    if outside:
        lines.append(f"in no project: {', '.join(outside)}")
    for index, groups in enumerate(shape.memberships):
        lines.append(f"user{index} in groups: {', '.join(groups) or 'none'}")
    for binding in world.bindings:
        scope = "the cluster" if binding.project is None else f"project p{binding.project}"
        lines.append(f"binding: {binding.subject.label(shape)} is {binding.role} of {scope}")
    if not world.bindings:
        lines.append("no binding")
    lines.append("decisions: " + "; ".join(d.label() for d in world.decisions))
    lines += [f"problem: {p}" for p in problems]
    return "\n".join(lines)


__all__ = [
    "CLUSTER_ROLES",
    "PROJECT_ROLES",
    "RESOURCES",
    "VERBS",
    "BindingSpec",
    "Decision",
    "Resource",
    "Shape",
    "Subject",
    "World",
    "describe",
    "worlds",
]

"""Isolation over generated RBAC worlds: each sampled decision through the proxy (and ACE) is Kubernetes'.

Hypothesis draws worlds (`conformance.isolation.worlds`) over a pool of users made through the target's
v3 API; the lab (`conformance.isolation.lab`) makes each one real and compares. A failing world shrinks
to a minimal example, which the test records (``rbac_minimal_failing_world``) for the conformance report
together with the number of decisions it checked. The number of worlds follows ``--corral-rbac-profile``
(quick, default, thorough).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from conformance.isolation.lab import Lab, Tally, WorldMismatchError, as_json
from conformance.isolation.worlds import Shape, World, describe, worlds
from conformance.targets import Capability, Target

PROFILES = {"quick": 3, "default": 30, "thorough": 400}
"""Worlds per test and profile; the default keeps the suite near two minutes on two cores."""

pytestmark = pytest.mark.target_needs(Capability.WRITE)


@pytest.fixture(scope="module")
def lab(
    target: Target, corral_binaries: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Lab, Shape]]:
    made = Lab(
        target=target, folder=tmp_path_factory.mktemp("isolation"), kubectl=Path(corral_binaries["kubectl"])
    )
    try:
        shape = made.open()
        yield made, shape
    finally:
        made.close()


def _explore(
    request: pytest.FixtureRequest,
    lab: Lab,
    shape: Shape,
    *,
    paths: tuple[str, ...],
) -> None:
    worlds_per_run = PROFILES[request.config.getoption("corral_rbac_profile")]
    # Facts go where record_property puts them (the results file, JUnit properties), without its
    # warning under JUnit's xunit2 family.
    record_property = request.node.user_properties.append
    tally = Tally()
    failing: list[tuple[World, str]] = []

    @settings(
        max_examples=worlds_per_run,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(world=worlds(shape))
    def check(world: World) -> None:
        try:
            lab.check(world, tally, paths=paths)
        except WorldMismatchError as e:
            failing.append((world, str(e)))
            raise

    try:
        check()
    finally:
        record_property(("rbac_decisions", tally.total))
        for key, value in as_json(tally).items():
            record_property((f"rbac_{key}", value))
        if failing:
            # Hypothesis replays the minimal example last: that is the one the report shows.
            world, problem = failing[-1]
            record_property(
                ("rbac_minimal_failing_world", describe(world, shape, problems=tuple(problem.splitlines())))
            )
    assert tally.total > 0, "no decision was checked"


@pytest.mark.requirement("PROXY-021", "PROXY-022", "SRV-008")
def test_proxy_decisions_are_kubernetes_own(request: pytest.FixtureRequest, lab: tuple[Lab, Shape]) -> None:
    """Through the proxy: SelfSubjectAccessReview, real requests and kubectl auth can-i, per world."""
    _explore(request, *lab, paths=("proxy",))


@pytest.mark.target_needs(Capability.ACE)
@pytest.mark.requirement("ACE-018", "PROXY-021")
def test_ace_decisions_are_the_proxy_s_and_kubernetes_own(
    request: pytest.FixtureRequest,
    lab: tuple[Lab, Shape],
    needs: Callable[..., None],
) -> None:
    """Through ACE and the proxy in the same worlds, on clusters whose kubeconfigs have ACE contexts.

    A target with ACE must give them: ``generateKubeconfig`` adds a cluster's ACE contexts itself, so a
    cluster with known ACE endpoints but none in its kubeconfig, or no cluster with any, is a failure.
    """
    needs(Capability.ACE)  # only a target without ACE skips (the marker deselects it beforehand)
    made, shape = lab
    contexts = {name: made.ace_contexts(name) for name in shape.clusters}
    lacking = [n for n in shape.clusters if made.target.cluster(n).ace_endpoints and not contexts[n]]
    assert not lacking, (
        f"generateKubeconfig gave no ACE context for {', '.join(lacking)}, whose ACE endpoints the target "
        "lists (spec.localClusterAuthEndpoint.enabled is true)"
    )
    with_ace = tuple(name for name in shape.clusters if contexts[name])
    assert with_ace, (
        f"target {made.target.name} has ACE, but generateKubeconfig gave no ACE context for any of "
        f"{', '.join(shape.clusters)} (expected <cluster>-fqdn or <cluster>-<node> contexts)"
    )
    narrowed = Shape(
        clusters=with_ace,
        users=shape.users,
        groups=shape.groups,
        namespaces=shape.namespaces,
        memberships=shape.memberships,
    )
    _explore(request, made, narrowed, paths=("proxy", "ace"))

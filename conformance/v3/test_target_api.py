"""What any target must answer the same way, corral's server or a real Rancher: the v3 API's collections,
the proxy's routes and refusals, disabled users and cluster-scoped tokens.

Every test goes through the `target` fixture only (its URL, CA, admin token, clusters), so the suite runs
unchanged with ``--corral-target rancher``; the read-only tests make nothing and run with
``--corral-read-only`` too, the others need to make users, bindings and tokens.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from conformance.targets import Capability, Target, UserAccess, V3Client, V3Error

WAIT_SECONDS = 60.0


def _status(call: Callable[[], Any]) -> int:
    """The HTTP status of one v3 client call (200 when it answered without an error)."""
    try:
        call()
    except V3Error as e:
        return e.status
    return 200


def _eventually(
    condition: Callable[[], bool], what: str, *, seconds: float = WAIT_SECONDS, step: float = 0.2
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:.0f} s")
        time.sleep(step)


def _proxied(client: V3Client, cluster_id: str, path: str, *, alias: bool = False) -> dict[str, Any]:
    return client.get(f"/k8s/{'proxy' if alias else 'clusters'}/{cluster_id}{path}")


def _first_cluster(target: Target) -> str:
    return next(iter(target.clusters.values())).id


@pytest.mark.requirement("SRV-004")
def test_collections_have_data_pagination_links_and_actions(target: Target) -> None:
    for collection in ("/v3/clusters", "/v3/users", "/v3/settings"):
        answer = target.v3().get(collection)
        missing = {"data", "pagination", "links", "actions"} - set(answer)
        assert not missing, f"{collection} lacks {sorted(missing)}"
        assert isinstance(answer["data"], list)
        assert answer["type"] == "collection"


@pytest.mark.requirement("PROXY-002", "PROXY-001")
def test_the_proxy_alias_serves_what_the_cluster_path_serves(target: Target) -> None:
    admin = target.v3()
    for cluster in target.clusters.values():
        direct = _proxied(admin, cluster.id, "/api/v1/namespaces/default")
        alias = _proxied(admin, cluster.id, "/api/v1/namespaces/default", alias=True)
        assert direct["metadata"]["uid"] == alias["metadata"]["uid"]
        assert _proxied(admin, cluster.id, "/version?timeout=10s")["gitVersion"]


@pytest.mark.requirement("PROXY-017")
def test_no_token_or_a_wrong_one_is_refused_with_a_4xx(target: Target) -> None:
    admin = target.v3()
    cluster = _first_cluster(target)
    path = f"/k8s/clusters/{cluster}/api/v1/namespaces"
    without = _status(lambda: admin.call("GET", path, authenticate=False))
    name = target.server.admin_token.partition(":")[0] or "token-xxxxx"
    wrong = admin.with_token(f"{name}:{secrets.token_hex(27)}")
    assert 400 <= without < 500
    assert 400 <= _status(lambda: wrong.get(path)) < 500


@pytest.mark.requirement("PROXY-018")
def test_an_unknown_cluster_is_not_found(target: Target) -> None:
    assert (
        _status(lambda: target.v3().get(f"/k8s/clusters/c-{secrets.token_hex(3)}/api/v1/namespaces")) == 404
    )


def _member(target: Target, clusters: list[str]) -> UserAccess:
    """A new user, cluster-member of each of ``clusters``, once its proxied requests go through."""
    user = target.make_user("v3")
    for name in clusters:
        target.bind_cluster(name, "cluster-member", user=user)
    client = target.v3(user.token)
    for name in clusters:
        cluster_id = target.cluster(name).id
        _eventually(
            lambda c=cluster_id: _status(lambda: _proxied(client, c, "/api/v1/nodes")) == 200,
            f"a cluster-member binding letting its user list {name}'s nodes",
        )
    return user


@pytest.mark.target_needs(Capability.WRITE)
@pytest.mark.requirement("TOK-009")
def test_a_disabled_user_s_tokens_are_refused(target: Target) -> None:
    cluster = next(iter(target.clusters))
    user = _member(target, [cluster])
    client = target.v3(user.token)
    target.v3().set_user_enabled(user.id, enabled=False)
    try:
        _eventually(
            lambda: (
                _status(lambda: _proxied(client, target.cluster(cluster).id, "/api/v1/nodes")) in (401, 403)
            ),
            "the proxy refusing a disabled user's token",
        )
        assert _status(lambda: client.get("/v3/users?me=true")) == 401
    finally:
        target.v3().set_user_enabled(user.id, enabled=True)


@pytest.mark.target_needs(Capability.WRITE)
@pytest.mark.requirement("TOK-010")
def test_a_cluster_scoped_token_is_refused_for_another_cluster(target: Target) -> None:
    if len(target.clusters) < 2:
        pytest.skip(f"target {target.name} has one downstream cluster; this needs two")
    first, second = list(target.clusters)[:2]
    user = _member(target, [first, second])
    scoped = target.v3(user.token).create_token(
        description="scoped to one cluster", ttl_ms=600_000, cluster_id=target.cluster(first).id
    )
    client = target.v3(scoped)
    assert _status(lambda: _proxied(client, target.cluster(first).id, "/api/v1/nodes")) == 200
    assert _status(lambda: _proxied(client, target.cluster(second).id, "/api/v1/nodes")) in (401, 403)

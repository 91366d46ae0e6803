"""The token sync's writes on a real kube-apiserver: order, updates in place, deletes, reconcile."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from conformance.ace.conftest import CLUSTER, Ace
from corral.auth import hashers
from corral.errors import NotFoundError
from corral.kubeapiauth import objects, sync

pytestmark = pytest.mark.local_only

BASE = f"/apis/{objects.GROUP}/{objects.VERSION}/namespaces/{objects.NAMESPACE}"
SECRETS = "/api/v1/namespaces/cattle-system/secrets"


def get(ace: Ace, path: str) -> dict[str, Any]:
    return ace.call(lambda c: c.get(path))


def gone(ace: Ace, path: str) -> bool:
    try:
        get(ace, path)
    except NotFoundError:
        return True
    return False


def user_id() -> str:
    return f"u-{uuid.uuid4().hex[:5]}"


@pytest.mark.requirement("ACE-002")
def test_the_secret_is_written_before_the_token(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    token, _ = ace.new_token(user)
    ace.sync_token(token)
    secret, copy = get(ace, f"{SECRETS}/{token.name}"), get(ace, f"{BASE}/clusterauthtokens/{token.name}")
    # One store: resourceVersions order the writes.
    assert int(secret["metadata"]["resourceVersion"]) < int(copy["metadata"]["resourceVersion"])
    assert base64.b64decode(secret["data"]["hash"]).decode() == token.hashed
    assert (copy["userName"], copy["enabled"], copy["expiresAt"], copy["hash"]) == (user, True, "", "")


@pytest.mark.requirement("ACE-005")
def test_updates_happen_in_place(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    token, _ = ace.new_token(user)
    ace.sync_token(token)
    before = get(ace, f"{BASE}/clusterauthtokens/{token.name}")["metadata"]["uid"]
    rehashed = sync.TokenCopy(
        name=token.name,
        user_id=user,
        cluster=CLUSTER,
        enabled=False,
        expires_at="2031-01-01T00:00:00Z",
        hashed=hashers.hash_secret("another"),
    )
    plan = ace.call(lambda c: sync.upsert_token(c, rehashed, cluster=CLUSTER))
    assert plan.write_secret
    after = get(ace, f"{BASE}/clusterauthtokens/{token.name}")
    assert after["metadata"]["uid"] == before
    assert (after["enabled"], after["expiresAt"]) == (False, "2031-01-01T00:00:00Z")
    secret = get(ace, f"{SECRETS}/{token.name}")
    assert base64.b64decode(secret["data"]["hash"]).decode() == rehashed.hashed
    assert not ace.call(lambda c: sync.upsert_token(c, rehashed, cluster=CLUSTER)).changes


@pytest.mark.requirement("ACE-004")
def test_a_token_of_another_cluster_is_not_written(ace: Ace) -> None:
    user = user_id()
    token, _ = ace.new_token(user, cluster="elsewhere")
    with pytest.raises(sync.TokenSyncError, match="scoped to cluster elsewhere"):
        ace.sync_token(token)
    assert gone(ace, f"{BASE}/clusterauthtokens/{token.name}")
    assert gone(ace, f"{SECRETS}/{token.name}")


@pytest.mark.requirement("ACE-003", "ACE-005")
def test_the_user_attribute_goes_with_the_last_token(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user, ("b", "a"))
    assert get(ace, f"{BASE}/clusteruserattributes/{user}")["groups"] == ["a", "b"]
    first, _ = ace.new_token(user)
    second, _ = ace.new_token(user)
    ace.sync_token(first)
    ace.sync_token(second)
    assert ace.call(lambda c: sync.delete_token(c, first.name, user_id=user)) is False
    assert gone(ace, f"{SECRETS}/{first.name}")
    assert gone(ace, f"{BASE}/clusterauthtokens/{first.name}")
    assert not gone(ace, f"{BASE}/clusteruserattributes/{user}")
    assert (
        ace.call(lambda c: sync.delete_token(c, second.name, user_id=user, remaining=[second.name])) is True
    )
    assert gone(ace, f"{BASE}/clusteruserattributes/{user}")


@pytest.mark.requirement("ACE-007")
def test_reconcile_applies_what_changed_while_the_cluster_was_away(ace: Ace) -> None:
    keep_user, drop_user = user_id(), user_id()
    kept, _ = ace.new_token(keep_user)
    dropped, _ = ace.new_token(drop_user)
    users = {
        keep_user: sync.UserCopy(user_id=keep_user, groups=("g",), enabled=True),
        drop_user: sync.UserCopy(user_id=drop_user, groups=(), enabled=True),
    }
    ace.call(lambda c: sync.reconcile(c, cluster=CLUSTER, tokens=[kept, dropped], users=users))
    disabled = sync.TokenCopy(**{**_fields(kept), "enabled": False})
    result = ace.call(lambda c: sync.reconcile(c, cluster=CLUSTER, tokens=[disabled], users=users))
    assert kept.name in result.upserted
    assert dropped.name in result.deleted
    assert drop_user in result.attributes_deleted
    assert get(ace, f"{BASE}/clusterauthtokens/{kept.name}")["enabled"] is False
    assert gone(ace, f"{SECRETS}/{dropped.name}")
    assert gone(ace, f"{BASE}/clusteruserattributes/{drop_user}")


def _fields(token: sync.TokenCopy) -> dict[str, Any]:
    return {
        name: getattr(token, name)
        for name in ("name", "user_id", "cluster", "enabled", "expires_at", "hashed")
    }

"""The sync's decisions: which tokens go to a cluster, what is written, when the user attribute goes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.auth import hashers
from corral.kubeapiauth.objects import ClusterAuthToken
from corral.kubeapiauth.sync import (
    TokenCopy,
    TokenSyncError,
    UserCopy,
    attribute_body_for,
    attribute_goes,
    check_token,
    newer_last_used,
    plan_token,
    select_tokens,
)

SHA3 = hashers.hash_secret("secret")


def token(name: str = "t1", **changes: object) -> TokenCopy:
    fields: dict[str, object] = {
        "name": name,
        "user_id": "u-1",
        "cluster": "c-1",
        "enabled": True,
        "expires_at": "",
        "hashed": SHA3,
    }
    fields.update(changes)
    return TokenCopy(**fields)  # type: ignore[arg-type]


def test_only_sha3_tokens_scoped_to_the_cluster_are_copied() -> None:
    tokens = [
        token("mine"),
        token("other", cluster="c-2"),
        token("unscoped", cluster=""),
        token("sha256", hashed=hashers.hash_secret("s", version=hashers.HashVersion.SHA256)),
        token("garbage", hashed="plaintext"),
        token("bad-expiry", expires_at="soon"),
    ]
    assert list(select_tokens(tokens, cluster="c-1")) == ["mine"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cluster": ""}, "not cluster-scoped"),
        ({"cluster": "c-2"}, "scoped to cluster c-2, not c-1"),
        ({"hashed": hashers.hash_secret("s", version=hashers.HashVersion.SCRYPT)}, "version 1"),
    ],
)
def test_a_token_that_cannot_be_copied_says_why_without_its_hash(
    changes: dict[str, object], message: str
) -> None:
    bad = token(**changes)
    with pytest.raises(TokenSyncError, match=message) as refused:
        check_token(bad, cluster="c-1")
    assert bad.hashed not in str(refused.value)


def test_a_new_token_writes_the_secret_and_creates_the_token() -> None:
    plan = plan_token(token(), None, None)
    assert (plan.write_secret, plan.create_token, dict(plan.token_fields)) == (True, True, {})


def test_a_current_copy_needs_nothing() -> None:
    existing = ClusterAuthToken(name="t1", user_name="u-1", enabled=True, last_used_at="2026-01-01T00:00:00Z")
    assert not plan_token(token(), existing, SHA3).changes


def test_changed_fields_are_updated_in_place_and_a_new_hash_rewrites_the_secret() -> None:
    existing = ClusterAuthToken(name="t1", user_name="u-1", enabled=True)
    plan = plan_token(token(enabled=False, expires_at="2030-01-01T00:00:00Z"), existing, "$3:1:old:old")
    assert plan.write_secret
    assert not plan.create_token
    assert dict(plan.token_fields) == {"enabled": False, "expiresAt": "2030-01-01T00:00:00Z"}


def test_a_missing_secret_is_written_again_and_a_legacy_hash_cleared() -> None:
    existing = ClusterAuthToken(name="t1", user_name="u-1", enabled=True, legacy_hash="$2:a:b")
    plan = plan_token(token(), existing, None)
    assert plan.write_secret
    assert dict(plan.token_fields) == {"hash": ""}


def test_the_attribute_is_created_with_sorted_groups_and_updated_only_when_it_differs() -> None:
    user = UserCopy(
        user_id="u-1", groups=("zeta", "alpha"), enabled=True, extra_by_provider={"p": {"k": ("v",)}}
    )
    created = attribute_body_for(user, None, namespace="cattle-system")
    assert created is not None
    assert created["groups"] == ["alpha", "zeta"]
    assert (created["lastRefresh"], created["needsRefresh"]) == ("", False)
    existing = dict(created, needsRefresh=True, lastRefresh="2026-01-01T00:00:00Z")
    assert attribute_body_for(user, existing, namespace="cattle-system") is None
    disabled = attribute_body_for(
        UserCopy(user_id="u-1", groups=("alpha",), enabled=False), existing, namespace="cattle-system"
    )
    assert disabled is not None
    assert (disabled["groups"], disabled["enabled"], "extraByProvider" in disabled) == (
        ["alpha"],
        False,
        False,
    )
    assert disabled["needsRefresh"] is True  # kube-api-auth's flag is left for the server to read


def test_the_attribute_goes_with_the_users_last_token() -> None:
    assert attribute_goes("u-1", deleted="t1", remaining=[])
    assert attribute_goes("u-1", deleted="t1", remaining=["t1"])
    assert not attribute_goes("u-1", deleted="t1", remaining=["t1", "t2"])


def test_last_used_is_copied_back_only_when_newer() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert newer_last_used(None, late) == late
    assert newer_last_used(early, late) == late
    assert newer_last_used(late, early) is None
    assert newer_last_used(late, late) is None
    assert newer_last_used(late, None) is None

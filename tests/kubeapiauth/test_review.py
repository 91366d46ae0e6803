"""kube-api-auth's decisions: what is a malformed request, and the verification steps in their order."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from corral.auth import hashers
from corral.kubeapiauth.objects import ClusterAuthToken, ClusterUserAttribute
from corral.kubeapiauth.review import (
    Accepted,
    Credentials,
    Refused,
    ReviewRequestError,
    parse_review,
    review,
    success_body,
)
from tests.kubeapiauth._snapshot import Objects

NOW = datetime(2026, 3, 1, 12, 0, 30, 250000, tzinfo=UTC)
SECRET = "s3cr3t-value-of-the-token"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# -- parsing ----------------------------------------------------------------------------------------


def test_a_tokenreview_gives_the_name_and_the_secret_split_once() -> None:
    creds = parse_review(body(apiVersion="x/y", kind="TokenReview", spec={"token": "kubeconfig-u1:a:b"}))
    assert creds == Credentials("kubeconfig-u1", "a:b")


def test_the_ext_prefix_is_removed_from_the_name() -> None:
    creds = parse_review(body(kind="TokenReview", spec={"token": "ext/token-abc:xyz"}))
    assert creds.access_key == "token-abc"


def test_member_names_match_without_case_as_go_decodes_them() -> None:
    creds = parse_review(body(Kind="TokenReview", Spec={"Token": "n:s"}))
    assert creds == Credentials("n", "s")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not an object"),
        (b"null", "kind is not TokenReview"),
        (body(kind="SubjectAccessReview", spec={"token": "n:s"}), "kind is not TokenReview"),
        (body(spec={"token": "n:s"}), "kind is not TokenReview"),
        (body(kind="TokenReview", spec={"token": ""}), "missing Token"),
        (body(kind="TokenReview"), "missing Token"),
        (body(kind="TokenReview", spec={"token": "no-colon-here"}), "1 parts"),
        (body(kind="TokenReview", spec={"token": 5}), "not a string"),
        (body(kind="TokenReview", spec="n:s"), "spec is not an object"),
        (body(kind=7, spec={"token": "n:s"}), "kind is not a string"),
    ],
)
def test_malformed_requests_are_refused_without_the_token(raw: bytes, reason: str) -> None:
    with pytest.raises(ReviewRequestError, match=reason) as refused:
        parse_review(raw)
    assert "no-colon-here" not in str(refused.value)


# -- verification -----------------------------------------------------------------------------------


def objects(*, version: hashers.HashVersion = hashers.HashVersion.SHA3) -> Objects:
    return Objects(
        tokens={"t1": ClusterAuthToken(name="t1", user_name="u-1", enabled=True)},
        attributes={
            "u-1": ClusterUserAttribute(name="u-1", groups=("g:a", "g:b"), enabled=True),
        },
        hashes={"t1": hashers.hash_secret(SECRET, version=version)},
    )


def refusal(snapshot: Objects, secret: str = SECRET, name: str = "t1") -> str:
    outcome = review(Credentials(name, secret), snapshot, now=NOW)
    assert isinstance(outcome, Refused)
    return outcome.reason


@pytest.mark.parametrize("version", list(hashers.HashVersion))
def test_a_valid_token_authenticates_its_user_with_the_attribute_groups(version: hashers.HashVersion) -> None:
    outcome = review(Credentials("t1", SECRET), objects(version=version), now=NOW)
    assert outcome == Accepted(
        user="u-1",
        groups=("g:a", "g:b"),
        migrate=False,
        mark_needs_refresh=False,
        last_used_at="2026-03-01T12:00:30Z",
    )


@pytest.mark.parametrize("version", list(hashers.HashVersion))
def test_a_wrong_secret_is_refused_for_every_hash_version(version: hashers.HashVersion) -> None:
    assert refusal(objects(version=version), secret="guess") == "the secret does not match the hash"


def test_an_unknown_token_is_refused_without_a_user() -> None:
    outcome = review(Credentials("nope", SECRET), objects(), now=NOW)
    assert outcome == Refused(reason="clusterauthtoken not found")


def test_the_token_is_checked_before_the_user() -> None:
    snapshot = objects()
    snapshot.tokens["t1"] = replace(snapshot.tokens["t1"], enabled=False)
    snapshot.attributes.clear()
    assert refusal(snapshot) == "token is not enabled"


def test_a_missing_or_disabled_user_attribute_refuses() -> None:
    snapshot = objects()
    snapshot.attributes["u-1"] = replace(snapshot.attributes["u-1"], enabled=False)
    assert refusal(snapshot) == "user is not enabled"
    snapshot.attributes.clear()
    assert refusal(snapshot) == "clusteruserattribute not found"


def test_expiry_is_checked_before_the_hash() -> None:
    snapshot = objects()
    past = (NOW - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    snapshot.tokens["t1"] = replace(snapshot.tokens["t1"], expires_at=past)
    snapshot.hashes.clear()
    assert refusal(snapshot) == f"auth expired at {past}"


def test_a_future_expiry_in_another_zone_is_accepted() -> None:
    snapshot = objects()
    snapshot.tokens["t1"] = replace(snapshot.tokens["t1"], expires_at="2026-03-01T13:00:31+01:00")
    assert isinstance(review(Credentials("t1", SECRET), snapshot, now=NOW), Accepted)


def test_an_unreadable_expiry_refuses() -> None:
    snapshot = objects()
    snapshot.tokens["t1"] = replace(snapshot.tokens["t1"], expires_at="tomorrow")
    assert "expiresAt is not an RFC 3339 time" in refusal(snapshot)


def test_no_secret_and_no_legacy_hash_refuses() -> None:
    snapshot = objects()
    snapshot.hashes.clear()
    assert refusal(snapshot) == "hash secret is missing"


def test_the_legacy_hash_field_wins_and_asks_for_migration() -> None:
    snapshot = objects()
    legacy = hashers.hash_secret("the-old-secret", version=hashers.HashVersion.SHA256)
    snapshot.tokens["t1"] = replace(snapshot.tokens["t1"], legacy_hash=legacy)
    outcome = review(Credentials("t1", "the-old-secret"), snapshot, now=NOW)
    assert isinstance(outcome, Accepted)
    assert outcome.migrate
    assert refusal(snapshot) == "the secret does not match the hash"  # the Secret's hash is not read


@pytest.mark.parametrize("stored", ["", "$9:x:y", "$3:1:!!:abc", "plain"])
def test_a_bad_hash_format_refuses_without_showing_the_hash(stored: str) -> None:
    snapshot = objects()
    snapshot.hashes["t1"] = stored
    reason = refusal(snapshot)
    assert reason.startswith("unable to get hasher for the token")
    assert SECRET not in reason


def test_needs_refresh_is_flagged_once_the_debounce_has_passed() -> None:
    snapshot = objects()
    snapshot.debounce = 60
    old = (NOW - timedelta(seconds=61)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = (NOW - timedelta(seconds=59)).strftime("%Y-%m-%dT%H:%M:%SZ")
    snapshot.attributes["u-1"] = replace(snapshot.attributes["u-1"], last_refresh=old)
    flagged = review(Credentials("t1", SECRET), snapshot, now=NOW)
    assert isinstance(flagged, Accepted)
    assert flagged.mark_needs_refresh
    snapshot.attributes["u-1"] = replace(snapshot.attributes["u-1"], last_refresh=recent)
    fresh = review(Credentials("t1", SECRET), snapshot, now=NOW)
    assert isinstance(fresh, Accepted)
    assert not fresh.mark_needs_refresh


@pytest.mark.parametrize(
    ("debounce", "last_refresh", "needs_refresh"),
    [(-1, "2000-01-01T00:00:00Z", False), (60, "", False), (60, "2000-01-01T00:00:00Z", True)],
)
def test_needs_refresh_is_left_alone(debounce: int, last_refresh: str, needs_refresh: bool) -> None:
    snapshot = objects()
    snapshot.debounce = debounce
    snapshot.attributes["u-1"] = replace(
        snapshot.attributes["u-1"], last_refresh=last_refresh, needs_refresh=needs_refresh
    )
    outcome = review(Credentials("t1", SECRET), snapshot, now=NOW)
    assert isinstance(outcome, Accepted)
    assert not outcome.mark_needs_refresh


def test_an_unreadable_last_refresh_refuses_as_upstream() -> None:
    snapshot = objects()
    snapshot.debounce = 0
    snapshot.attributes["u-1"] = replace(snapshot.attributes["u-1"], last_refresh="yesterday")
    assert refusal(snapshot).startswith("error parsing lastRefresh")


@pytest.mark.parametrize(
    ("recorded", "written"),
    [
        ("2026-03-01T12:00:30Z", None),
        ("2026-03-01T13:00:30+01:00", None),
        ("2026-03-01T12:00:29Z", "2026-03-01T12:00:30Z"),
        ("", "2026-03-01T12:00:30Z"),
        ("garbage", "2026-03-01T12:00:30Z"),
    ],
)
def test_last_used_at_is_written_at_most_once_per_second(recorded: str, written: str | None) -> None:
    snapshot = objects()
    snapshot.tokens["t1"] = replace(snapshot.tokens["t1"], last_used_at=recorded)
    outcome = review(Credentials("t1", SECRET), snapshot, now=NOW)
    assert isinstance(outcome, Accepted)
    assert outcome.last_used_at == written


def test_the_success_answer_has_no_uid_and_no_extra() -> None:
    assert success_body("u-1", ("g1",)) == {
        "apiVersion": "authentication.k8s.io/v1beta1",
        "kind": "TokenReview",
        "status": {"authenticated": True, "user": {"username": "u-1", "groups": ["g1"]}},
    }
    assert success_body("u-1", ())["status"]["user"] == {"username": "u-1"}


def test_credentials_never_show_the_secret() -> None:
    assert SECRET not in repr(Credentials("t1", SECRET))

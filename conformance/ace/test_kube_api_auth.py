"""kube-api-auth behind a real kube-apiserver, checked with the real kubectl through an ACE context.

Tokens are written with the sync functions (or, for old hash versions and the legacy field, as older
Rancher versions left them). kube-apiserver keeps an accepted token for about 10 s, so every refusal
here uses a token that was never accepted, except the revocation tests, which measure the delay.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conformance.ace.conftest import CLUSTER, Ace, token_secret
from corral.auth import hashers
from corral.kubeapiauth import objects, sync
from corral.model.trace import TokenReviewed, read_trace

pytestmark = pytest.mark.local_only

UNAUTHORIZED = "Unauthorized"
BASE = f"/apis/{objects.GROUP}/{objects.VERSION}/namespaces/{objects.NAMESPACE}"


@pytest.fixture
def namespace(ace: Ace) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with ace.handle.client() as admin:
        admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
        yield name
        admin.delete(f"/api/v1/namespaces/{name}")


def user_id() -> str:
    return f"u-{uuid.uuid4().hex[:5]}"


def refused(result: Any) -> bool:
    return result.returncode != 0 and UNAUTHORIZED in result.stderr


def whoami(ace: Ace, bearer: str) -> dict[str, Any]:
    result = ace.kubectl_as(bearer, "auth", "whoami", "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)["status"]["userInfo"])


@pytest.mark.requirement("ACE-002", "ACE-003", "ACE-010", "ACE-015")
def test_a_synced_token_authenticates_its_user_with_the_attribute_groups(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user, ("github_team://42", "local://g-devs"))
    token, bearer = ace.new_token(user)
    ace.sync_token(token)
    identity = whoami(ace, bearer)
    assert identity["username"] == user
    assert set(identity["groups"]) == {"github_team://42", "local://g-devs", "system:authenticated"}
    assert "uid" not in identity
    assert "extra" not in identity


@pytest.mark.requirement("ACE-010")
def test_rbac_applies_to_the_user_and_its_groups(ace: Ace, namespace: str) -> None:
    user = user_id()
    ace.sync_user(user, ("g-readers",))
    token, bearer = ace.new_token(user)
    ace.sync_token(token)
    with ace.handle.client() as admin:
        for name, resource, subject in (
            ("pods", "pods", ("Group", "g-readers")),
            ("cms", "configmaps", ("User", user)),
        ):
            admin.create(
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
                {
                    "metadata": {"name": name},
                    "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get", "list"]}],
                },
            )
            admin.create(
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
                {
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": subject[0], "name": subject[1]}
                    ],
                },
            )
    config = ace.kubeconfig(bearer)
    assert ace.run_kubectl(config, "get", "pods", "-n", namespace).returncode == 0
    assert ace.run_kubectl(config, "get", "configmaps", "-n", namespace).returncode == 0
    denied = ace.run_kubectl(config, "get", "secrets", "-n", namespace)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'User "{user}"' in denied.stderr
    assert ace.run_kubectl(config, "auth", "can-i", "list", "pods", "-n", "default").stdout.strip() == "no"


@pytest.mark.parametrize("case", ["disabled", "expired", "deleted", "user-disabled", "no-attribute"])
@pytest.mark.requirement("ACE-011", "ACE-012")
def test_tokens_refused_by_their_downstream_copy(ace: Ace, case: str) -> None:
    user = user_id()
    ace.sync_user(user, ("g",), enabled=case != "user-disabled")
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    changes: dict[str, Any] = {"enabled": False} if case == "disabled" else {}
    if case == "expired":
        changes["expires_at"] = past
    token, bearer = ace.new_token(user, **changes)
    ace.sync_token(token)
    if case == "deleted":
        assert ace.call(lambda c: sync.delete_token(c, token.name, user_id=user)) is True
    if case == "no-attribute":
        ace.call(lambda c: c.delete(f"{BASE}/clusteruserattributes/{user}"))
    time.sleep(0.5)  # the watch delivers the change to kube-api-auth
    assert refused(ace.kubectl_as(bearer, "get", "namespaces"))
    status, content_type, body = ace.review(bearer)
    assert (status, content_type, body) == (401, "application/json", b"")


@pytest.mark.requirement("ACE-012")
def test_a_future_expiry_is_accepted(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    token, bearer = ace.new_token(user, expires_at=future)
    ace.sync_token(token)
    assert whoami(ace, bearer)["username"] == user


@pytest.mark.requirement("ACE-011")
def test_a_wrong_secret_and_an_unknown_token_are_refused(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    token, _bearer = ace.new_token(user)
    ace.sync_token(token)
    wrong = f"{token.name}:{token_secret()}"
    unknown = f"kubeconfig-nobody:{token_secret()}"
    ace.handed_out.extend(b.split(":")[1] for b in (wrong, unknown))
    for bearer in (wrong, unknown):
        assert refused(ace.kubectl_as(bearer, "get", "namespaces"))
        assert ace.review(bearer) == (401, "application/json", b"")


@pytest.mark.requirement("ACE-004")
def test_a_token_that_is_not_cluster_scoped_is_never_synced_so_ace_refuses_it(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    token, bearer = ace.new_token(user, cluster="")
    with pytest.raises(sync.TokenSyncError, match="not cluster-scoped"):
        ace.sync_token(token)
    assert refused(ace.kubectl_as(bearer, "get", "namespaces"))


def _write_raw_token(ace: Ace, name: str, user: str, *, secret_hash: str | None, legacy: str = "") -> None:
    """A token as older Rancher versions left it: any hash version, in the Secret or the legacy field."""
    if secret_hash is not None:
        secret = objects.hash_secret_body(name=name, hashed=secret_hash)
        ace.call(lambda c: c.create("/api/v1/namespaces/cattle-system/secrets", secret))
    body = objects.cluster_auth_token_body(name=name, user_name=user, enabled=True, expires_at="")
    body["hash"] = legacy
    ace.call(lambda c: c.create(f"{BASE}/clusterauthtokens", body))


@pytest.mark.parametrize("version", list(hashers.HashVersion))
@pytest.mark.requirement("ACE-013")
def test_every_hash_version_verifies(ace: Ace, version: hashers.HashVersion) -> None:
    user = user_id()
    ace.sync_user(user)
    secret = token_secret()
    ace.handed_out.append(secret)
    name = f"token-{uuid.uuid4().hex[:6]}"
    _write_raw_token(ace, name, user, secret_hash=hashers.hash_secret(secret, version=version))
    time.sleep(0.5)
    assert ace.review(f"{name}:{token_secret()}")[0] == 401
    assert whoami(ace, f"{name}:{secret}")["username"] == user


@pytest.mark.requirement("ACE-011", "ACE-013")
def test_a_bad_hash_format_is_refused(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    secret = token_secret()
    ace.handed_out.append(secret)
    name = f"token-{uuid.uuid4().hex[:6]}"
    _write_raw_token(ace, name, user, secret_hash="$3:1:not base64!:x")
    time.sleep(0.5)
    assert ace.review(f"{name}:{secret}") == (401, "application/json", b"")
    assert refused(ace.kubectl_as(f"{name}:{secret}", "get", "namespaces"))


@pytest.mark.requirement("ACE-013")
def test_a_legacy_hash_field_authenticates_and_is_moved_into_the_secret(ace: Ace) -> None:
    user = user_id()
    ace.sync_user(user)
    secret = token_secret()
    ace.handed_out.append(secret)
    name = f"token-{uuid.uuid4().hex[:6]}"
    legacy = hashers.hash_secret(secret, version=hashers.HashVersion.SHA256)
    _write_raw_token(ace, name, user, secret_hash=None, legacy=legacy)
    time.sleep(0.5)
    assert whoami(ace, f"{name}:{secret}")["username"] == user
    token = ace.call(lambda c: c.get(f"{BASE}/clusterauthtokens/{name}"))
    stored = ace.call(lambda c: c.get(f"/api/v1/namespaces/cattle-system/secrets/{name}"))
    assert token["hash"] == ""
    assert base64.b64decode(stored["data"]["hash"]).decode() == legacy


@pytest.mark.requirement("ACE-014")
def test_last_used_at_and_needs_refresh_are_written_back(ace: Ace) -> None:
    user = user_id()
    long_ago = "2020-01-01T00:00:00Z"
    copy = sync.UserCopy(user_id=user, groups=(), enabled=True, last_refresh=long_ago, needs_refresh=False)
    ace.call(lambda c: sync.upsert_user_attribute(c, copy))
    ace.call(lambda c: sync.ensure_debounce_configmap(c, seconds=60))
    try:
        token, bearer = ace.new_token(user)
        ace.sync_token(token)
        before = datetime.now(UTC).replace(microsecond=0)
        assert whoami(ace, bearer)["username"] == user
        deadline = time.monotonic() + 10
        used: dict[str, datetime] = {}
        attribute: dict[str, Any] = {}
        while time.monotonic() < deadline:
            used = ace.call(sync.read_last_used)
            attribute = ace.call(lambda c: c.get(f"{BASE}/clusteruserattributes/{user}"))
            if token.name in used and attribute.get("needsRefresh"):
                break
            time.sleep(0.2)
        assert used[token.name] >= before
        assert attribute["needsRefresh"] is True
        assert attribute["lastRefresh"] == long_ago
    finally:
        ace.call(
            lambda c: c.delete(f"/api/v1/namespaces/cattle-system/configmaps/{objects.DEBOUNCE_CONFIGMAP}")
        )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "Pod", "spec": {"token": "a:b"}}
        ).encode(),
        json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": ""}}
        ).encode(),
        json.dumps({"kind": "TokenReview", "spec": {"token": "no-colon"}}).encode(),
    ],
)
@pytest.mark.requirement("ACE-011")
def test_a_malformed_review_is_a_400(ace: Ace, body: bytes) -> None:
    status, content_type, answer = ace.post(body)
    assert (status, content_type, answer) == (400, "application/json", b"")


@pytest.mark.requirement("ACE-009")
def test_healthcheck(ace: Ace) -> None:
    import http.client

    host, port = ace.auth_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/healthcheck")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"")
    finally:
        connection.close()


def _first_refusal(probe: Any, *, limit_seconds: float = 60.0) -> float:
    """Seconds until ``probe()`` first says refused; fails when it never does (a liveness bound)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_seconds:
        if probe():
            return time.monotonic() - started
    pytest.fail(f"still accepted {limit_seconds:.0f}s after the revocation")


@pytest.mark.parametrize("how", ["delete", "disable"])
@pytest.mark.requirement("ACE-008")
def test_revocation_reaches_kube_api_auth_and_then_kubectl(
    ace: Ace, how: str, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user = user_id()
    ace.sync_user(user, ("g",))
    token, bearer = ace.new_token(user)
    ace.sync_token(token)
    config = ace.kubeconfig(bearer)
    assert ace.run_kubectl(config, "auth", "whoami").returncode == 0
    if how == "delete":
        ace.call(lambda c: sync.delete_token(c, token.name, user_id=user))
    else:
        ace.sync_token(sync.TokenCopy(**_fields(token, enabled=False)))
    webhook = _first_refusal(lambda: ace.review(bearer)[0] == 401)
    # kubectl from the same instant onwards: the apiserver's ~10 s cache of the accepted token shows here.
    kubectl = webhook + _first_refusal(
        lambda: refused(ace.run_kubectl(config, "get", "namespaces", "-o", "name"))
    )
    record_property(f"revocation_{how}_kube_api_auth_seconds", round(webhook, 4))
    record_property(f"revocation_{how}_kubectl_seconds", round(kubectl, 3))
    with capsys.disabled():
        print(
            f"\nrevocation by {how}: kube-api-auth refuses after {webhook:.4f}s, kubectl after {kubectl:.2f}s"
        )


def _fields(token: sync.TokenCopy, **changes: Any) -> dict[str, Any]:
    names = ("name", "user_id", "cluster", "enabled", "expires_at", "hashed")
    values = {name: getattr(token, name) for name in names}
    values.update(changes)
    return values


@pytest.mark.requirement("TRACE-004")
def test_every_review_is_traced(ace: Ace) -> None:
    events = [e for e in read_trace(ace.trace) if isinstance(e, TokenReviewed)]
    assert {e.cluster for e in events} == {CLUSTER}
    assert any(e.authenticated for e in events)
    assert any(not e.authenticated and e.user == "" for e in events)
    assert all(e.latency_seconds >= 0 for e in events)


@pytest.mark.requirement("TOK-015", "ACE-011")
def test_no_secret_and_no_hash_in_the_logs(ace: Ace) -> None:
    text = ace.log.read_text(encoding="utf-8")
    assert "token refused" in text, "the log says what was decided"
    assert "authenticated user" in text
    assert ace.handed_out
    leaked = [secret for secret in ace.handed_out if secret in text]
    assert leaked == []
    assert [prefix for prefix in ("$1:", "$2:", "$3:1:") if prefix in text] == []

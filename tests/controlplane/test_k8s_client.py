"""The sync Kubernetes client and the error mapping, against a loopback server that plays the apiserver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral import errors
from corral.controlplane.processes import free_port
from corral.k8s import KubeClient, KubeConfig, Watch, wait_for
from corral.k8s.errors import api_error
from corral.k8s.protocol import WatchCursor
from tests.controlplane.fake_api import FakeAPI, serve, watch_stream


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with serve() as fake:
        yield fake


# -- the error mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (400, "BadRequest", errors.BadRequestError),
        (401, "Unauthorized", errors.UnauthorizedError),
        (403, "Forbidden", errors.ForbiddenError),
        (404, "NotFound", errors.NotFoundError),
        (409, "AlreadyExists", errors.AlreadyExistsError),
        (409, "Conflict", errors.ConflictError),
        (409, "", errors.ConflictError),
        (410, "Expired", errors.GoneError),
        (410, "Gone", errors.GoneError),
        (422, "Invalid", errors.InvalidError),
        (429, "TooManyRequests", errors.TooManyRequestsError),
        (500, "InternalError", errors.KubeAPIError),
        (500, "Timeout", errors.ServerTimeoutError),
        (503, "ServiceUnavailable", errors.ServiceUnavailableError),
        (504, "Timeout", errors.ServerTimeoutError),
        (404, "AlreadyExists", errors.NotFoundError),
    ],
)
def test_each_status_and_reason_maps_to_its_typed_error(
    status: int, reason: str, expected: type[errors.KubeAPIError]
) -> None:
    body = {"kind": "Status", "code": status, "message": "why"}
    if reason:
        body["reason"] = reason
    error = api_error("POST", "/api/v1/namespaces?dryRun=All", status, body)
    assert type(error) is expected
    assert isinstance(error, errors.CorralError)
    assert error.status == status
    assert str(error) == f"POST /api/v1/namespaces: {status} {reason or 'Conflict'}: why"


def test_the_reason_defaults_to_the_http_phrase_and_a_long_or_non_json_body_is_cut() -> None:
    error = api_error("GET", "/x", 404, b"<html>" + b"y" * 2000)
    assert isinstance(error, errors.NotFoundError)
    assert error.reason == "NotFound"
    assert str(error).startswith("GET /x: 404 NotFound: <html>yyy")
    assert len(str(error)) < 300


def test_a_watch_error_event_raises_its_status_and_a_bookmark_only_moves_the_resource_version() -> None:
    cursor = WatchCursor("/api/v1/pods", "5")
    assert cursor.event(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}') is None
    assert cursor.resource_version == "9"
    added = cursor.event(b'{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"11"}}}')
    assert added == ("ADDED", {"metadata": {"name": "a", "resourceVersion": "11"}})
    assert ("resourceVersion", "11") in cursor.query(60)
    gone = b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}'
    with pytest.raises(errors.GoneError, match=r"WATCH /api/v1/pods: 410 Expired: too old"):
        cursor.event(gone)


# -- requests -----------------------------------------------------------------------------------------


def test_a_forbidden_answer_is_a_forbidden_error_with_a_cut_message_and_never_the_token(api: FakeAPI) -> None:
    api.answers[("GET", "/api/v1/secrets")] = (403, {"reason": "Forbidden", "message": "x" * 1000})
    client = KubeClient(KubeConfig(server=api.url, token="very-secret-token"))
    with client, pytest.raises(errors.ForbiddenError) as error:
        client.get("/api/v1/secrets")
    assert (error.value.status, error.value.reason) == (403, "Forbidden")
    assert len(str(error.value)) < 320
    assert "very-secret-token" not in str(error.value)
    assert api.seen[0].header("Authorization") == ["Bearer very-secret-token"]


def test_impersonation_sends_one_user_header_and_one_header_per_group(api: FakeAPI) -> None:
    api.answers[("GET", "/version")] = (200, {"gitVersion": "v1"})
    with KubeClient(KubeConfig(server=api.url)) as admin:
        with admin.impersonating("alice", ["devs", "ops"]) as client:
            assert client.get("/version") == {"gitVersion": "v1"}
        assert admin.get("/version") == {"gitVersion": "v1"}
    acting, plain = api.seen
    assert acting.header("Impersonate-User") == ["alice"]
    assert acting.header("Impersonate-Group") == ["devs", "ops"]
    assert plain.header("Impersonate-User") == plain.header("Impersonate-Group") == []


def test_apply_is_a_server_side_apply_patch_of_the_object_path(api: FakeAPI) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b"}}}
    api.answers[("PATCH", "/api/v1/nodes/n1")] = (200, {**node, "metadata": {"name": "n1", "uid": "u"}})
    with KubeClient(KubeConfig(server=api.url)) as client:
        result = client.apply("/api/v1/nodes", node)
        client.apply("/api/v1/nodes/", node, force=True, field_manager="other")
    assert result["metadata"]["uid"] == "u"
    first, forced = api.seen
    assert (first.method, first.bare_path) == ("PATCH", "/api/v1/nodes/n1")
    assert first.header("Content-Type") == ["application/apply-patch+yaml"]
    assert first.query == {"fieldManager": "corral"}
    assert first.body == node
    assert forced.bare_path == "/api/v1/nodes/n1"
    assert forced.query == {"fieldManager": "other", "force": "true"}


def test_apply_refuses_an_object_without_its_identity_before_sending(api: FakeAPI) -> None:
    with (
        KubeClient(KubeConfig(server=api.url)) as client,
        pytest.raises(ValueError, match=r"needs apiVersion, kind \(server-side apply\)"),
    ):
        client.apply("/api/v1/nodes", {"metadata": {"name": "n1"}})
    assert api.seen == []


def test_create_replace_patch_and_list_send_the_right_verbs_content_types_and_queries(api: FakeAPI) -> None:
    base = "/api/v1/namespaces/ns/configmaps"
    api.answers[("POST", base)] = (201, {"metadata": {"name": "c"}})
    api.answers[("PUT", f"{base}/c")] = (200, {"metadata": {"name": "c"}})
    api.answers[("PATCH", f"{base}/c")] = (200, {"metadata": {"name": "c"}})
    api.answers[("GET", base)] = (200, {"items": [], "metadata": {"resourceVersion": "7"}})
    with KubeClient(KubeConfig(server=api.url)) as client:
        client.create(base, {"metadata": {"name": "c"}})
        client.replace(f"{base}/c", {"metadata": {"name": "c", "resourceVersion": "3"}})
        client.patch(f"{base}/c", {"data": {"a": "b"}})
        client.patch(f"{base}/c", [{"op": "remove", "path": "/data"}], kind="json")
        listed = client.list(base, label_selector="app=x", field_selector="metadata.name=c")
    assert listed["metadata"]["resourceVersion"] == "7"
    assert [(s.method, s.header("Content-Type")) for s in api.seen[:4]] == [
        ("POST", ["application/json"]),
        ("PUT", ["application/json"]),
        ("PATCH", ["application/merge-patch+json"]),
        ("PATCH", ["application/json-patch+json"]),
    ]
    assert api.seen[3].body == [{"op": "remove", "path": "/data"}]
    assert api.seen[4].query == {"labelSelector": "app=x", "fieldSelector": "metadata.name=c"}
    with pytest.raises(ValueError, match="unknown patch type 'yaml'"):
        KubeClient(KubeConfig(server=api.url)).patch(f"{base}/c", {}, kind="yaml")


def test_delete_and_exists_treat_not_found_as_an_answer(api: FakeAPI) -> None:
    with KubeClient(KubeConfig(server=api.url)) as client:
        assert client.delete("/api/v1/namespaces/gone") == {}
        assert client.exists("/api/v1/namespaces/gone") is False
        with pytest.raises(errors.NotFoundError) as error:
            client.delete("/api/v1/namespaces/gone", missing_ok=False)
    assert error.value.status == 404


def test_delete_with_a_propagation_policy_sends_delete_options(api: FakeAPI) -> None:
    api.answers[("DELETE", "/api/v1/namespaces/a")] = (200, {"kind": "Namespace"})
    with KubeClient(KubeConfig(server=api.url)) as client:
        assert client.delete("/api/v1/namespaces/a", propagation="Foreground") == {"kind": "Namespace"}
    assert api.seen[0].body == {"propagationPolicy": "Foreground"}


def test_request_without_check_returns_the_error_status_and_a_non_json_body_as_text(api: FakeAPI) -> None:
    api.answers[("GET", "/healthz")] = (200, b"ok")
    api.answers[("GET", "/readyz")] = (500, b"[-]etcd failed")
    with KubeClient(KubeConfig(server=api.url)) as client:
        assert client.get("/healthz") == {"text": "ok"}
        answer = client.request("GET", "/readyz", check=False)
    assert (answer.status, answer.body) == (500, {"text": "[-]etcd failed"})


def test_an_unreachable_server_is_a_kube_api_error_with_status_zero() -> None:
    client = KubeClient(KubeConfig(server=f"http://127.0.0.1:{free_port()}"), timeout_seconds=2)
    with client, pytest.raises(errors.KubeAPIError) as error:
        client.get("/version")
    assert error.value.status == 0
    assert error.value.reason == "ConnectionError"
    assert str(error.value).startswith("GET /version: cannot reach http://127.0.0.1:")


def test_access_reviews_ask_for_the_attributes_given(api: FakeAPI) -> None:
    api.answers[("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")] = (
        201,
        {"status": {"allowed": True}},
    )
    api.answers[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (
        201,
        {"status": {"allowed": False}},
    )
    with KubeClient(KubeConfig(server=api.url)) as client:
        assert client.allows("bob", ["qa"], "list", "configmaps", namespace="ns") is True
        assert client.can_i("delete", "namespaces") is False
    review, own = (s.body for s in api.seen)
    assert review["spec"] == {
        "user": "bob",
        "groups": ["qa"],
        "resourceAttributes": {"verb": "list", "resource": "configmaps", "namespace": "ns"},
    }
    assert own["kind"] == "SelfSubjectAccessReview"
    assert own["spec"]["resourceAttributes"] == {"verb": "delete", "resource": "namespaces"}


# -- watches ------------------------------------------------------------------------------------------


def _pod(name: str, version: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "resourceVersion": version}}


def test_a_watch_yields_events_resumes_from_the_last_version_and_raises_gone(api: FakeAPI) -> None:
    path = "/api/v1/namespaces/ns/pods"
    api.answers[("GET", path)] = [
        (200, watch_stream(("ADDED", _pod("a", "11")), ("MODIFIED", _pod("a", "12")))),
        (
            200,
            watch_stream(
                ("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "20"}}),
                ("DELETED", _pod("a", "21")),
                ("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}),
            ),
        ),
    ]
    seen: list[tuple[str, str]] = []

    def collect(watch: Watch) -> None:
        for kind, obj in watch:
            seen.append((kind, obj["metadata"]["resourceVersion"]))

    with KubeClient(KubeConfig(server=api.url)) as client:
        watch = client.watch(path, resource_version="10", label_selector="app=x", timeout_seconds=60)
        with watch, pytest.raises(errors.GoneError):
            collect(watch)
    assert seen == [("ADDED", "11"), ("MODIFIED", "12"), ("DELETED", "21")]
    assert watch.resource_version == "21"
    first, second = api.seen
    assert first.query["resourceVersion"] == "10"
    assert first.query["watch"] == "true"
    assert first.query["labelSelector"] == "app=x"
    assert second.query["resourceVersion"] == "12"


def test_a_watch_that_is_stopped_ends_its_iteration(api: FakeAPI) -> None:
    path = "/api/v1/pods"
    api.answers[("GET", path)] = (200, watch_stream(("ADDED", _pod("a", "2")), ("ADDED", _pod("b", "3"))))
    with KubeClient(KubeConfig(server=api.url)) as client, client.watch(path) as watch:
        names = []
        for _kind, obj in watch:
            names.append(obj["metadata"]["name"])
            watch.stop()
    assert names == ["a"]
    assert len(api.seen) == 1


def test_a_watch_of_a_missing_path_raises_not_found(api: FakeAPI) -> None:
    with KubeClient(KubeConfig(server=api.url)) as client, pytest.raises(errors.NotFoundError):
        next(iter(client.watch("/apis/nothing.example/v1/things")))


def test_wait_for_returns_the_first_truthy_value_and_times_out_naming_what_it_waited_for() -> None:
    answers = iter([None, {}, "ready"])
    assert wait_for(lambda: next(answers), timeout_seconds=5, what="x", interval_seconds=0.01) == "ready"
    with pytest.raises(TimeoutError, match="waiting for the moon"):
        wait_for(lambda: None, timeout_seconds=0.05, what="the moon", interval_seconds=0.01)

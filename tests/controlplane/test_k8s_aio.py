"""The async Kubernetes client against a loopback server playing the apiserver, and inside an aiohttp app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from corral import errors
from corral.controlplane.processes import free_port
from corral.k8s import KubeConfig
from corral.k8s.aio import AsyncKubeClient, AsyncWatch, wait_for
from tests.controlplane.fake_api import FakeAPI, serve, watch_stream


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with serve() as fake:
        yield fake


async def test_verbs_send_the_right_methods_paths_and_content_types(api: FakeAPI) -> None:
    base = "/api/v1/namespaces/ns/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    api.answers[("POST", base)] = (201, cm)
    api.answers[("GET", f"{base}/c")] = (200, cm)
    api.answers[("PATCH", f"{base}/c")] = (200, cm)
    api.answers[("PUT", f"{base}/c")] = (200, cm)
    api.answers[("GET", base)] = (200, {"items": [cm], "metadata": {"resourceVersion": "4"}})
    api.answers[("DELETE", f"{base}/c")] = (200, {"kind": "Status", "status": "Success"})
    async with AsyncKubeClient(KubeConfig(server=api.url, token="tok")) as client:
        assert await client.create(base, cm) == cm
        assert await client.get(f"{base}/c") == cm
        assert await client.exists(f"{base}/c")
        assert not await client.exists(f"{base}/d")
        await client.apply(base, cm, force=True)
        await client.patch(f"{base}/c", {"data": {"a": "b"}}, kind="strategic")
        await client.replace(f"{base}/c", cm)
        assert (await client.list(base, label_selector="a=b"))["metadata"]["resourceVersion"] == "4"
        assert await client.delete(f"{base}/c") == {"kind": "Status", "status": "Success"}
        assert await client.delete(f"{base}/d") == {}
    assert [s.method for s in api.seen] == [
        "POST",
        "GET",
        "GET",
        "GET",
        "PATCH",
        "PATCH",
        "PUT",
        "GET",
        "DELETE",
        "DELETE",
    ]
    assert [s.header("Content-Type") for s in api.seen if s.body is not None] == [
        ["application/json"],
        ["application/apply-patch+yaml"],
        ["application/strategic-merge-patch+json"],
        ["application/json"],
    ]
    assert api.seen[4].query == {"fieldManager": "corral", "force": "true"}
    assert api.seen[7].query == {"labelSelector": "a=b"}
    assert all(s.header("Authorization") == ["Bearer tok"] for s in api.seen)


async def test_errors_are_typed_and_never_carry_the_token(api: FakeAPI) -> None:
    api.answers[("POST", "/api/v1/namespaces")] = (
        409,
        {
            "kind": "Status",
            "code": 409,
            "reason": "AlreadyExists",
            "message": 'namespaces "a" already exists',
        },
    )
    async with AsyncKubeClient(KubeConfig(server=api.url, token="sekret-token")) as client:
        with pytest.raises(errors.AlreadyExistsError) as exists:
            await client.create("/api/v1/namespaces", {"metadata": {"name": "a"}})
        with pytest.raises(errors.NotFoundError):
            await client.delete("/api/v1/namespaces/zz", missing_ok=False)
        answer = await client.request("GET", "/api/v1/namespaces/zz", check=False)
    assert str(exists.value) == 'POST /api/v1/namespaces: 409 AlreadyExists: namespaces "a" already exists'
    assert "sekret" not in str(exists.value)
    assert answer.status == 404


async def test_impersonation_sends_one_header_per_group_and_shares_the_session(api: FakeAPI) -> None:
    api.answers[("GET", "/version")] = (200, {"gitVersion": "v1"})
    async with AsyncKubeClient(KubeConfig(server=api.url)) as admin:
        async with admin.impersonating("alice", ["devs", "ops"]) as acting:
            await acting.get("/version")
        assert await admin.get("/version") == {"gitVersion": "v1"}
    acting_seen, plain = api.seen
    assert acting_seen.header("Impersonate-User") == ["alice"]
    assert acting_seen.header("Impersonate-Group") == ["devs", "ops"]
    assert plain.header("Impersonate-Group") == []


async def test_access_reviews(api: FakeAPI) -> None:
    api.answers[("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")] = (
        201,
        {"status": {"allowed": True}},
    )
    api.answers[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (201, {"status": {}})
    async with AsyncKubeClient(KubeConfig(server=api.url)) as client:
        assert await client.allows("bob", ["qa"], "get", "pods", namespace="n", name="p")
        assert not await client.can_i("get", "pods")
    assert api.seen[0].body["spec"]["resourceAttributes"] == {
        "verb": "get",
        "resource": "pods",
        "namespace": "n",
        "name": "p",
    }


def _pod(name: str, version: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "resourceVersion": version}}


async def test_a_watch_yields_events_resumes_and_raises_gone(api: FakeAPI) -> None:
    path = "/api/v1/pods"
    api.answers[("GET", path)] = [
        (200, watch_stream(("ADDED", _pod("a", "2")))),
        (
            200,
            watch_stream(
                ("DELETED", _pod("a", "3")),
                ("ERROR", {"kind": "Status", "code": 410, "reason": "Gone", "message": "compacted"}),
            ),
        ),
    ]
    seen: list[str] = []

    async def collect(watch: AsyncWatch) -> None:
        async for kind, _obj in watch:
            seen.append(kind)

    async with (
        AsyncKubeClient(KubeConfig(server=api.url)) as client,
        client.watch(path, resource_version="1", timeout_seconds=60) as watch,
    ):
        with pytest.raises(errors.GoneError, match="410 Gone: compacted"):
            await collect(watch)
    assert seen == ["ADDED", "DELETED"]
    assert [s.query["resourceVersion"] for s in api.seen] == ["1", "2"]


async def test_leaving_a_watch_early_closes_it(api: FakeAPI) -> None:
    path = "/api/v1/pods"
    api.answers[("GET", path)] = (200, watch_stream(("ADDED", _pod("a", "2")), ("ADDED", _pod("b", "3"))))
    async with AsyncKubeClient(KubeConfig(server=api.url)) as client, client.watch(path) as watch:
        async for _kind, obj in watch:
            assert obj["metadata"]["name"] == "a"
            break
    assert watch.resource_version == "2"
    assert len(api.seen) == 1


async def test_an_unreachable_server_and_a_closed_client_are_status_zero_errors() -> None:
    client = AsyncKubeClient(KubeConfig(server=f"http://127.0.0.1:{free_port()}"), timeout_seconds=2)
    async with client:
        with pytest.raises(errors.KubeAPIError) as unreachable:
            await client.get("/version")
    assert (unreachable.value.status, unreachable.value.reason) == (0, "ConnectionError")
    with pytest.raises(errors.KubeAPIError, match="is closed"):
        await client.get("/version")


async def test_async_wait_for_polls_until_truthy_and_times_out_naming_what() -> None:
    answers = iter([None, "", "ready"])

    async def next_answer() -> str | None:
        return next(answers)

    assert await wait_for(next_answer, timeout_seconds=5, what="x", interval_seconds=0.01) == "ready"

    async def never() -> None:
        return None

    with pytest.raises(TimeoutError, match="waiting for the sun"):
        await wait_for(never, timeout_seconds=0.05, what="the sun", interval_seconds=0.01)


@pytest.fixture
async def app_client(api: FakeAPI) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An aiohttp app that opens one AsyncKubeClient at start-up and closes it at clean-up."""
    key = web.AppKey("kube", AsyncKubeClient)

    async def kube(app: web.Application) -> AsyncIterator[None]:
        async with AsyncKubeClient(KubeConfig(server=api.url)) as client:
            app[key] = client
            yield

    async def version(request: web.Request) -> web.Response:
        return web.json_response(await request.app[key].get("/version"))

    app = web.Application()
    app.cleanup_ctx.append(kube)
    app.router.add_get("/", version)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_an_aiohttp_app_uses_and_closes_the_client_with_its_lifecycle(
    api: FakeAPI, app_client: TestClient[web.Request, web.Application]
) -> None:
    api.answers[("GET", "/version")] = (200, {"gitVersion": "v1.36.3"})
    response = await app_client.get("/")
    assert await response.json() == {"gitVersion": "v1.36.3"}

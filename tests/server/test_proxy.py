"""The authentication proxy against a recording downstream: headers, routing, errors, --as, trace."""

from __future__ import annotations

import hashlib
import io
import json
import socket

import aiohttp
import pytest
from aiohttp import web

from corral.auth.identity import UserInfo
from corral.model.trace import RequestCompleted
from corral.server.proxy import ProxySettings
from corral.server.proxy_dial import DirectDialer
from corral.server.proxy_routing import request_verb
from tests.server._harness import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, RefusingDialer, serve, world

PODS = "/api/v1/namespaces/default/pods"


def identity_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers that decide who the request is: Authorization and anything impersonation-like."""
    return [
        (n, v)
        for n, v in headers
        if n.lower() in ("authorization", "proxy-authorization")
        or n.lower().replace("_", "-").startswith("impersonate")
    ]


def alice_headers(host: str) -> list[tuple[str, str]]:
    return [
        ("Authorization", "Bearer sa-token-u-alice"),
        ("Impersonate-User", "u-alice"),
        ("Impersonate-Group", "system:authenticated"),
        ("Impersonate-Group", "system:cattle:authenticated"),
        ("Impersonate-Group", "local://g-dev"),
        ("Impersonate-Extra-Principalid", "local://u-alice"),
        ("Impersonate-Extra-Username", "alice"),
        ("Impersonate-Extra-Requesttokenid", "token-alice"),
        ("Impersonate-Extra-Requesthost", host),
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """GET a URL: status, headers and text."""
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, dict(r.headers), await r.text()


async def test_a_user_request_reaches_the_cluster_as_the_impersonation_account_with_rancher_s_headers():
    async with world() as w, aiohttp.ClientSession() as http:
        url = f"{w.url}/k8s/clusters/c-1{PODS}?labelSelector=app%3Dweb&limit=5"
        async with http.get(url, headers={**bearer(ALICE_TOKEN), "Accept": "application/json"}) as response:
            assert response.status == 200
            assert (await response.json())["path"] == f"{PODS}?labelSelector=app%3Dweb&limit=5"
        [seen] = w.downstream.requests
        host = w.url.removeprefix("http://")
        assert identity_headers(seen.headers) == alice_headers(host)
        assert ("Accept", "application/json") in seen.headers
        assert [u.name for _, u in w.accounts.asked] == ["u-alice"]


async def test_the_proxy_prefix_is_an_alias_and_the_raw_path_and_query_pass_unchanged():
    async with world() as w, aiohttp.ClientSession() as http:
        odd = "/api/v1/namespaces/a%2Fb/pods/x%20y?fieldSelector=a%3D%C3%A9+b&x=%2F"
        async with http.get(
            aiohttp.client.URL(f"{w.url}/k8s/proxy/c-1{odd}", encoded=True), headers=bearer(ALICE_TOKEN)
        ) as r:
            assert r.status == 200
        async with http.get(f"{w.url}/k8s/clusters/c-1", headers=bearer(ALICE_TOKEN)) as r:
            assert r.status == 200
        assert [req.target for req in w.downstream.requests] == [odd, "/"]


async def test_the_session_cookie_authenticates_and_is_not_passed_on():
    async with world() as w, aiohttp.ClientSession() as http:
        cookie = f"theme=dark; R_SESS={ALICE_TOKEN}; lang=en"
        async with http.get(f"{w.url}/k8s/clusters/c-1{PODS}", headers={"Cookie": cookie}) as r:
            assert r.status == 200
        [seen] = w.downstream.requests
        assert [v for n, v in seen.headers if n.lower() == "cookie"] == ["theme=dark; lang=en"]
        assert all("s3cret" not in v for _, v in seen.headers)


async def test_hop_by_hop_response_headers_stay_behind_and_the_rest_come_back():
    async with world() as w:
        _, headers, _ = await fetch(f"{w.url}/k8s/clusters/c-1/version", bearer(ALICE_TOKEN))
        assert headers["X-Downstream"] == "yes"
        assert "X-Secret-Hop" not in headers
        assert "Keep-Alive" not in headers


async def test_a_request_body_streams_through_with_its_length():
    body = bytes(range(256)) * 4096 + b"tail"
    async with world() as w, aiohttp.ClientSession() as http:
        url = f"{w.url}/k8s/clusters/c-1{PODS}"
        async with http.post(
            url, data=io.BytesIO(body), headers={**bearer(ALICE_TOKEN), "Content-Type": "application/json"}
        ) as r:
            assert (await r.json())["body_sha256"] == hashlib.sha256(body).hexdigest()
        [seen] = w.downstream.requests
        assert ("Content-Length", str(len(body))) in seen.headers
        assert seen.method == "POST"


# -- header attacks ---------------------------------------------------------------------------

ATTACKS = {
    "group-only": [("Impersonate-Group", "system:masters")],
    "own-name-plus-masters": [("Impersonate-User", "u-alice"), ("Impersonate-Group", "system:masters")],
    "lower-case-group": [("impersonate-group", "system:masters")],
    "upper-case-group": [("IMPERSONATE-GROUP", "system:masters")],
    "underscore-user": [("Impersonate_User", "u-admin")],
    "uid": [("Impersonate-Uid", "0")],
    "extra-principalid": [("Impersonate-Extra-Principalid", "local://u-admin")],
    "extra-repeated": [("Impersonate-Extra-Username", "admin"), ("Impersonate-Extra-Username", "root")],
    "extra-percent-encoded": [("Impersonate-Extra-%70rincipalid", "local://u-admin")],
    "extra-odd-key": [("Impersonate-Extra-Odd%2Fkey", "x"), ("Impersonate-Extra-", "y")],
    "connection-lists-ours": [
        ("Connection", "Impersonate-User, Impersonate-Group, Authorization"),
        ("Impersonate-Group", "system:masters"),
    ],
    "connection-lists-extras": [
        ("Connection", "impersonate-extra-principalid"),
        ("Connection", "close, Impersonate-Extra-Requesthost"),
        ("Impersonate-Extra-Principalid", "local://u-admin"),
    ],
    "second-authorization": [("Authorization", "Bearer admin-service-account-token")],
    "proxy-authorization": [("Proxy-Authorization", "Bearer admin-service-account-token")],
    "user-in-connection": [("Connection", "Impersonate-User"), ("Impersonate-User", "u-admin")],
    "user-mixed-case": [("iMpErSoNaTe-UsEr", "u-admin")],
    "user-repeated": [("Impersonate-User", "u-admin"), ("Impersonate-User", "u-alice")],
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
async def test_no_client_impersonation_header_reaches_the_cluster(attack):
    async with world() as w, aiohttp.ClientSession() as http:
        headers = [("Authorization", f"Bearer {ALICE_TOKEN}"), *attack]
        async with http.get(f"{w.url}/k8s/clusters/c-1{PODS}", headers=headers) as r:
            status = r.status
            text = await r.text()
        if status == 403:
            # asking to be someone else without a grant: refused before anything is sent
            assert text == "not allowed to impersonate user"
            assert w.downstream.requests == []
        else:
            assert status == 200
            [seen] = w.downstream.requests
            assert identity_headers(seen.headers) == alice_headers(w.url.removeprefix("http://"))


# -- the proxy's own errors -------------------------------------------------------------------


def norman(status: int, code: str, message: str) -> dict[str, object]:
    return {"Code": {"Code": code, "Status": status}, "Message": message, "Cause": None, "FieldName": ""}


def forbidden(cluster: str, user: str) -> dict[str, object]:
    return norman(
        403,
        "Forbidden",
        f'clusters.management.cattle.io "{cluster}" is forbidden: User "{user}" cannot get resource'
        ' "clusters" in API group "management.cattle.io" at the cluster scope',
    )


NORMAN_ERRORS = {
    "no-token": ("/k8s/clusters/c-1/api", {}, forbidden("c-1", "system:unauthenticated")),
    "wrong-token": (
        "/k8s/clusters/c-1/api",
        bearer("token-alice:wrongsecret"),
        forbidden("c-1", "system:unauthenticated"),
    ),
    "basic-scheme-unsupported-here": (
        "/k8s/clusters/c-1/api",
        {"Authorization": "Basic eDp5"},
        forbidden("c-1", "system:unauthenticated"),
    ),
    "no-membership": ("/k8s/clusters/c-1/api", bearer(BOB_TOKEN), forbidden("c-1", "u-bob")),
    "unknown-cluster": (
        "/k8s/clusters/c-nowhere/api",
        bearer(ALICE_TOKEN),
        norman(404, "NotFound", 'clusters.management.cattle.io "c-nowhere" not found'),
    ),
    "unknown-cluster-admin": (
        "/k8s/proxy/c-zzz/api",
        bearer(ADMIN_TOKEN),
        norman(404, "NotFound", 'clusters.management.cattle.io "c-zzz" not found'),
    ),
    "not-provisioned": (
        "/k8s/clusters/c-new/api",
        bearer(ALICE_TOKEN),
        norman(503, "ClusterUnavailable", "cluster not provisioned"),
    ),
    "upper-case-id": (
        "/k8s/clusters/C_1/api",
        bearer(ALICE_TOKEN),
        norman(404, "NotFound", 'clusters.management.cattle.io "C_1" not found'),
    ),
    "empty-id": (
        "/k8s/clusters//api",
        bearer(ALICE_TOKEN),
        norman(404, "NotFound", 'clusters.management.cattle.io "" not found'),
    ),
    "undecodable-id": (
        "/k8s/clusters/%ff%fe/api",
        bearer(ALICE_TOKEN),
        norman(404, "NotFound", 'clusters.management.cattle.io "\\ufffd\\ufffd" not found'),
    ),
}


@pytest.mark.parametrize(("path", "headers", "body"), NORMAN_ERRORS.values(), ids=NORMAN_ERRORS.keys())
async def test_the_proxy_answers_with_rancher_s_status_and_body(path, headers, body):
    async with world() as w, aiohttp.ClientSession() as http:
        async with http.get(aiohttp.client.URL(w.url + path, encoded=True), headers=headers) as r:
            assert r.status == body["Code"]["Status"]  # type: ignore[index]
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert json.loads(await r.text()) == body
        assert w.downstream.requests == []


async def test_an_impersonation_account_failure_is_a_plain_500():
    async with world() as w:
        status, _, text = await fetch(f"{w.url}/k8s/clusters/c-broken/api", bearer(ALICE_TOKEN))
        assert status == 500
        assert text == "unable to create impersonator account: the cluster refused the service account"


async def test_a_disconnected_agent_is_a_plain_500_like_rancher_s():
    async with world(dialer=RefusingDialer()) as w:
        status, _, text = await fetch(f"{w.url}/k8s/clusters/c-1/api", bearer(ALICE_TOKEN))
        assert (status, text) == (500, "error trying to reach service: cluster agent disconnected")


async def test_a_refused_connection_is_a_plain_500_naming_the_address():
    async with world() as w:
        status, _, text = await fetch(f"{w.url}/k8s/clusters/c-gone/api", bearer(ALICE_TOKEN))
        assert status == 500
        assert text.startswith("error trying to reach service: dial tcp 127.0.0.1:9: connect: ")


async def test_dot_segments_are_not_proxied():
    async with world() as w, aiohttp.ClientSession() as http:
        url = aiohttp.client.URL(f"{w.url}/k8s/clusters/c-1/api/%2e%2e/%2e%2e/secret", encoded=True)
        async with http.get(url, headers=bearer(ALICE_TOKEN)) as r:
            assert r.status == 400
        assert w.downstream.requests == []


async def test_no_secret_reaches_the_logs(caplog):
    caplog.set_level("DEBUG", logger="corral")
    async with world(dialer=RefusingDialer()) as w, aiohttp.ClientSession() as http:
        for token in (ALICE_TOKEN, "token-alice:wrongsecret"):
            async with http.get(f"{w.url}/k8s/clusters/c-1/api", headers=bearer(token)) as r:
                await r.read()
    assert caplog.records
    assert "s3cret" not in caplog.text
    assert "wrongsecret" not in caplog.text


# -- client impersonation (kubectl --as) -------------------------------------------------------


async def test_as_user_with_a_grant_reaches_the_cluster_as_that_user():
    async with world() as w, aiohttp.ClientSession() as http:
        w.reviewer.grants |= {("u-alice", "users", "", "u-bob"), ("u-alice", "groups", "", "team-a")}
        w.clusters.members["u-bob"] = {"c-1"}
        headers = [
            ("Authorization", f"Bearer {ALICE_TOKEN}"),
            ("Impersonate-User", "u-bob"),
            ("Impersonate-Group", "team-a"),
            ("Impersonate-Group", "system:cattle:authenticated"),  # alice has it: no review
        ]
        async with http.get(f"{w.url}/k8s/clusters/c-1{PODS}", headers=headers) as r:
            assert r.status == 200
        [seen] = w.downstream.requests
        assert identity_headers(seen.headers) == [
            ("Authorization", "Bearer sa-token-u-bob"),
            ("Impersonate-User", "u-bob"),
            ("Impersonate-Group", "team-a"),
            ("Impersonate-Group", "system:cattle:authenticated"),
            ("Impersonate-Group", "system:authenticated"),
        ]
        assert [(r.resource, r.name, c) for r, c in w.reviewer.reviews] == [
            ("users", "u-bob", None),
            ("groups", "team-a", None),
        ]
        assert all(
            r.groups == ("system:authenticated", "system:cattle:authenticated", "local://g-dev")
            for r, _ in w.reviewer.reviews
        )


async def test_as_user_extras_are_reviewed_per_value_and_forwarded():
    async with world(settings=ProxySettings(sar_scope="downstream")) as w, aiohttp.ClientSession() as http:
        w.reviewer.grants |= {
            ("u-alice", "users", "", "u-bob"),
            ("u-alice", "userextras/scopes", "", "view"),
            ("u-alice", "userextras/scopes", "", "edit"),
            ("u-alice", "userextras/requesttokenid", "", "token-bob"),
        }
        w.clusters.members["u-bob"] = {"c-1"}
        headers = [
            ("Authorization", f"Bearer {ALICE_TOKEN}"),
            ("Impersonate-User", "u-bob"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-%73copes", "edit"),
            ("Impersonate-Extra-Requesttokenid", "token-bob"),
        ]
        async with http.get(f"{w.url}/k8s/clusters/c-1{PODS}", headers=headers) as r:
            assert r.status == 200
        [seen] = w.downstream.requests
        assert identity_headers(seen.headers)[2:] == [
            ("Impersonate-Group", "system:authenticated"),
            ("Impersonate-Extra-Requesttokenid", "token-bob"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-Scopes", "edit"),
        ]
        assert {c for _, c in w.reviewer.reviews} == {"c-1"}


REFUSALS = {
    "user": ([("Impersonate-User", "u-admin")], "not allowed to impersonate user"),
    "group": (
        [("Impersonate-User", "u-bob"), ("Impersonate-Group", "system:masters")],
        "not allowed to impersonate group",
    ),
    "extra": (
        [("Impersonate-User", "u-bob"), ("Impersonate-Extra-Scopes", "admin")],
        "not allowed to impersonate extras",
    ),
    "extra-key-with-slash": (
        [("Impersonate-User", "u-bob"), ("Impersonate-Extra-A%2Fb", "x")],
        "error checking if user can impersonate extras: extra key 'a/b' must not contain '/'",
    ),
    "token-of-someone-else": (
        [("Impersonate-User", "u-bob"), ("Impersonate-Extra-Requesttokenid", "token-alice")],
        "request token user does not match impersonation user",
    ),
    "two-token-ids": (
        [
            ("Impersonate-User", "u-bob"),
            ("Impersonate-Extra-Requesttokenid", "token-bob"),
            ("Impersonate-Extra-Requesttokenid", "token-bob"),
        ],
        "multiple requesttokenid values",
    ),
    "service-account": (
        [("Impersonate-User", "system:serviceaccount:kube-system:admin")],
        "not allowed to impersonate service account",
    ),
    "malformed-service-account": (
        [("Impersonate-User", "system:serviceaccount:only-one-part")],
        "error checking if user can impersonate service account: invalid service account username format:"
        " expected system:serviceaccount:<namespace>:<name>, but got 'system:serviceaccount:only-one-part'",
    ),
}


@pytest.mark.parametrize(("asked", "message"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_refused_impersonation_is_a_plain_403_and_nothing_is_sent(asked, message):
    async with world() as w, aiohttp.ClientSession() as http:
        w.reviewer.grants |= {
            ("u-alice", "users", "", "u-bob"),
            ("u-alice", "userextras/requesttokenid", "", "token-alice"),
            ("u-alice", "userextras/requesttokenid", "", "token-bob"),
        }
        async with http.get(
            f"{w.url}/k8s/clusters/c-1{PODS}", headers=[("Authorization", f"Bearer {ALICE_TOKEN}"), *asked]
        ) as r:
            assert (r.status, await r.text()) == (403, message)
        assert w.downstream.requests == []
        assert w.accounts.asked == []


async def test_a_failing_review_is_a_403_that_says_so():
    async with world() as w, aiohttp.ClientSession() as http:
        w.reviewer.fail = True
        headers = [("Authorization", f"Bearer {ALICE_TOKEN}"), ("Impersonate-User", "u-bob")]
        async with http.get(f"{w.url}/k8s/clusters/c-1/api", headers=headers) as r:
            assert r.status == 403
            assert (
                await r.text()
                == "error checking if user can impersonate user: the management cluster is unreachable"
            )


async def test_as_a_service_account_sends_its_own_token_and_no_impersonation():
    async with world() as w, aiohttp.ClientSession() as http:
        w.reviewer.grants.add(("u-alice", "serviceaccounts", "team-a", "builder"))
        headers = [
            ("Authorization", f"Bearer {ALICE_TOKEN}"),
            ("Impersonate-User", "system:serviceaccount:team-a:builder"),
            ("Impersonate-Group", "system:masters"),
            ("Impersonate-Extra-Scopes", "all"),
        ]
        async with http.get(f"{w.url}/k8s/clusters/c-1{PODS}", headers=headers) as r:
            assert r.status == 200
        [seen] = w.downstream.requests
        assert identity_headers(seen.headers) == [("Authorization", "Bearer tokenrequest-team-a-builder")]
        assert w.sa_tokens.asked == [("c-1", "team-a", "builder", 600)]
        assert w.accounts.asked == []


async def test_a_failed_token_request_is_a_plain_500():
    async with world() as w, aiohttp.ClientSession() as http:
        w.reviewer.grants.add(("u-alice", "serviceaccounts", "team-a", "builder"))
        w.sa_tokens.fail = True
        headers = [
            ("Authorization", f"Bearer {ALICE_TOKEN}"),
            ("Impersonate-User", "system:serviceaccount:team-a:builder"),
        ]
        async with http.get(f"{w.url}/k8s/clusters/c-1/api", headers=headers) as r:
            assert (r.status, await r.text()) == (
                500,
                "unable to create token for impersonated ServiceAccount: serviceaccounts not found",
            )


async def test_request_extras_can_be_left_out_like_rancher_before_2_11():
    async with world(settings=ProxySettings(request_extras=False)) as w, aiohttp.ClientSession() as http:
        async with http.get(f"{w.url}/k8s/clusters/c-1/api", headers=bearer(ALICE_TOKEN)) as r:
            assert r.status == 200
        [seen] = w.downstream.requests
        assert identity_headers(seen.headers) == alice_headers("")[:-2]


# -- trace -------------------------------------------------------------------------------------


async def test_each_request_reports_a_request_completed_event():
    async with world() as w, aiohttp.ClientSession() as http:
        for path, headers in (
            (f"{PODS}", bearer(ALICE_TOKEN)),
            (f"{PODS}/web-0", bearer(ALICE_TOKEN)),
            (f"{PODS}?watch=true", bearer(ALICE_TOKEN)),
            ("/api/v1/namespaces/default", {}),
        ):
            async with http.get(f"{w.url}/k8s/clusters/c-1{path}", headers=headers) as r:
                await r.read()
        async with http.delete(f"{w.url}/k8s/clusters/c-new{PODS}/web-0", headers=bearer(ALICE_TOKEN)) as r:
            await r.read()
    got = [(e.path, e.cluster, e.user, e.verb, e.status) for e in w.events if isinstance(e, RequestCompleted)]
    assert got == [
        ("proxy", "c-1", "u-alice", "list", 200),
        ("proxy", "c-1", "u-alice", "get", 200),
        ("proxy", "c-1", "u-alice", "watch", 200),
        ("proxy", "c-1", "", "get", 403),
        ("proxy", "c-new", "u-alice", "delete", 503),
    ]
    assert all(e.latency_seconds >= 0 for e in w.events if isinstance(e, RequestCompleted))


async def test_an_identity_with_a_control_character_is_never_sent():
    async with world() as w:
        w.proxy.authenticator.users["token-evil:s3cretevil"] = UserInfo(  # type: ignore[attr-defined]
            name="u-evil", groups=("system:authenticated\r\nImpersonate-Group: system:masters",)
        )
        w.clusters.members["u-evil"] = {"c-1"}
        status, _, text = await fetch(f"{w.url}/k8s/clusters/c-1/api", bearer("token-evil:s3cretevil"))
        assert (status, text) == (500, "an identity or credential value contains a control character")
        assert w.downstream.requests == []


VERBS = [
    ("GET", "/api/v1/pods", "", "list"),
    ("GET", "/api/v1/namespaces", "", "list"),
    ("GET", "/api/v1/namespaces/default", "", "get"),
    ("GET", "/api/v1/namespaces/default/pods", "watch=1", "watch"),
    ("GET", "/apis/apps/v1/namespaces/default/deployments/web", "", "get"),
    ("GET", "/apis/apps/v1/watch/namespaces/default/deployments", "", "watch"),
    ("GET", "/version", "", "get"),
    ("POST", "/api/v1/namespaces/default/pods/web-0/exec", "command=sh", "create"),
    ("PUT", "/api/v1/namespaces/default/configmaps/x", "", "update"),
    ("PATCH", "/api/v1/nodes/n1", "", "patch"),
    ("DELETE", "/api/v1/namespaces/default/pods", "", "deletecollection"),
    ("DELETE", "/api/v1/namespaces/default/pods/web-0", "", "delete"),
]


@pytest.mark.parametrize(("method", "path", "query", "verb"), VERBS)
def test_the_trace_names_the_kubernetes_verb(method, path, query, verb):
    assert request_verb(method, path, query) == verb


class DroppingDialer(DirectDialer):
    """Hands out connections that the far end closes unanswered, ``drops`` times, then dials directly:
    a session that died between the dial and the answer."""

    def __init__(self, drops: int) -> None:
        super().__init__(timeout_seconds=5)
        self.drops = drops
        self.dials = 0

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        self.dials += 1
        if self.dials > self.drops:
            return await super().dial(cluster, host, port)
        ours, theirs = socket.socketpair()
        theirs.close()
        ours.setblocking(False)
        return ours


# aiohttp sends an idempotent request once more by itself when its connection drops unanswered; the
# fast mode adds one more round of that, so a read survives up to three dead connections.
@pytest.mark.parametrize(
    ("retry", "drops", "status", "dials"),
    [(False, 1, 200, 2), (False, 2, 500, 2), (True, 2, 200, 3), (True, 3, 200, 4), (True, 4, 500, 4)],
)
async def test_the_fast_mode_sends_a_read_whose_connection_dropped_once_more(retry, drops, status, dials):
    dialer = DroppingDialer(drops)
    async with world(dialer=dialer, settings=ProxySettings(retry_idempotent=retry)) as w:
        got, _, _ = await fetch(f"{w.url}/k8s/clusters/c-1{PODS}", bearer(ALICE_TOKEN))
        assert got == status
        assert dialer.dials == dials


async def test_the_fast_mode_never_sends_a_write_twice():
    dialer = DroppingDialer(1)
    async with world(dialer=dialer, settings=ProxySettings(retry_idempotent=True)) as w:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{w.url}/k8s/clusters/c-1{PODS}", headers=bearer(ALICE_TOKEN), data=b"{}") as r,
        ):
            assert r.status == 500
        assert dialer.dials == 1
        assert w.downstream.requests == []


async def _answers(url: str, paths: list[str]) -> list[tuple[int, str]]:
    out = []
    async with aiohttp.ClientSession() as http:
        for path in paths:
            async with http.get(url + path, headers=bearer(ALICE_TOKEN)) as r:
                out.append((r.status, await r.text()))
    return out


async def test_the_proxy_served_ahead_of_the_router_answers_as_through_it_and_leaves_other_paths_to_the_app():
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    paths = [
        f"/k8s/clusters/c-1{PODS}?limit=5",
        "/k8s/clust%65rs/c-1/api",
        "/k8s/clusters/%2e%2e/healthz",
        "/k8s/clusters/../healthz",
        "/k8s/proxy/c-1/api",
        "/k8s/clusters/c-nowhere/api",
        "/k8s//clusters/c-1/api",
        "/healthz",
    ]
    async with world() as w:
        answers = {}
        for first in (False, True):
            app = web.Application()
            w.proxy.add_routes(app)
            app.router.add_get("/healthz", healthz)
            async with serve(app, proxy=w.proxy if first else None) as url:
                answers[first] = await _answers(url, paths)
        assert answers[True] == answers[False]
        assert answers[True][0][0] == 200
        assert answers[True][-1] == (200, "ok")
        assert [s for s, _ in answers[True]] != [200] * len(paths)


async def test_an_expect_100_continue_body_reaches_the_cluster_through_the_proxy_served_first():
    body = b"x" * 5000
    async with world() as w, aiohttp.ClientSession() as http:
        url = f"{w.url}/k8s/clusters/c-1{PODS}"
        async with http.post(url, data=body, headers=bearer(ALICE_TOKEN), expect100=True) as r:
            assert r.status == 200
            answer = await r.json()
        assert answer["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert w.downstream.requests[-1].body == body

"""v3 API shapes and the proxy's own error bodies, compared byte for byte with what Go writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.server.norman import (
    DEFAULT_LIMIT,
    ERROR_CODES,
    Pagination,
    api_error,
    api_error_text,
    collection,
    go_json,
    must_authenticate,
    paginate,
    parse_limit,
    query_link,
    resource,
    resource_links,
    sort_info,
    untagged_api_error,
)


def test_go_json_escapes_like_encoding_json() -> None:
    assert go_json({"a": "<b>&c"}) == b'{"a":"\\u003cb\\u003e\\u0026c"}\n'
    assert go_json({"a": "<b>&c"}, escape_html=False) == b'{"a":"<b>&c"}\n'
    assert go_json(["é", "\u2028", "\x01", "\b\f\n\r\t", '"\\']) == (
        '["é","\\u2028","\\u0001","\\b\\f\\n\\r\\t","\\"\\\\"]\n'.encode()
    )
    assert go_json({"b": 1, "a": None, "c": [True, 1.5]}) == b'{"b":1,"a":null,"c":[true,1.5]}\n'


def test_proxy_401_body_is_rancher_s_with_a_string_status() -> None:
    assert go_json(must_authenticate(), escape_html=False) == (
        b'{"type":"error","status":"401","message":"Unauthorized 401: must authenticate"}\n'
    )


def test_cluster_router_bodies_are_untagged_api_errors() -> None:
    body = untagged_api_error(code="ClusterUnavailable", status=503, message="cluster not provisioned")
    assert go_json(body) == (
        b'{"Code":{"Code":"ClusterUnavailable","Status":503},"Message":"cluster not provisioned",'
        b'"Cause":null,"FieldName":""}\n'
    )
    forbidden = untagged_api_error(
        code="Forbidden",
        status=403,
        message='clusters.management.cattle.io "c-x" is forbidden: User "system:unauthenticated" cannot get',
    )
    assert json.loads(go_json(forbidden))["Message"].startswith('clusters.management.cattle.io "c-x"')
    assert b'\\"c-x\\"' in go_json(forbidden)


def test_v3_api_error_has_a_numeric_status() -> None:
    body = api_error(code="NotFound", message='clusters.management.cattle.io "c-x" not found')
    assert go_json(body) == (
        b'{"baseType":"error","code":"NotFound",'
        b'"message":"clusters.management.cattle.io \\"c-x\\" not found","status":404,"type":"error"}\n'
    )
    with_field = api_error(code="MissingRequired", message="required", field_name="name")
    assert list(with_field) == ["baseType", "code", "fieldName", "message", "status", "type"]
    assert with_field["status"] == 422
    assert api_error(code="Gone", message="x", status=410)["status"] == 410
    with pytest.raises(KeyError, match="Gone"):
        api_error(code="Gone", message="x")


def test_error_codes_are_norman_s() -> None:
    assert ERROR_CODES["MethodNotAllow"] == 405
    assert ERROR_CODES["ActionNotAvailable"] == 404
    assert ERROR_CODES["ClusterUnavailable"] == 503
    assert set(ERROR_CODES.values()) == {401, 403, 404, 405, 409, 422, 500, 503}


def test_api_error_text() -> None:
    assert api_error_text(code="Unauthorized", status=401, message="must authenticate") == (
        "Unauthorized 401: must authenticate"
    )
    assert api_error_text(code="MissingRequired", status=422, message="m", field_name="name") == (
        "name=MissingRequired 422: m"
    )


def test_resource_is_a_sorted_map() -> None:
    links = resource_links(
        collection_url="https://r/v3/tokens", id_="token-abcde", can_update=False, can_delete=True
    )
    body = resource(
        type_="token",
        id_="token-abcde",
        values={"userId": "u-1", "labels": {"z": "1", "a": "2"}, "enabled": True},
        links=links,
        actions={},
    )
    assert list(body) == ["baseType", "enabled", "id", "labels", "links", "type", "userId"]
    assert list(body["labels"]) == ["a", "z"]
    assert body["links"] == {
        "remove": "https://r/v3/tokens/token-abcde",
        "self": "https://r/v3/tokens/token-abcde",
    }
    assert (body["type"], body["baseType"]) == ("token", "token")


def test_resource_without_id_and_with_action_links() -> None:
    body = resource(type_="cluster", values={}, actions={"generateKubeconfig": "u"}, action_links=True)
    assert "id" not in body
    assert "links" not in body
    assert body["actionLinks"] == {"generateKubeconfig": "u"}
    assert resource(type_="x", values={}, base_type="y")["baseType"] == "y"


def test_collection_is_in_struct_order() -> None:
    items = [resource(type_="token", id_=f"token-{i}", values={}) for i in range(3)]
    page, pagination = paginate(items)
    body = collection(
        resource_type="token",
        self_url="https://r/v3/tokens",
        data=page,
        create_types={"token": "https://r/v3/tokens"},
        pagination=pagination.to_json(),
        sort=sort_info(request_url="https://r/v3/tokens", query={}),
    )
    assert list(body) == [
        "type",
        "links",
        "createTypes",
        "actions",
        "pagination",
        "sort",
        "resourceType",
        "data",
    ]
    assert body["actions"] == {}
    assert body["pagination"] == {"limit": 1000, "total": 3}
    assert body["sort"] == {"order": "asc", "reverse": "https://r/v3/tokens?order=desc"}
    bare = collection(resource_type="token", self_url="u", data=[])
    assert bare == {
        "type": "collection",
        "links": {"self": "u"},
        "actions": {},
        "resourceType": "token",
        "data": [],
    }


def test_query_link_encodes_like_go_url_values() -> None:
    query = {"sort": ["name"], "marker": ["m"], "a b": ["x/y", "1"]}
    assert query_link("https://r/v3/users", query, order="asc", marker=None) == (
        "https://r/v3/users?a+b=x%2Fy&a+b=1&order=asc&sort=name"
    )


@pytest.mark.parametrize(
    ("text", "limit"),
    [(None, 1000), ("", 1000), ("5", 5), ("+5", 5), ("0", 0), ("-1", 10000), ("20000", 10000), ("-2", 1000),
     (" 5", 1000), ("5_0", 1000), ("x", 1000), ("99999999999999999999", 1000)],
)  # fmt: skip
def test_parse_limit(text: str | None, limit: int) -> None:
    assert parse_limit(text) == limit


def ids(n: int) -> list[dict[str, Any]]:
    return [{"id": f"i{k:03d}"} for k in range(n)]


def test_pagination_fields_of_a_middle_page() -> None:
    page, p = paginate(ids(10), limit=3, marker="i004")
    assert [item["id"] for item in page] == ["i004", "i005", "i006"]
    assert p == Pagination(
        limit=3,
        marker="i004",
        total=10,
        first="i000",
        previous="i001",
        next="i007",
        last="i007",
        partial=True,
    )
    assert p.to_json(request_url="https://r/v3/x", query={"limit": ["3"]}) == {
        "marker": "i004",
        "first": "https://r/v3/x?limit=3&marker=i000",
        "previous": "https://r/v3/x?limit=3&marker=i001",
        "next": "https://r/v3/x?limit=3&marker=i007",
        "last": "https://r/v3/x?limit=3&marker=i007",
        "limit": 3,
        "total": 10,
        "partial": True,
    }


def test_unknown_marker_starts_at_the_first_item_and_empty_lists_have_a_total() -> None:
    page, p = paginate(ids(2), marker="nope")
    assert len(page) == 2
    assert not p.partial
    assert paginate([], limit=5) == ([], Pagination(limit=5, total=0))
    assert Pagination().to_json() == {"limit": DEFAULT_LIMIT}


@given(n=st.integers(min_value=0, max_value=40), limit=st.integers(min_value=1, max_value=12))
def test_following_next_visits_every_item_once(n: int, limit: int) -> None:
    items = ids(n)
    seen: list[dict[str, Any]] = []
    marker = ""
    while True:
        page, p = paginate(items, limit=limit, marker=marker)
        assert p.total == n
        assert len(page) <= limit
        assert p.partial == (n > limit)
        seen.extend(page)
        if not p.next:
            break
        marker = p.next
    assert seen == items

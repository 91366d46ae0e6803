"""The JSON shapes of Rancher's v3 API (norman) and of the error bodies its proxy writes itself.

Pure functions returning dicts in the key order Go writes them (maps sorted, structs in field order),
and `go_json` to serialise them as Go's ``json.Encoder`` does (compact, HTML-escaped, newline-terminated),
so a body can be compared byte for byte. Sources: norman ``api/writer``, ``types``, ``httperror``,
``parse/collection.go``, ``api/handler/query.go``; Rancher ``pkg/auth/util`` and ``pkg/clusterrouter``.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LIMIT",
    "ERROR_CODES",
    "MAX_LIMIT",
    "Pagination",
    "api_error",
    "api_error_text",
    "auth_error",
    "collection",
    "go_json",
    "must_authenticate",
    "paginate",
    "parse_limit",
    "query_link",
    "resource",
    "resource_links",
    "sort_info",
    "untagged_api_error",
]

ERROR_CODES: Final[Mapping[str, int]] = {
    "Unauthorized": 401,
    "PermissionDenied": 403,
    "NotFound": 404,
    "MethodNotAllow": 405,  # sic: norman's spelling
    "Conflict": 409,
    "InvalidDateFormat": 422,
    "InvalidFormat": 422,
    "InvalidReference": 422,
    "NotNullable": 422,
    "NotUnique": 422,
    "MinLimitExceeded": 422,
    "MaxLimitExceeded": 422,
    "MinLengthExceeded": 422,
    "MaxLengthExceeded": 422,
    "InvalidOption": 422,
    "InvalidCharacters": 422,
    "MissingRequired": 422,
    "InvalidCSRFToken": 422,
    "InvalidAction": 422,
    "InvalidBodyContent": 422,
    "InvalidType": 422,
    "ActionNotAvailable": 404,
    "InvalidState": 422,
    "ServerError": 500,
    "ClusterUnavailable": 503,
}
"""norman's httperror codes and their HTTP status."""

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10000

_GO_INT: Final = re.compile(r"[+-]?[0-9]+")
_HTML_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def go_json(value: Any, *, escape_html: bool = True) -> bytes:
    """Serialise like Go's ``json.NewEncoder(w).Encode``: compact, UTF-8, a trailing newline.

    Key order is kept as given (build dicts with `resource` & co. for Go's order). Like Go, ``<``,
    ``>`` and ``&`` become ``\\u003c`` etc. unless ``escape_html`` is off, and U+2028/U+2029 are always
    escaped. These characters occur only inside strings, so replacing them in the text is exact.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if escape_html:
        for char, escaped in _HTML_ESCAPES.items():
            text = text.replace(char, escaped)
    return (text + "\n").encode("utf-8")


def _go_map(value: Any) -> Any:
    """Sort every dict's keys (Go marshals maps sorted), recursing into lists."""
    if isinstance(value, Mapping):
        return {key: _go_map(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_go_map(item) for item in value]
    return value


def api_error_text(*, code: str, status: int, message: str, field_name: str = "") -> str:
    """norman ``APIError.Error()``: ``"<Code> <Status>: <message>"`` (``<field>=`` first when set)."""
    prefix = f"{field_name}=" if field_name else ""
    return f"{prefix}{code} {status}: {message}"


def api_error(*, code: str, message: str, status: int | None = None, field_name: str = "") -> dict[str, Any]:
    """A v3 API error body as norman's error handler writes it; ``status`` is a number here.

    ``status`` defaults to the code's own (`ERROR_CODES`). Example:
    ``{"baseType":"error","code":"NotFound","message":"...","status":404,"type":"error"}``.
    """
    if status is None:
        if code not in ERROR_CODES:
            raise KeyError(f"unknown norman error code {code!r}; pass status= for a custom one")
        status = ERROR_CODES[code]
    values: dict[str, Any] = {"code": code, "message": message, "status": status}
    if field_name:
        values["fieldName"] = field_name
    return resource(type_="error", values=values)


def auth_error(*, status: int, message: str) -> dict[str, Any]:
    """The body of Rancher's auth ``ReturnHTTPError``: ``status`` is a *string* there, ``"401"``.

    Rancher encodes it without HTML escaping: serialise with ``go_json(..., escape_html=False)``.
    """
    return {"type": "error", "status": str(status), "message": message}


def must_authenticate() -> dict[str, Any]:
    """The proxy's 401 body when the request carries no valid token."""
    return auth_error(
        status=401, message=api_error_text(code="Unauthorized", status=401, message="must authenticate")
    )


def untagged_api_error(*, code: str, status: int, message: str, field_name: str = "") -> dict[str, Any]:
    """norman's APIError encoded without JSON tags, as the cluster router writes it (503, 404, 403).

    ``{"Code":{"Code":"ClusterUnavailable","Status":503},"Message":"...","Cause":null,"FieldName":""}``;
    the router sets its content type after the status line, so it is not ``application/json``.
    """
    return {
        "Code": {"Code": code, "Status": status},
        "Message": message,
        "Cause": None,
        "FieldName": field_name,
    }


def resource(
    *,
    type_: str,
    values: Mapping[str, Any],
    id_: str = "",
    links: Mapping[str, str] | None = None,
    actions: Mapping[str, str] | None = None,
    base_type: str = "",
    action_links: bool = False,
) -> dict[str, Any]:
    """One resource as norman's RawResource writes it (a Go map: keys sorted at every level).

    ``id`` only when non-empty; ``type``; ``baseType`` (the schema's, which defaults to its type);
    ``links`` and ``actions`` only when non-empty, the latter named ``actionLinks`` when the client
    sent ``X-API-Action-Links``.
    """
    data = dict(values)
    if id_:
        data["id"] = id_
    data["type"] = type_
    data["baseType"] = base_type or type_
    if links:
        data["links"] = dict(links)
    if actions:
        data["actionLinks" if action_links else "actions"] = dict(actions)
    return dict(_go_map(data))


def resource_links(*, collection_url: str, id_: str, can_update: bool, can_delete: bool) -> dict[str, str]:
    """``self``, and ``update``/``remove`` (the same URL) when the caller may do those."""
    self_url = f"{collection_url}/{id_}"
    links = {"self": self_url}
    if can_update:
        links["update"] = self_url
    if can_delete:
        links["remove"] = self_url
    return links


def query_link(request_url: str, query: Mapping[str, Sequence[str]], **changes: str | None) -> str:
    """``request_url?<query with changes>`` encoded like Go's url.Values.Encode (keys sorted).

    A change to None deletes the key. Used for sort, reverse-sort and marker links.
    """
    values = {key: list(vals) for key, vals in query.items()}
    for key, change in changes.items():
        values.pop(key, None)
        if change is not None:
            values[key] = [change]
    encoded = "&".join(
        f"{urllib.parse.quote_plus(key, safe='')}={urllib.parse.quote_plus(val, safe='')}"
        for key in sorted(values)
        for val in values[key]
    )
    return f"{request_url}?{encoded}"


def sort_info(
    *,
    request_url: str,
    query: Mapping[str, Sequence[str]],
    order: str = "asc",
    name: str = "",
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A collection's ``sort``: name and order, the link that reverses the order, per-field links."""
    reverse = query_link(request_url, query, order="desc" if order == "asc" else "asc", marker=None)
    info: dict[str, Any] = {}
    if name:
        info["name"] = name
    if order:
        info["order"] = order
    info["reverse"] = reverse
    if links:
        info["links"] = dict(links)
    return info


def parse_limit(text: str | None) -> int:
    """The page size from ``?limit=``: 1000 by default; -1 or above 10000 means 10000; junk means default."""
    if not text or not _GO_INT.fullmatch(text) or abs(int(text)) >= 1 << 63:
        return DEFAULT_LIMIT
    limit = int(text)
    if limit > MAX_LIMIT or limit == -1:
        return MAX_LIMIT
    return limit if limit >= 0 else DEFAULT_LIMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class Pagination:
    """A collection's ``pagination``; the marker fields are resource IDs until `to_json` makes links."""

    limit: int = DEFAULT_LIMIT
    marker: str = ""
    total: int | None = None
    first: str = ""
    previous: str = ""
    next: str = ""
    last: str = ""
    partial: bool = False

    def to_json(
        self, *, request_url: str = "", query: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, Any]:
        """Go's field order and omitempty; with ``request_url``, markers of a partial page become links."""

        def link(marker: str) -> str:
            if marker and self.partial and request_url:
                return query_link(request_url, query or {}, marker=marker)
            return marker

        data: dict[str, Any] = {}
        for key, value in (
            ("marker", self.marker),
            ("first", link(self.first)),
            ("previous", link(self.previous)),
            ("next", link(self.next)),
            ("last", link(self.last)),
        ):
            if value:
                data[key] = value
        data["limit"] = self.limit
        if self.total is not None:
            data["total"] = self.total
        if self.partial:
            data["partial"] = True
        return data


def paginate(
    items: Sequence[Mapping[str, Any]], *, limit: int = DEFAULT_LIMIT, marker: str = ""
) -> tuple[list[Mapping[str, Any]], Pagination]:
    """norman's ApplyPagination over items already filtered and sorted: the page and its pagination.

    The page starts at the item whose ``id`` is ``marker`` (or at the first), holds ``limit`` items and
    names the previous, next, first and last pages by the ID they start at.
    """
    limit = max(limit, 0)
    total = len(items)
    if not items:
        return [], Pagination(limit=limit, marker=marker, total=0)
    start = next((i for i, item in enumerate(items) if item.get("id") == marker), 0) if marker else 0
    previous_index = max(start - limit, 0)
    next_index = min(start + limit, total)
    partial = start > 0 or next_index < total
    last_index = total - limit

    def id_at(index: int) -> str:
        value = items[index].get("id")
        return value if isinstance(value, str) else ""

    pagination = Pagination(
        limit=limit,
        marker=marker,
        total=total,
        previous=id_at(previous_index) if previous_index < start else "",
        next=id_at(next_index) if start < next_index < total else "",
        first=id_at(0) if partial else "",
        last=id_at(last_index) if partial and 0 < last_index < total else "",
        partial=partial,
    )
    return list(items[start:next_index]), pagination


def collection(
    *,
    resource_type: str,
    self_url: str,
    data: Sequence[Mapping[str, Any]],
    create_types: Mapping[str, str] | None = None,
    actions: Mapping[str, str] | None = None,
    pagination: Mapping[str, Any] | None = None,
    sort: Mapping[str, Any] | None = None,
    filters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A collection in norman's struct order: type, links, createTypes, actions, pagination, sort,
    filters, resourceType, data. ``createTypes`` and ``filters`` appear only when non-empty (Rancher sends
    ``createTypes`` on a GET by a caller who may create); ``actions`` is always there, possibly ``{}``.
    """
    body: dict[str, Any] = {"type": "collection", "links": {"self": self_url}}
    if create_types:
        body["createTypes"] = _go_map(create_types)
    body["actions"] = _go_map(actions or {})
    if pagination is not None:
        body["pagination"] = dict(pagination)
    if sort is not None:
        body["sort"] = dict(sort)
    if filters:
        body["filters"] = _go_map(filters)
    body["resourceType"] = resource_type
    body["data"] = [dict(item) for item in data]
    return body

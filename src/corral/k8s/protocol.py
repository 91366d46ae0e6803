"""The shapes of Kubernetes API requests that the sync and async clients share.

Headers, content types, server-side apply, access reviews and watch streams are the same whichever
event model carries them; keeping them here means the two clients differ only in how bytes move.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.k8s.errors import api_error

JSON = dict[str, Any]
Header = tuple[str, str]
Query = list[tuple[str, str]]

#: The field manager corral's server-side applies are recorded under.
FIELD_MANAGER = "corral"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = {"merge": MERGE_PATCH, "strategic": STRATEGIC_PATCH, "json": JSON_PATCH}
USER_AGENT = "corral"

#: The longest single watch request; the stream is reopened (from the last resourceVersion) after it.
WATCH_WINDOW_SECONDS = 300

#: Event types a watch yields; BOOKMARK only moves the resourceVersion, ERROR raises.
WATCH_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})


@dataclass(frozen=True, slots=True)
class Response:
    """Status and decoded JSON body (``{}`` when empty, ``{"text": ...}`` when not JSON)."""

    status: int
    body: JSON


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """One request, ready for either transport."""

    method: str
    path: str
    query: Query
    headers: list[Header]
    body: Any = None


def prepare(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: Iterable[Header] = (),
    query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    identity: Iterable[Header] = (),
) -> Prepared:
    """Split a query off ``path``, add the JSON headers, the identity headers and a content type."""
    method = method.upper()
    bare, _, inline = path.partition("?")
    if not bare.startswith("/"):
        raise ValueError(f"{method} {bare!r}: an API path starts with '/'")
    pairs: Query = urllib.parse.parse_qsl(inline, keep_blank_values=True) if inline else []
    if query:
        items = query.items() if isinstance(query, Mapping) else query
        pairs += [(str(k), _query_value(v)) for k, v in items]
    given = [(name, value) for name, value in headers]
    names = {name.lower() for name, _ in given}
    all_headers: list[Header] = []
    if "accept" not in names:
        all_headers.append(("Accept", "application/json"))
    if "user-agent" not in names:
        all_headers.append(("User-Agent", USER_AGENT))
    if body is not None and "content-type" not in names:
        all_headers.append(("Content-Type", MERGE_PATCH if method == "PATCH" else "application/json"))
    all_headers += [*given, *identity]
    return Prepared(method=method, path=bare, query=pairs, headers=all_headers, body=body)


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_request(
    collection: str, obj: Mapping[str, Any], *, force: bool, field_manager: str
) -> tuple[str, Query, list[Header]]:
    """Path, query and headers of a server-side apply of ``obj`` into ``collection``.

    Server-side apply needs the full identity of the object in the body: apiVersion, kind and
    metadata.name (and it PATCHes the object's own path, creating it when missing).
    """
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    missing = [key for key in ("apiVersion", "kind") if not obj.get(key)]
    if not name:
        missing.append("metadata.name")
    if missing:
        raise ValueError(
            f"apply into {collection}: the object needs {', '.join(missing)} (server-side apply)"
        )
    query: Query = [("fieldManager", field_manager)]
    if force:
        query.append(("force", "true"))
    return f"{collection.rstrip('/')}/{name}", query, [("Content-Type", APPLY_PATCH)]


def patch_headers(kind: str) -> list[Header]:
    try:
        return [("Content-Type", PATCH_TYPES[kind])]
    except KeyError:
        raise ValueError(f"unknown patch type {kind!r}; choose one of: {', '.join(PATCH_TYPES)}") from None


def resource_attributes(verb: str, resource: str, namespace: str, group: str, name: str) -> dict[str, str]:
    attributes = {"verb": verb, "resource": resource, "group": group, "namespace": namespace, "name": name}
    return {k: v for k, v in attributes.items() if v}


SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
SELF_SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def subject_access_review(user: str, groups: Sequence[str], attributes: Mapping[str, str]) -> JSON:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": list(groups), "resourceAttributes": dict(attributes)},
    }


def self_subject_access_review(attributes: Mapping[str, str]) -> JSON:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": dict(attributes)},
    }


def allowed(review: Mapping[str, Any]) -> bool:
    status = review.get("status")
    return bool(status.get("allowed", False)) if isinstance(status, Mapping) else False


def selectors(label_selector: str, field_selector: str) -> Query:
    query: Query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


@dataclass(slots=True)
class WatchCursor:
    """Where a watch stands: the resourceVersion to resume from, moved by every event and bookmark.

    A watch stream that ends (the apiserver closes them after its timeout) is reopened from here.
    An ERROR event raises its ``Status`` as a typed error: 410 is `GoneError`, after which the
    caller lists again and watches from the list's resourceVersion.
    """

    path: str
    resource_version: str = ""
    selectors: Query = field(default_factory=list)

    def query(self, timeout_seconds: int) -> Query:
        query: Query = [("watch", "true"), ("allowWatchBookmarks", "true"), *self.selectors]
        if self.resource_version:
            query.append(("resourceVersion", self.resource_version))
        query.append(("timeoutSeconds", str(max(1, timeout_seconds))))
        return query

    def event(self, line: bytes | str) -> tuple[str, JSON] | None:
        """The (type, object) of one line of the stream; None for a bookmark or a blank line."""
        if not line.strip():
            return None
        try:
            event = json.loads(line)
            kind, obj = str(event["type"]), event["object"]
        except (ValueError, KeyError, TypeError) as e:
            raise api_error("WATCH", self.path, 500, {"reason": "BadWatchEvent", "message": str(e)}) from e
        if not isinstance(obj, dict):
            raise api_error("WATCH", self.path, 500, {"reason": "BadWatchEvent", "message": "not an object"})
        if kind == "ERROR":
            raise api_error("WATCH", self.path, 0, obj)
        version = obj.get("metadata", {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind == "BOOKMARK":
            return None
        if kind not in WATCH_EVENTS:
            raise api_error("WATCH", self.path, 500, {"reason": "BadWatchEvent", "message": f"type {kind}"})
        return kind, obj


def deadline(timeout_seconds: float | None) -> float | None:
    """The monotonic time a watch with this timeout ends (None: when stopped)."""
    return None if timeout_seconds is None else time.monotonic() + timeout_seconds


def watch_window(ends_at: float | None) -> int | None:
    """The ``timeoutSeconds`` of the next watch request; None once the deadline has passed."""
    if ends_at is None:
        return WATCH_WINDOW_SECONDS
    left = ends_at - time.monotonic()
    return None if left <= 0 else min(WATCH_WINDOW_SECONDS, max(1, round(left)))

"""Where a proxied request goes: the cluster id of ``/k8s/clusters/<id>/...`` and the path left over.

Works on the raw request target so the downstream path and query are byte-for-byte what the client
sent (no decoding and re-encoding on the way). Also names the Kubernetes verb of a request for
the trace, as kube-apiserver's request info would.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass

PREFIXES = ("clusters", "proxy")
_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}
#: A Kubernetes object name (DNS-1123 subdomain), which every cluster id is.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A parsed proxy request target."""

    cluster: str
    """The cluster id, percent-decoded (path segment 3)."""
    path: str
    """The raw path after the prefix, starting with ``/``."""
    query: str
    """The raw query string without ``?`` (empty when none)."""

    @property
    def valid_cluster(self) -> bool:
        return _OBJECT_NAME.fullmatch(self.cluster) is not None

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@functools.lru_cache(maxsize=1024)  # the targets a busy proxy sees repeat; a few MB at the worst
def parse_route(raw_target: str) -> Route | None:
    """``/k8s/{clusters,proxy}/<id>[/rest][?query]``, or None for anything else."""
    raw_path, _, query = raw_target.partition("?")
    segments = raw_path.split("/")
    if len(segments) < 4 or segments[0] != "" or segments[1] != "k8s" or segments[2] not in PREFIXES:
        return None
    cluster = urllib.parse.unquote(segments[3], errors="replace")
    rest = "/" + "/".join(segments[4:])
    return Route(cluster=cluster, path=rest, query=query)


def has_dot_segment(raw_path: str) -> bool:
    """Does the path hold ``.`` or ``..`` segments (plain or percent-encoded)?"""
    if "." not in raw_path and "%" not in raw_path:
        return False
    return any(urllib.parse.unquote(part) in (".", "..") for part in raw_path.split("/"))


@functools.lru_cache(maxsize=1024)
def request_verb(method: str, path: str, query: str) -> str:
    """The Kubernetes verb of a request: get, list, watch, create, update, patch, delete, deletecollection."""
    method = method.upper()
    params = urllib.parse.parse_qs(query) if "watch" in query else {}
    named, legacy_watch = _resource_path(path)
    if method == "GET" and (legacy_watch or params.get("watch", [""])[0].lower() in ("true", "1")):
        return "watch"
    if method in ("GET", "HEAD"):
        return "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return _WRITE_VERBS.get(method, method.lower())


def _resource_path(path: str) -> tuple[bool, bool]:
    """Does the path name one object (or its subresource) rather than a collection; is it ``/watch/...``?"""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return True, False  # non-resource paths (/version, /healthz, /openapi/v2) are read as a whole
    legacy_watch = rest[:1] == ["watch"]
    if legacy_watch:
        rest = rest[1:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]  # /namespaces/<ns> is a namespace; /namespaces/<ns>/<resource>... lies in one
    return len(rest) >= 2, legacy_watch

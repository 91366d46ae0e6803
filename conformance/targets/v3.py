"""A small client of Rancher's v3 API: what the suites need to make users, tokens and bindings.

It speaks to a real Rancher and to corral's server alike (the same API), over plain HTTPS with the
standard library so that it adds nothing to the test environment. Every exchange can be reported
to an observer (the suites attach a redacted summary to the allure step); a read-only client refuses
anything but GET before sending it. Errors carry Rancher's status, code and message, never a token.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.errors import CorralError

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 60.0
MAX_PAGES = 1000


class V3Error(CorralError):
    """The v3 API refused a request: its HTTP status, Rancher's error code and message."""

    def __init__(self, method: str, path: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {code}: {message}".rstrip(": "))
        self.status = status
        self.code = code
        self.message = message


class ReadOnlyTargetError(CorralError):
    """A write was asked of a client that may only read (``--corral-read-only``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One request and its answer, as an observer sees it (headers and bodies not yet redacted)."""

    method: str
    url: str
    request_headers: Mapping[str, str]
    request_body: Any
    status: int
    response_body: Any
    seconds: float


Observer = Callable[[Exchange], None]


@dataclass(slots=True, kw_only=True)
class V3Client:
    """Calls to ``<url>/v3...`` with one bearer token; `read_only` refuses every write before sending."""

    url: str
    token: str = field(repr=False)
    ca_file: str | None = None
    read_only: bool = False
    observer: Observer | None = None
    timeout: float = TIMEOUT_SECONDS

    def with_token(self, token: str) -> V3Client:
        """The same client acting with another token (a user's, for their own kubeconfig)."""
        return V3Client(
            url=self.url,
            token=token,
            ca_file=self.ca_file,
            read_only=self.read_only,
            observer=self.observer,
            timeout=self.timeout,
        )

    # -- generic -----------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, authenticate: bool = True) -> dict[str, Any]:
        """One request; the decoded JSON answer (an empty dict for an empty body)."""
        if self.read_only and method != "GET":
            raise ReadOnlyTargetError(f"{method} {path}: the target is read-only; nothing may be created")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if authenticate:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method, headers=headers
        )
        started = time.monotonic()
        status, raw = self._send(request)
        answer = _decode(raw)
        if self.observer is not None:
            self.observer(
                Exchange(
                    method=method,
                    url=request.full_url,
                    request_headers=headers,
                    request_body=body,
                    status=status,
                    response_body=answer,
                    seconds=time.monotonic() - started,
                )
            )
        if status >= 400:
            code, message = _error_of(answer, raw)
            raise V3Error(method, _path_only(path), status, code, message)
        return answer if isinstance(answer, dict) else {"data": answer}

    def _send(self, request: urllib.request.Request) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        try:
            with urllib.request.urlopen(request, context=context, timeout=self.timeout) as answer:
                return int(answer.status), bytes(answer.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())
        except urllib.error.URLError as e:
            raise CorralError(f"{request.get_method()} {_path_only(request.selector)}: {e.reason}") from None

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def collection(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following ``pagination.next`` links."""
        page: str | None = path
        for _ in range(MAX_PAGES):
            if page is None:
                return
            answer = self.get(page)
            yield from answer.get("data", [])
            following = (answer.get("pagination") or {}).get("next")
            page = _relative(self.url, following) if following else None
        raise V3Error("GET", path, 0, "TooManyPages", f"more than {MAX_PAGES} pages")

    def action(self, path: str, action: str, body: Any = None) -> dict[str, Any]:
        return self.call(
            "POST", f"{path}?action={urllib.parse.quote(action)}", body if body is not None else {}
        )

    # -- what the suites make ----------------------------------------------------------------

    def server_version(self) -> str | None:
        """The ``server-version`` setting (``v2.12.1``), or None when the server does not say."""
        try:
            value = self.get("/v3/settings/server-version").get("value")
        except V3Error as e:
            if e.status == 404:
                return None
            raise
        return str(value) if value else None

    def clusters(self) -> list[dict[str, Any]]:
        return list(self.collection("/v3/clusters"))

    def cluster_id(self, name_or_id: str) -> str:
        """The id of the cluster with this display name or id."""
        found = [c for c in self.clusters() if name_or_id in (c.get("id"), c.get("name"))]
        if len(found) != 1:
            known = ", ".join(sorted(str(c.get("name")) for c in self.clusters())) or "none"
            raise V3Error(
                "GET", "/v3/clusters", 404, "NotFound", f"no one cluster {name_or_id!r} (known: {known})"
            )
        return str(found[0]["id"])

    def create_user(self, username: str, password: str, *, display_name: str = "") -> dict[str, Any]:
        body = {
            "type": "user",
            "username": username,
            "name": display_name or username,
            "password": password,
            "enabled": True,
            "mustChangePassword": False,
        }
        return self.call("POST", "/v3/users", body)

    def set_user_enabled(self, user_id: str, *, enabled: bool) -> dict[str, Any]:
        return self.call("PUT", f"/v3/users/{_id(user_id)}", {"enabled": enabled})

    def delete_user(self, user_id: str) -> None:
        self.call("DELETE", f"/v3/users/{_id(user_id)}")

    def login(self, username: str, password: str, *, ttl_ms: int | None = None) -> str:
        """A new token ``<name>:<secret>`` from the local provider's login."""
        body: dict[str, Any] = {"username": username, "password": password, "responseType": "token"}
        if ttl_ms is not None:
            body["ttl"] = ttl_ms
        answer = self.call("POST", "/v3-public/localProviders/local?action=login", body, authenticate=False)
        return str(answer["token"])

    def create_token(self, *, description: str = "", ttl_ms: int = 0, cluster_id: str | None = None) -> str:
        """A token of the caller, ``<name>:<secret>``; scoped to a cluster when one is given."""
        body: dict[str, Any] = {"type": "token", "description": description, "ttl": ttl_ms}
        if cluster_id:
            body["clusterId"] = cluster_id
        return str(self.call("POST", "/v3/tokens", body)["token"])

    def set_token_enabled(self, name: str, *, enabled: bool) -> dict[str, Any]:
        return self.call("PUT", f"/v3/tokens/{_id(name)}", {"enabled": enabled})

    def delete_token(self, name: str) -> None:
        self.call("DELETE", f"/v3/tokens/{_id(name)}")

    def create_project(self, cluster_id: str, name: str) -> str:
        body = {"type": "project", "name": name, "clusterId": cluster_id}
        return str(self.call("POST", "/v3/projects", body)["id"])

    def bind_cluster(
        self, cluster_id: str, role: str, *, user_id: str = "", group_principal_id: str = ""
    ) -> str:
        """A cluster role-template binding for a user or a group principal; its id."""
        body = {"type": "clusterRoleTemplateBinding", "clusterId": cluster_id, "roleTemplateId": role}
        return str(
            self.call(
                "POST", "/v3/clusterroletemplatebindings", body | _subject(user_id, group_principal_id)
            )["id"]
        )

    def bind_project(
        self, project_id: str, role: str, *, user_id: str = "", group_principal_id: str = ""
    ) -> str:
        body = {"type": "projectRoleTemplateBinding", "projectId": project_id, "roleTemplateId": role}
        return str(
            self.call(
                "POST", "/v3/projectroletemplatebindings", body | _subject(user_id, group_principal_id)
            )["id"]
        )

    def delete(self, collection: str, ident: str) -> None:
        """Delete ``/v3/<collection>/<id>`` (bindings, projects)."""
        self.call("DELETE", f"/v3/{collection}/{_id(ident)}")

    def generate_kubeconfig(self, cluster_id: str) -> str:
        """The kubeconfig YAML of ``generateKubeconfig`` for the caller."""
        return str(self.action(f"/v3/clusters/{_id(cluster_id)}", "generateKubeconfig")["config"])


def basic_credentials(token: str) -> str:
    """The ``Authorization: Basic`` value Rancher reads: URL-safe base64 of ``name:secret``."""
    return "Basic " + base64.urlsafe_b64encode(token.encode()).decode()


def _subject(user_id: str, group_principal_id: str) -> dict[str, str]:
    if bool(user_id) == bool(group_principal_id):
        raise ValueError("a binding names exactly one of user_id and group_principal_id")
    return {"userId": user_id} if user_id else {"groupPrincipalId": group_principal_id}


def _id(ident: str) -> str:
    """An id as one path segment (project ids hold a ':'; nothing may add a segment or a query)."""
    return urllib.parse.quote(ident, safe=":")


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}


def _error_of(answer: Any, raw: bytes) -> tuple[str, str]:
    """Rancher's error code and message: norman's ``code``/``message`` or the proxy's Go struct."""
    if not isinstance(answer, dict):
        return "", raw[:200].decode("utf-8", "replace")
    code = answer.get("code")
    nested = answer.get("Code")
    if not code and isinstance(nested, dict):
        code = nested.get("Code")
    message = answer.get("message") or answer.get("Message") or ""
    return str(code or ""), str(message)


def _path_only(path: str) -> str:
    """A path without its query (queries can carry anything; errors never repeat them)."""
    return path.split("?", 1)[0]


def _relative(base: str, link: str) -> str:
    if link.startswith(base.rstrip("/")):
        return link[len(base.rstrip("/")) :]
    parsed = urllib.parse.urlsplit(link)
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")

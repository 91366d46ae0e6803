"""A small synchronous Kubernetes API client over the standard library (`http.client` + `ssl`).

Fixtures, the control-plane bring-up and the CLI make a few dozen calls in plain functions, so a
blocking client with no event loop and no extra dependency is the simplest correct tool; the
async proxy code gets its own client. One keep-alive connection per client, guarded by a lock,
reopened once when the server closed it. Failures become `KubeAPIError` with the HTTP status and
the API's reason; bodies are cut to ~256 characters and credentials never enter a message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from corral.errors import KubeAPIError
from corral.k8s.kubeconfig import KubeConfig

T = TypeVar("T")
JSON = dict[str, Any]
Header = tuple[str, str]

_BODY_LIMIT = 256


@dataclass(frozen=True, slots=True)
class Response:
    """Status and decoded JSON body (``{}`` when empty, ``{"text": ...}`` when not JSON)."""

    status: int
    body: JSON


def ssl_context(config: KubeConfig) -> ssl.SSLContext:
    """A TLS client context that trusts the kubeconfig's CA and presents its client certificate."""
    if config.insecure_skip_tls_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_pem is not None:
        context = ssl.create_default_context(cadata=config.ca_pem.decode("ascii"))
    else:
        context = ssl.create_default_context()
    if config.cert_pem is not None and config.key_pem is not None:
        # `load_cert_chain` reads only files: hand it a private temporary one, removed at once.
        with tempfile.TemporaryDirectory(prefix="corral-tls-") as folder:
            chain = Path(folder) / "client.pem"
            fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(config.cert_pem.rstrip(b"\n") + b"\n" + config.key_pem)
            context.load_cert_chain(str(chain))
    return context


class KubeClient:
    """Blocking JSON requests to one kube-apiserver with one identity."""

    def __init__(self, config: KubeConfig, *, timeout_seconds: float = 30.0) -> None:
        url = urllib.parse.urlsplit(config.server)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise KubeAPIError(f"unusable server URL {config.server!r}", status=0, reason="BadServer")
        self.config = config
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")
        self._tls = ssl_context(config) if url.scheme == "https" else None
        self._timeout = timeout_seconds
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._identity_headers = _identity_headers(config)

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def impersonating(self, user: str, groups: Iterable[str] = ()) -> KubeClient:
        """A new client with the same credentials that sends Impersonate-User/-Group headers."""
        return KubeClient(self.config.impersonating(user, tuple(groups)), timeout_seconds=self._timeout)

    # -- requests ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: JSON | None = None,
        headers: Iterable[Header] = (),
        query: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> Response:
        """Send one request; with ``check`` a status >= 400 raises `KubeAPIError`."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        payload = json.dumps(body).encode() if body is not None else None
        all_headers: list[Header] = [("Accept", "application/json"), *self._identity_headers, *headers]
        if payload is not None and not any(name.lower() == "content-type" for name, _ in all_headers):
            content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
            all_headers.append(("Content-Type", content_type))
        status, raw = self._send(method, target, payload, all_headers)
        decoded = _decode(raw)
        if check and status >= 400:
            raise _api_error(method, path, status, decoded, raw)
        return Response(status, decoded)

    def _send(
        self, method: str, target: str, payload: bytes | None, headers: list[Header]
    ) -> tuple[int, bytes]:
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    conn.putrequest(method, target, skip_accept_encoding=True)
                    for name, value in headers:
                        conn.putheader(name, value)
                    conn.putheader("Content-Length", str(len(payload or b"")))
                    conn.endheaders(payload)
                    response = conn.getresponse()
                    return response.status, response.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                    self._drop()
                    if attempt == 2:
                        raise _connection_error(method, target, self.config.server, e) from e
                except (OSError, http.client.HTTPException) as e:
                    self._drop()
                    raise _connection_error(method, target, self.config.server, e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._tls
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    # -- helpers ----------------------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> JSON:
        return self.request("GET", path, **kwargs).body

    def exists(self, path: str) -> bool:
        """True when GET answers 200, False on 404; other statuses raise."""
        response = self.request("GET", path, check=False)
        if response.status == 404:
            return False
        if response.status >= 400:
            raise _api_error("GET", path, response.status, response.body, b"")
        return True

    def create(self, collection: str, obj: JSON, **kwargs: Any) -> JSON:
        """POST an object to a collection path such as ``/api/v1/namespaces``."""
        return self.request("POST", collection, body=obj, **kwargs).body

    def delete(self, path: str, *, missing_ok: bool = True) -> JSON:
        response = self.request("DELETE", path, check=False)
        if response.status == 404 and missing_ok:
            return {}
        if response.status >= 400:
            raise _api_error("DELETE", path, response.status, response.body, b"")
        return response.body

    def apply(self, collection: str, obj: JSON) -> JSON:
        """Create the object, or replace it when it exists (keeping its resourceVersion)."""
        response = self.request("POST", collection, body=obj, check=False)
        if response.status != 409:
            if response.status >= 400:
                raise _api_error("POST", collection, response.status, response.body, b"")
            return response.body
        name = obj.get("metadata", {}).get("name", "")
        path = f"{collection}/{name}"
        current = self.get(path)
        merged = {**obj, "metadata": {**obj.get("metadata", {}), **_keep_version(current)}}
        return self.request("PUT", path, body=merged).body

    def can_i(
        self, verb: str, resource: str, *, namespace: str = "", group: str = "", name: str = ""
    ) -> bool:
        """Ask the apiserver (SelfSubjectAccessReview) whether this identity may do something."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": _resource_attributes(verb, resource, namespace, group, name)},
        }
        answer = self.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        return bool(answer.get("status", {}).get("allowed", False))

    def allows(
        self,
        user: str,
        groups: Sequence[str],
        verb: str,
        resource: str,
        *,
        namespace: str = "",
        group: str = "",
        name: str = "",
    ) -> bool:
        """Ask the apiserver (SubjectAccessReview) whether another identity may do something.

        RBAC authorizes from informer caches, so a new (Cluster)RoleBinding takes effect a moment after it
        is created; poll this with `wait_for` before relying on a binding.
        """
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": list(groups),
                "resourceAttributes": _resource_attributes(verb, resource, namespace, group, name),
            },
        }
        answer = self.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer.get("status", {}).get("allowed", False))


def _resource_attributes(verb: str, resource: str, namespace: str, group: str, name: str) -> dict[str, str]:
    attributes = {"verb": verb, "resource": resource, "group": group, "namespace": namespace, "name": name}
    return {k: v for k, v in attributes.items() if v}


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout_seconds: float,
    what: str,
    interval_seconds: float = 0.2,
) -> T:
    """Call ``predicate`` until it returns something truthy; raise `TimeoutError` naming ``what``.

    `KubeAPIError` raised by the predicate counts as "not yet" until the deadline, then is chained.
    """
    deadline = time.monotonic() + timeout_seconds
    last_error: KubeAPIError | None = None
    while True:
        try:
            result = predicate()
        except KubeAPIError as e:
            last_error, result = e, None
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error}" if last_error else ""
            raise TimeoutError(
                f"timed out after {timeout_seconds:g}s waiting for {what}{detail}"
            ) from last_error
        time.sleep(interval_seconds)


def _identity_headers(config: KubeConfig) -> list[Header]:
    headers: list[Header] = []
    if config.token:
        headers.append(("Authorization", f"Bearer {config.token}"))
    if config.impersonate_user:
        headers.append(("Impersonate-User", config.impersonate_user))
        headers += [("Impersonate-Group", group) for group in config.impersonate_groups]
    return headers


def _keep_version(current: JSON) -> JSON:
    version = current.get("metadata", {}).get("resourceVersion")
    return {"resourceVersion": version} if version else {}


def _decode(raw: bytes) -> JSON:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"text": raw[:_BODY_LIMIT].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"items": value}


def _api_error(method: str, path: str, status: int, body: JSON, raw: bytes) -> KubeAPIError:
    reason = str(body.get("reason") or http.client.responses.get(status, "Unknown"))
    message = str(body.get("message") or body.get("text") or raw[:_BODY_LIMIT].decode("utf-8", "replace"))
    if len(message) > _BODY_LIMIT:
        message = message[: _BODY_LIMIT - 3] + "..."
    return KubeAPIError(f"{method} {path}: {status} {reason}: {message}", status=status, reason=reason)


def _connection_error(method: str, target: str, server: str, error: BaseException) -> KubeAPIError:
    path = target.split("?", 1)[0]
    return KubeAPIError(
        f"{method} {path}: cannot reach {server}: {type(error).__name__}: {error}",
        status=0,
        reason="ConnectionError",
    )

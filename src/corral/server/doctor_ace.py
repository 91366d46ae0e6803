"""``corral doctor ace``: is a cluster's Authorized Cluster Endpoint wired as Rancher wires it?

Checks, each a line: every kube-apiserver has a token webhook config whose server is a kube-api-auth
``/v1/authenticate`` on a loopback address (`check_webhook_config`, from the flags of the running
processes of a corral run); each kube-api-auth answers ``/healthcheck`` and refuses an unknown token
with 401; the two CRDs are served; every cluster-scoped token of the cluster upstream has its
Secret (same hash) and ClusterAuthToken (same user, enablement, expiry), no copy is left of a token
that is gone, and each token's user has an enabled ClusterUserAttribute. `manual_steps` is what an
operator does by hand on an imported RKE2/K3s cluster (Rancher's docs; no secret in it).
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from corral.errors import KubeAPIError, NotFoundError
from corral.k8s import KubeClient
from corral.kubeapiauth import objects
from corral.server.ace_sync import token_copy
from corral.server.doctor import Checklist

logger = logging.getLogger(__name__)

__all__ = ["AceReport", "check_ace", "check_webhook_config", "manual_steps", "webhook_flag"]

WEBHOOK_FLAG: Final = "--authentication-token-webhook-config-file"
LOOPBACKS: Final = ("127.0.0.1", "::1", "localhost")
RKE2_WEBHOOK_FILE: Final = "/var/lib/rancher/rke2/kube-api-authn-webhook.yaml"


@dataclass(slots=True, kw_only=True)
class AceReport(Checklist):
    """The Authorized Cluster Endpoint checks of one cluster."""

    cluster: str

    def lines(self) -> list[str]:
        return self.lines_under(f"Authorized Cluster Endpoint of {self.cluster}")


def webhook_flag(argv: Sequence[str]) -> Path | None:
    """The webhook config file a kube-apiserver was started with (None: no webhook)."""
    for index, arg in enumerate(argv):
        if arg.startswith(WEBHOOK_FLAG + "="):
            return Path(arg.split("=", 1)[1])
        if arg == WEBHOOK_FLAG and index + 1 < len(argv):
            return Path(argv[index + 1])
    return None


def check_webhook_config(report: AceReport, subject: str, path: Path | None) -> str | None:
    """Check one apiserver's webhook config; return its kube-api-auth base URL when it is right."""
    if path is None:
        report.missing(subject, f"started without {WEBHOOK_FLAG}: ACE tokens are never asked about")
        return None
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        report.wrong(subject, f"webhook config {path} is unreadable: {e}")
        return None
    clusters = document.get("clusters") or []
    server = str(((clusters[0] if clusters else {}).get("cluster") or {}).get("server", ""))
    url = urllib.parse.urlsplit(server)
    if url.path != "/v1/authenticate" or url.hostname not in LOOPBACKS:
        report.wrong(
            subject,
            f"webhook server {server!r} is not kube-api-auth's http://<loopback>:<port>/v1/authenticate",
        )
        return None
    report.ok(f"{subject}: webhook config {path} points at {server}")
    return f"{url.scheme}://{url.netloc}"


def _http(base: str, method: str, path: str, body: bytes | None = None) -> int | None:
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=5)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _check_kube_api_auth(report: AceReport, base: str) -> None:
    subject = f"kube-api-auth {base}"
    status = _http(base, "GET", "/healthcheck")
    if status != 200:
        report.wrong(
            subject, "/healthcheck " + ("does not answer" if status is None else f"answers {status}")
        )
        return
    review = {"kind": "TokenReview", "spec": {"token": "doctor-probe:not-a-secret"}}
    refused = _http(base, "POST", "/v1/authenticate", json.dumps(review).encode())
    if refused != 401:
        report.wrong(subject, f"an unknown token got {refused}, not 401")
        return
    report.ok(f"{subject} is healthy and refuses an unknown token")


def _get(client: KubeClient, path: str) -> dict[str, Any] | None:
    try:
        return client.get(path)
    except NotFoundError:
        return None


def _check_copies(report: AceReport, admin: KubeClient, upstream: KubeClient, cluster_id: str) -> None:
    where = objects.paths()
    listing = upstream.list("/apis/management.cattle.io/v3/tokens").get("items") or []
    scoped = [token_copy(t) for t in listing if t.get("clusterName") == cluster_id]
    copies = {
        str(o["metadata"]["name"]): o
        for o in (admin.list(where[objects.CLUSTER_AUTH_TOKENS]).get("items") or [])
    }
    bad = 0
    for token in scoped:
        subject = f"ClusterAuthToken {objects.NAMESPACE}/{token.name}"
        copy = copies.pop(token.name, None)
        if copy is None:
            report.missing(subject, "the token is scoped to this cluster but has no copy")
            bad += 1
            continue
        got = (copy.get("userName"), copy.get("enabled"), copy.get("expiresAt") or "")
        if got != (token.user_id, token.enabled, token.expires_at):
            report.wrong(subject, "userName, enabled or expiresAt differ from the server's token")
            bad += 1
        secret = _get(admin, f"{where['secrets']}/{token.name}")
        if secret is None or objects.secret_hash(secret) != token.hashed:
            report.wrong(
                f"Secret {objects.NAMESPACE}/{token.name}", "missing, or its hash is not the token's"
            )
            bad += 1
    for name in copies:
        report.wrong(f"ClusterAuthToken {objects.NAMESPACE}/{name}", "no such token upstream: a stale copy")
        bad += 1
    for user_id in sorted({t.user_id for t in scoped}):
        attribute = _get(admin, f"{where[objects.CLUSTER_USER_ATTRIBUTES]}/{user_id}")
        if attribute is None or attribute.get("enabled") is not True:
            report.wrong(f"ClusterUserAttribute {objects.NAMESPACE}/{user_id}", "missing or not enabled")
            bad += 1
    if not bad:
        report.ok(f"{len(scoped)} cluster-scoped token(s) copied with their Secrets and users' attributes")


def check_ace(
    *,
    cluster: str,
    admin: KubeClient,
    upstream: KubeClient | None = None,
    cluster_id: str = "",
    webhook_configs: Mapping[str, Path | None] | None = None,
    kube_api_auth: Sequence[str] = (),
) -> AceReport:
    """Check the wiring of one cluster that ``admin`` reaches.

    ``webhook_configs`` maps each apiserver (a name) to its webhook config (None: started without);
    the kube-api-auth URLs they name are checked along with ``kube_api_auth``. The copies are
    compared with the tokens upstream when ``upstream`` and ``cluster_id`` are given.
    """
    report = AceReport(cluster=cluster)
    urls = list(dict.fromkeys(kube_api_auth))
    for subject, path in (webhook_configs or {}).items():
        base = check_webhook_config(report, subject, path)
        if base is not None and base not in urls:
            urls.append(base)
    for base in urls:
        _check_kube_api_auth(report, base)
    try:
        served = {
            r.get("name") for r in admin.get(f"/apis/{objects.GROUP}/{objects.VERSION}").get("resources", [])
        }
    except NotFoundError:
        served = set()
    except KubeAPIError as e:
        report.wrong("the cluster's API", f"unreachable: {e}")
        return report
    missing = {objects.CLUSTER_AUTH_TOKENS, objects.CLUSTER_USER_ATTRIBUTES} - served
    if missing:
        for plural in sorted(missing):
            report.missing(
                f"CRD {plural}.{objects.GROUP}", "not served (the server never synced this cluster)"
            )
        return report
    report.ok(f"CRDs {objects.CLUSTER_AUTH_TOKENS} and {objects.CLUSTER_USER_ATTRIBUTES} are served")
    if upstream is not None and cluster_id:
        _check_copies(report, admin, upstream, cluster_id)
    return report


def manual_steps(*, cluster: str, cluster_id: str = "", port: int = 6440) -> list[str]:
    """What to do by hand on an imported RKE2 or K3s cluster (Rancher's documented steps)."""
    target = f"cluster {cluster}" + (f" ({cluster_id})" if cluster_id else "")
    return [
        f"Imported {target}: the server cannot change its kube-apiservers, so on every control-plane node:",
        f"1. Write {RKE2_WEBHOOK_FILE} (K3s: /var/lib/rancher/k3s/kube-api-authn-webhook.yaml):",
        "     apiVersion: v1",
        "     kind: Config",
        "     clusters:",
        "     - name: Default",
        "       cluster:",
        "         insecure-skip-tls-verify: true",
        f"         server: http://127.0.0.1:{port}/v1/authenticate",
        "     users:",
        "     - name: Default",
        "       user:",
        "         insecure-skip-tls-verify: true",
        "     current-context: webhook",
        "     contexts:",
        "     - name: webhook",
        "       context:",
        "         user: Default",
        "         cluster: Default",
        "2. Add to /etc/rancher/rke2/config.yaml (K3s: /etc/rancher/k3s/config.yaml):",
        "     kube-apiserver-arg:",
        f"       - authentication-token-webhook-config-file={RKE2_WEBHOOK_FILE}",
        "3. Restart the server service: systemctl restart rke2-server (K3s: k3s).",
        "4. Run kube-api-auth on each control-plane node, on the host network, listening on "
        f"127.0.0.1:{port} (Rancher's DaemonSet cattle-system/kube-api-auth; here `corral kube-api-auth`).",
        "5. Turn ACE on for the cluster (spec.localClusterAuthEndpoint.enabled: true, with fqdn and caCerts "
        "when a load balancer fronts the apiservers); new kubeconfigs then carry cluster-scoped tokens.",
        f"6. Check again: corral doctor ace --cluster {cluster}",
    ]

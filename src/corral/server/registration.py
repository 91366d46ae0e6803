"""Registering a downstream cluster: what Rancher's tunnel authorizer records when a cluster agent connects.

The agent reports the cluster's API address, its ``cattle`` ServiceAccount token and CA; the server
stores the token in a Secret of ``cattle-global-data`` (key ``credential``, generateName
``cluster-serviceaccounttoken-``, owned by the Cluster) and writes ``status.apiEndpoint``, ``caCert``
(base64 of the PEM), ``serviceAccountTokenSecret`` and the Provisioned condition
(``pkg/tunnelserver/mcmauthorizer/tunnel.go`` ``authorizeCluster``, ``pkg/controllers/management/
secretmigrator``). Until agents exist, ``corral up`` calls `register_cluster` in-process.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
from collections.abc import Mapping
from typing import Any, Final, Protocol

from corral.errors import AlreadyExistsError, ConfigError, NotFoundError
from corral.k8s.aio import AsyncKubeClient

logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTERS",
    "CREDENTIAL_KEY",
    "GLOBAL_NAMESPACE",
    "condition_true",
    "register_cluster",
    "set_condition",
]

CLUSTERS: Final = "/apis/management.cattle.io/v3/clusters"
GLOBAL_NAMESPACE: Final = "cattle-global-data"
CREDENTIAL_KEY: Final = "credential"
SECRET_GENERATE_NAME: Final = "cluster-serviceaccounttoken-"  # noqa: S105 - a name prefix, not a secret
IMPORTED_DRIVER: Final = "imported"
_SECRETS: Final = f"/api/v1/namespaces/{GLOBAL_NAMESPACE}/secrets"


class _HasUpstream(Protocol):
    @property
    def upstream(self) -> AsyncKubeClient: ...


def _client(state_or_upstream: AsyncKubeClient | _HasUpstream) -> AsyncKubeClient:
    return state_or_upstream if isinstance(state_or_upstream, AsyncKubeClient) else state_or_upstream.upstream


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    """Whether the object's ``status.conditions`` has ``kind`` with status ``"True"``."""
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind:
            return str(condition.get("status")) == "True"
    return False


def set_condition(
    conditions: list[dict[str, Any]], kind: str, status: bool, *, reason: str = "", message: str = ""
) -> bool:
    """Set one condition in place (norman's shape: type, status, lastUpdateTime); True when it changed."""
    value = "True" if status else "False"
    for condition in conditions:
        if condition.get("type") == kind:
            if condition.get("status") == value and condition.get("message", "") == message:
                return False
            condition.update(status=value, lastUpdateTime=_now(), reason=reason, message=message)
            return True
    conditions.append(
        {"type": kind, "status": value, "lastUpdateTime": _now(), "reason": reason, "message": message}
    )
    return True


async def _ensure_namespace(client: AsyncKubeClient) -> None:
    with contextlib.suppress(AlreadyExistsError):
        await client.create("/api/v1/namespaces", {"metadata": {"name": GLOBAL_NAMESPACE}})


async def _stored_token(client: AsyncKubeClient, name: str) -> str | None:
    if not name:
        return None
    try:
        secret = await client.get(f"{_SECRETS}/{name}")
    except NotFoundError:
        return None
    raw = (secret.get("data") or {}).get(CREDENTIAL_KEY)
    return base64.b64decode(raw).decode() if raw else None


async def register_cluster(
    state_or_upstream: AsyncKubeClient | _HasUpstream,
    cluster_id: str,
    *,
    address: str,
    sa_token: str,
    ca_cert_pem: str | bytes,
) -> dict[str, Any]:
    """Record a downstream cluster's endpoint, credential and CA on its Cluster; return the Cluster.

    ``address`` is ``host:port`` of the cluster's kube-apiserver as the agent sees it (the endpoint
    becomes ``https://<address>``); ``sa_token`` is the ``cattle-system/cattle`` ServiceAccount's token.
    A second call with the same values changes nothing; a changed token gets a new Secret and the old
    one is deleted, as Rancher does.
    """
    if not address or "/" in address:
        raise ConfigError(f"cluster {cluster_id!r}: the address must be host:port, got {address!r}")
    if not sa_token:
        raise ConfigError(f"cluster {cluster_id!r}: the service account token is empty")
    pem = ca_cert_pem.encode() if isinstance(ca_cert_pem, str) else ca_cert_pem
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"cluster {cluster_id!r}: the CA is not a PEM certificate")
    client = _client(state_or_upstream)
    cluster = await client.get(f"{CLUSTERS}/{cluster_id}")
    status: dict[str, Any] = dict(cluster.get("status") or {})
    endpoint = f"https://{address}"
    ca_b64 = base64.b64encode(pem).decode()
    current_secret = str(status.get("serviceAccountTokenSecret") or "")
    stored = await _stored_token(client, current_secret)
    stale: str | None = None
    changed = False
    if not status.get("driver"):
        status["driver"] = IMPORTED_DRIVER
        changed = True
    if (
        status.get("apiEndpoint") != endpoint
        or status.get("caCert") != ca_b64
        or not current_secret
        or stored != sa_token
    ):
        await _ensure_namespace(client)
        metadata = cluster["metadata"]
        secret = await client.create(
            _SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "generateName": SECRET_GENERATE_NAME,
                    "namespace": GLOBAL_NAMESPACE,
                    "ownerReferences": [
                        {
                            "apiVersion": "management.cattle.io/v3",
                            "kind": "Cluster",
                            "name": metadata["name"],
                            "uid": metadata["uid"],
                        }
                    ],
                },
                "type": "Opaque",
                "data": {CREDENTIAL_KEY: base64.b64encode(sa_token.encode()).decode()},
            },
        )
        if current_secret and stored is not None:
            stale = current_secret
        status.update(
            apiEndpoint=endpoint,
            caCert=ca_b64,
            serviceAccountTokenSecret=secret["metadata"]["name"],
        )
        changed = True
    conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or ()]
    for kind in ("Provisioned", "ServiceAccountSecretsMigrated"):
        changed |= set_condition(conditions, kind, True)
    status["conditions"] = conditions
    if changed:
        cluster = await client.patch(f"{CLUSTERS}/{cluster_id}/status", {"status": status})
        logger.info("cluster %s registered at %s", cluster_id, endpoint)
    if stale is not None:
        await client.delete(f"{_SECRETS}/{stale}")
    return cluster

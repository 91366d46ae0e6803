"""What an agent reports in ``X-API-Tunnel-Params``: its cluster (or node), read from the cluster itself.

A cluster agent reports ``{"cluster": {"address", "token", "caCert"}}``: the in-cluster API address
(``KUBERNETES_SERVICE_HOST:PORT``, else its kubeconfig's server), the long-lived token of the
``cattle-system/cattle`` ServiceAccount (from its legacy token Secret, created when missing, as
Rancher's agent ensures one) and base64 of the ``kube-root-ca.crt`` ConfigMap's CA
(``pkg/agent/cluster/cluster.go``). A node agent reports its node: name, addresses, roles (from the
Node's ``node-role.kubernetes.io/*`` labels) and ``apiAddress``, the node-local API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from corral.errors import AlreadyExistsError, CorralError, NotFoundError
from corral.k8s.aio import AsyncKubeClient

__all__ = ["AgentParamsError", "api_address", "cluster_params", "node_params"]

NAMESPACE: Final = "cattle-system"
SERVICE_ACCOUNT: Final = "cattle"
SA_NAME_ANNOTATION: Final = "kubernetes.io/service-account.name"
SA_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"  # noqa: S105 - a Secret type


class AgentParamsError(CorralError):
    """The cluster does not give what the agent must report (no token, no CA)."""


def api_address(server_url: str, env: Mapping[str, str] | None = None) -> str:
    """``host:port`` of the API as the agent reaches it: the in-cluster service, else its kubeconfig's."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if host and port:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = urlsplit(server_url)
    if not url.hostname:
        raise AgentParamsError(f"cannot tell the API address from {server_url!r}")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{host}:{url.port or 443}"


async def _service_account_token(client: AsyncKubeClient, *, timeout_seconds: float) -> str:
    secrets = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    listing = await client.list(secrets)
    found = [
        s
        for s in listing.get("items") or []
        if s.get("type") == SA_TOKEN_TYPE
        and (s["metadata"].get("annotations") or {}).get(SA_NAME_ANNOTATION) == SERVICE_ACCOUNT
    ]
    if found:
        name = sorted(found, key=lambda s: str(s["metadata"]["name"]))[0]["metadata"]["name"]
    else:
        name = f"{SERVICE_ACCOUNT}-token"
        with contextlib.suppress(AlreadyExistsError):
            await client.create(
                secrets,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": SA_TOKEN_TYPE,
                    "metadata": {"name": name, "annotations": {SA_NAME_ANNOTATION: SERVICE_ACCOUNT}},
                },
            )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        secret = await client.get(f"{secrets}/{name}")
        raw = (secret.get("data") or {}).get("token")
        if raw:
            return base64.b64decode(raw).decode()
        if loop.time() > deadline:
            raise AgentParamsError(
                f"the token Secret {NAMESPACE}/{name} of ServiceAccount {SERVICE_ACCOUNT} is not populated"
                f" after {timeout_seconds:g} s"
            )
        await asyncio.sleep(0.2)


async def cluster_params(
    client: AsyncKubeClient, *, address: str, timeout_seconds: float = 30.0
) -> dict[str, Any]:
    """The cluster agent's params document."""
    try:
        await client.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}")
        token = await _service_account_token(client, timeout_seconds=timeout_seconds)
        config_map = await client.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/kube-root-ca.crt")
    except NotFoundError as exc:
        raise AgentParamsError(f"the cluster lacks what the agent reports: {exc}") from None
    ca = (config_map.get("data") or {}).get("ca.crt", "")
    if "-----BEGIN CERTIFICATE-----" not in ca:
        raise AgentParamsError(f"{NAMESPACE}/kube-root-ca.crt has no PEM under ca.crt")
    return {"cluster": {"address": address, "token": token, "caCert": base64.b64encode(ca.encode()).decode()}}


async def node_params(client: AsyncKubeClient, *, node: str, api: str) -> dict[str, Any]:
    """A node agent's params document (roles from the Node's labels)."""
    try:
        obj = await client.get(f"/api/v1/nodes/{node}")
    except NotFoundError:
        raise AgentParamsError(f"no Node {node!r} in the cluster") from None
    labels = obj["metadata"].get("labels") or {}
    roles = {
        key.removeprefix("node-role.kubernetes.io/")
        for key in labels
        if key.startswith("node-role.kubernetes.io/")
    }
    addresses = {a.get("type"): a.get("address") for a in (obj.get("status") or {}).get("addresses") or ()}
    host = api.rpartition(":")[0].strip("[]")
    internal = str(addresses.get("InternalIP") or host)
    return {
        "node": {
            "requestedHostname": node,
            "customConfig": {
                "address": str(addresses.get("ExternalIP") or internal),
                "internalAddress": internal,
            },
            "controlPlane": bool(roles & {"controlplane", "control-plane"}),
            "etcd": "etcd" in roles,
            "worker": "worker" in roles,
            "apiAddress": api,
        }
    }

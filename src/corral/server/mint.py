"""Kubeconfigs for a given user, made by an operator with the management cluster's admin credential.

Rancher's v3 API makes kubeconfigs only for the caller (``generateKubeconfig``); an operator who
holds the upstream's admin kubeconfig can make one for any user: a ``kubeconfig-<userID>`` token
stored hashed with the TTL of the ``kubeconfig-default-token-ttl-minutes`` setting, in the same
file the action returns. ``corral kubeconfig`` calls `mint_kubeconfig`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from corral.auth import hashers
from corral.auth.tokens import generate_secret, kubeconfig_token_prefix
from corral.errors import ConfigError, NotFoundError
from corral.k8s import KubeClient
from corral.server.ace_sync import ace_enabled
from corral.server.authn import HASHED_ANNOTATION, KIND_LABEL, user_principal
from corral.server.kubeconfig import ace_entries, kubeconfig_host, token_kubeconfig, wants_nodes
from corral.server.state import MANAGEMENT, USER_ID_LABEL

logger = logging.getLogger(__name__)

__all__ = ["Minted", "mint_kubeconfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Minted:
    """The kubeconfig text, the token's name and its TTL (the secret is only inside ``config``)."""

    config: str = field(repr=False)
    token_name: str
    ttl_minutes: int
    user_id: str
    cluster_id: str


def _setting(upstream: KubeClient, name: str, fallback: str) -> str:
    try:
        obj = upstream.get(f"{MANAGEMENT}/settings/{name}")
    except NotFoundError:
        return fallback
    return str(obj.get("value") or obj.get("default") or fallback)


def _find(upstream: KubeClient, plural: str, wanted: str, *fields: tuple[str, ...]) -> dict[str, Any]:
    try:
        return upstream.get(f"{MANAGEMENT}/{plural}/{wanted}")
    except NotFoundError:
        pass
    for obj in upstream.list(f"{MANAGEMENT}/{plural}").get("items") or []:
        for path in fields:
            value: Any = obj
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if value == wanted:
                return dict(obj)
    raise ConfigError(f"no {plural[:-1]} {wanted!r} (by id or name) in the management cluster")


def mint_kubeconfig(
    upstream: KubeClient, *, user: str, cluster: str, server_url: str = "", ttl_minutes: int | None = None
) -> Minted:
    """A kubeconfig for ``user`` (id or username) and ``cluster`` (id or display name) through the proxy."""
    user_obj = _find(upstream, "users", user, ("username",))
    cluster_obj = _find(upstream, "clusters", cluster, ("spec", "displayName"))
    user_id, cluster_id = str(user_obj["metadata"]["name"]), str(cluster_obj["metadata"]["name"])
    if user_obj.get("enabled") is False:
        raise ConfigError(f"user {user!r} is disabled")
    default = int(_setting(upstream, "kubeconfig-default-token-ttl-minutes", "43200") or 0)
    maximum = int(_setting(upstream, "auth-token-max-ttl-minutes", "129600") or 0)
    minutes = default if ttl_minutes is None else ttl_minutes
    if minutes < 0:
        raise ConfigError(f"--ttl-minutes {minutes}: must be 0 (the setting's default) or more")
    minutes = minutes or default
    if maximum > 0:
        minutes = min(minutes, maximum)
    nodes: list[Any] = []
    if wants_nodes(cluster_obj):
        try:  # Rancher's management Nodes, where the upstream serves them
            nodes = upstream.list(f"{MANAGEMENT}/namespaces/{cluster_id}/nodes").get("items") or []
        except NotFoundError:
            nodes = []
    ace = ace_entries(cluster_obj, nodes=nodes)
    secret = generate_secret()
    token = upstream.create(
        f"{MANAGEMENT}/tokens",
        {
            "apiVersion": "management.cattle.io/v3",
            "kind": "Token",
            "metadata": {
                "generateName": kubeconfig_token_prefix(user_id),
                "labels": {USER_ID_LABEL: user_id, KIND_LABEL: "kubeconfig"},
                "annotations": {HASHED_ANNOTATION: "true"},
            },
            "token": hashers.hash_secret(secret),
            "userId": user_id,
            "authProvider": "local",
            "userPrincipal": user_principal(user_obj),
            "ttl": minutes * 60_000,
            "isDerived": True,
            "description": "Kubeconfig token",
            "enabled": True,
            **({"clusterName": cluster_id} if ace_enabled(cluster_obj) else {}),
        },
    )
    name = str(token["metadata"]["name"])
    url = server_url or _setting(upstream, "server-url", "")
    if not url:
        raise ConfigError("no server URL: give --server or set the server-url setting")
    config = token_kubeconfig(
        cluster_name=str((cluster_obj.get("spec") or {}).get("displayName") or ""),
        cluster_id=cluster_id,
        host=kubeconfig_host(url, ""),
        token=f"{name}:{secret}",
        cacerts=_setting(upstream, "cacerts", ""),
        ace=ace,
    )
    return Minted(config=config, token_name=name, ttl_minutes=minutes, user_id=user_id, cluster_id=cluster_id)

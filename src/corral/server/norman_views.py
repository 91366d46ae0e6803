"""Stored management objects as the v3 API shows them: norman's ids, field names and links.

norman flattens ``spec`` and ``status`` to the top level, calls a display name ``name``, turns
references ``clusterName``/``projectName``/``userName``/``roleTemplateName`` into ``...Id`` fields, and
gives namespaced objects the id ``<namespace>:<name>``. Pure functions over the stored dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC
from typing import Any, Final

from corral.server import norman
from corral.server.authn import expires_at, parse_time
from corral.server.state import JSON

logger = logging.getLogger(__name__)

__all__ = ["TYPES", "object_id", "view"]

CREATOR_ANNOTATION: Final = "field.cattle.io/creatorId"

TYPES: Final[Mapping[str, str]] = {
    "users": "user",
    "tokens": "token",
    "clusters": "cluster",
    "clusterregistrationtokens": "clusterRegistrationToken",
    "roletemplates": "roleTemplate",
    "clusterroletemplatebindings": "clusterRoleTemplateBinding",
    "projectroletemplatebindings": "projectRoleTemplateBinding",
    "projects": "project",
    "settings": "setting",
}
"""The v3 collection name (the stored plural) and its norman type."""

_REFERENCES: Final = {
    "clusterName": "clusterId",
    "projectName": "projectId",
    "userName": "userId",
    "roleTemplateName": "roleTemplateId",
    "roleTemplateNames": "roleTemplateIds",
    "groupPrincipalName": "groupPrincipalId",
    "userPrincipalName": "userPrincipalId",
    "displayName": "name",
}


def object_id(obj: Mapping[str, Any]) -> str:
    """``name`` or ``namespace:name``."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{namespace}:{metadata.get('name')}" if namespace else str(metadata.get("name", ""))


def _meta(obj: Mapping[str, Any]) -> JSON:
    metadata = obj.get("metadata") or {}
    created = str(metadata.get("creationTimestamp") or "")
    moment = parse_time(created)
    out: JSON = {
        "created": created,
        "createdTS": int(moment.astimezone(UTC).timestamp() * 1000) if moment else 0,
        "creatorId": (metadata.get("annotations") or {}).get(CREATOR_ANNOTATION),
        "uuid": metadata.get("uid", ""),
        "state": "active",
        "transitioning": "no",
        "transitioningMessage": "",
    }
    if metadata.get("labels"):
        out["labels"] = dict(metadata["labels"])
    if metadata.get("annotations"):
        out["annotations"] = dict(metadata["annotations"])
    if metadata.get("namespace"):
        out["namespaceId"] = metadata["namespace"]
    return out


def _flatten(obj: Mapping[str, Any]) -> JSON:
    fields: JSON = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key in ("spec", "status") and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                fields.setdefault(_REFERENCES.get(str(inner), str(inner)), inner_value)
            continue
        fields[_REFERENCES.get(str(key), str(key))] = value
    return fields


def view(
    plural: str,
    obj: Mapping[str, Any],
    *,
    base_url: str,
    can_update: bool = False,
    can_delete: bool = False,
    current_token: str = "",
    me: str = "",
) -> JSON:
    """One stored object as a norman resource (links to ``base_url/v3/<plural>``)."""
    id_ = object_id(obj)
    values = {**_meta(obj), **_flatten(obj)}
    name = (obj.get("metadata") or {}).get("name", "")
    actions: dict[str, str] = {}
    collection_url = f"{base_url}/v3/{plural}"
    if plural == "tokens":
        values.pop("token", None)
        values["name"] = name
        values["expiresAt"] = expires_at(obj)
        values["current"] = name == current_token
        values["enabled"] = obj.get("enabled") is not False
        principal = obj.get("userPrincipal")
        if isinstance(principal, Mapping):
            values["userPrincipal"] = (principal.get("metadata") or {}).get("name", "")
    elif plural == "users":
        values["me"] = name == me
        values.setdefault("name", "")
        values["enabled"] = obj.get("enabled") is not False
    elif plural == "clusters":
        values.setdefault("name", name)
        values.pop("serviceAccountTokenSecret", None)
        values["state"] = _cluster_state(obj)
        actions["generateKubeconfig"] = f"{collection_url}/{id_}?action=generateKubeconfig"
    elif plural == "projects":
        values.setdefault("name", name)
    elif plural == "settings":
        values["name"] = name
        values.setdefault("value", "")
        values["customized"] = bool(obj.get("value"))
    elif plural in (
        "clusterroletemplatebindings",
        "projectroletemplatebindings",
        "clusterregistrationtokens",
    ):
        values["name"] = name
    links = norman.resource_links(
        collection_url=collection_url, id_=id_, can_update=can_update, can_delete=can_delete
    )
    return norman.resource(type_=TYPES[plural], values=values, id_=id_, links=links, actions=actions)


def _cluster_state(obj: Mapping[str, Any]) -> str:
    conditions = (obj.get("status") or {}).get("conditions") or []
    status = {c.get("type"): c.get("status") for c in conditions if isinstance(c, Mapping)}
    if status.get("Ready") == "True":
        return "active"
    if status.get("Provisioned") == "True":
        return "unavailable"
    return "pending"

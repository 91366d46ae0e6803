"""The downstream objects of the Authorized Cluster Endpoint, as Rancher writes them into a cluster.

Two CRDs of ``cluster.cattle.io/v3`` (namespaced, in ``cattle-system``): ``ClusterAuthToken`` (a copy of
one cluster-scoped token, its hash in a Secret of the same name under data key ``hash``) and
``ClusterUserAttribute`` (the user's groups and enablement), plus the ConfigMap that mirrors the
``auth-provider-refresh-debounce-seconds`` setting. Field names are Rancher's, at the top level of the
object (these kinds have no ``spec``). Builders give the JSON bodies; readers turn them into values.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from corral.errors import CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTER_AUTH_TOKENS",
    "CLUSTER_USER_ATTRIBUTES",
    "DEBOUNCE_CONFIGMAP",
    "GROUP",
    "HASH_KEY",
    "NAMESPACE",
    "VERSION",
    "ClusterAuthToken",
    "ClusterUserAttribute",
    "ObjectFormatError",
    "cluster_auth_token_body",
    "cluster_user_attribute_body",
    "crd_manifests",
    "debounce_configmap_body",
    "debounce_seconds",
    "format_rfc3339",
    "hash_secret_body",
    "parse_rfc3339",
    "paths",
    "secret_hash",
]

GROUP = "cluster.cattle.io"
VERSION = "v3"
NAMESPACE = "cattle-system"
CLUSTER_AUTH_TOKENS = "clusterauthtokens"
CLUSTER_USER_ATTRIBUTES = "clusteruserattributes"
HASH_KEY = "hash"
"""The data key of a token's Secret that holds its hash."""
DEBOUNCE_CONFIGMAP = "auth-provider-refresh-debounce-seconds"
"""Name of the ConfigMap (and of the Rancher setting it mirrors); the number is in ``data.value``."""


class ObjectFormatError(CorralError):
    """A downstream object or one of its fields does not have the shape Rancher gives it."""


# -- time -----------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")


def parse_rfc3339(text: str, *, what: str) -> datetime:
    """Parse an RFC 3339 time with a zone, as Go's ``time.Parse(time.RFC3339, ...)`` accepts it."""
    if not _RFC3339.fullmatch(text):
        raise ObjectFormatError(f"{what} is not an RFC 3339 time with a zone: {text[:40]!r}")
    head, _, rest = text.replace("t", "T").replace("z", "Z").partition(".")
    if rest:  # Python takes at most 6 fractional digits
        digits = re.match(r"\d+", rest)
        assert digits is not None
        head = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    try:
        return datetime.fromisoformat(head.replace("Z", "+00:00"))
    except ValueError:
        raise ObjectFormatError(f"{what} is not a valid date and time: {text[:40]!r}") from None


def format_rfc3339(moment: datetime) -> str:
    """Whole seconds in UTC with a ``Z``: how Kubernetes serialises a ``metav1.Time``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- values read back -----------------------------------------------------------------------------


def _str(obj: Mapping[str, Any], key: str, kind: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ObjectFormatError(f"{kind}.{key} must be a string, got {type(value).__name__}")
    return value


def _bool(obj: Mapping[str, Any], key: str, kind: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ObjectFormatError(f"{kind}.{key} must be true or false, got {type(value).__name__}")
    return value


def _name(obj: Mapping[str, Any], kind: str) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ObjectFormatError(f"{kind} without metadata.name")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterAuthToken:
    """One ``ClusterAuthToken``: the downstream copy of a cluster-scoped token (never its secret)."""

    name: str
    user_name: str
    enabled: bool
    expires_at: str = ""
    """RFC 3339, or empty for a token that does not expire."""
    last_used_at: str = ""
    legacy_hash: str = field(default="", repr=False)
    """The deprecated ``hash`` field; kube-api-auth moves a value found here into the Secret."""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ClusterAuthToken:
        kind = "ClusterAuthToken"
        return cls(
            name=_name(obj, kind),
            user_name=_str(obj, "userName", kind),
            enabled=_bool(obj, "enabled", kind),
            expires_at=_str(obj, "expiresAt", kind),
            last_used_at=_str(obj, "lastUsedAt", kind),
            legacy_hash=_str(obj, "hash", kind),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterUserAttribute:
    """One ``ClusterUserAttribute``: what the cluster knows of a user (named by the user's ID)."""

    name: str
    groups: tuple[str, ...] = ()
    enabled: bool = False
    last_refresh: str = ""
    needs_refresh: bool = False
    extra_by_provider: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ClusterUserAttribute:
        kind = "ClusterUserAttribute"
        groups = obj.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ObjectFormatError(f"{kind}.groups must be a list of strings")
        return cls(
            name=_name(obj, kind),
            groups=tuple(groups),
            enabled=_bool(obj, "enabled", kind),
            last_refresh=_str(obj, "lastRefresh", kind),
            needs_refresh=_bool(obj, "needsRefresh", kind),
            extra_by_provider=_extra(obj.get("extraByProvider"), kind),
        )


def _extra(value: Any, kind: str) -> dict[str, dict[str, tuple[str, ...]]]:
    if value is None:
        return {}
    problem = f"{kind}.extraByProvider must map provider -> key -> list of strings"
    if not isinstance(value, Mapping):
        raise ObjectFormatError(problem)
    extra: dict[str, dict[str, tuple[str, ...]]] = {}
    for provider, keys in value.items():
        if not isinstance(keys, Mapping):
            raise ObjectFormatError(problem)
        extra[str(provider)] = {}
        for key, items in keys.items():
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ObjectFormatError(problem)
            extra[str(provider)][str(key)] = tuple(items)
    return extra


def secret_hash(secret: Mapping[str, Any]) -> str | None:
    """The hash a token's Secret holds under ``data.hash`` (None when the key is absent or unreadable)."""
    data = secret.get("data")
    encoded = data.get(HASH_KEY) if isinstance(data, Mapping) else None
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        logger.warning("secret %s: data.%s is not base64 of UTF-8 text", _safe_name(secret), HASH_KEY)
        return None


def _safe_name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name", "?")) if isinstance(metadata, Mapping) else "?"


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def debounce_seconds(configmap: Mapping[str, Any] | None) -> int:
    """The refresh debounce of the ConfigMap, or -1 (off) when it is missing, empty or not a number.

    As kube-api-auth reads it: ``data.value`` parsed as a base-10 64-bit integer, anything else is off.
    """
    data = configmap.get("data") if configmap is not None else None
    value = data.get("value") if isinstance(data, Mapping) else None
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        return -1
    number = int(value)
    return number if -(2**63) <= number < 2**63 else -1


# -- bodies written -------------------------------------------------------------------------------


def paths(namespace: str = NAMESPACE) -> dict[str, str]:
    """Collection paths of the objects in ``namespace``: tokens, attributes, secrets, configmaps."""
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}"
    return {
        CLUSTER_AUTH_TOKENS: f"{base}/{CLUSTER_AUTH_TOKENS}",
        CLUSTER_USER_ATTRIBUTES: f"{base}/{CLUSTER_USER_ATTRIBUTES}",
        "secrets": f"/api/v1/namespaces/{namespace}/secrets",
        "configmaps": f"/api/v1/namespaces/{namespace}/configmaps",
    }


def cluster_auth_token_body(
    *, name: str, user_name: str, enabled: bool, expires_at: str, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """A ``ClusterAuthToken`` with an empty ``hash`` (the hash lives in the Secret)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterAuthToken",
        "metadata": {"name": name, "namespace": namespace},
        "userName": user_name,
        "enabled": enabled,
        "expiresAt": expires_at,
        "hash": "",
    }


def hash_secret_body(*, name: str, hashed: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The Opaque Secret named after the token, its hash under ``data.hash``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {HASH_KEY: base64.b64encode(hashed.encode("utf-8")).decode("ascii")},
    }


def cluster_user_attribute_body(
    *,
    user_id: str,
    groups: tuple[str, ...] | list[str],
    enabled: bool,
    last_refresh: str = "",
    needs_refresh: bool = False,
    extra_by_provider: Mapping[str, Mapping[str, tuple[str, ...] | list[str]]] | None = None,
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """A ``ClusterUserAttribute`` with its groups sorted, as Rancher writes them."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterUserAttribute",
        "metadata": {"name": user_id, "namespace": namespace},
        "groups": sorted(groups),
        "enabled": enabled,
        "lastRefresh": last_refresh,
        "needsRefresh": needs_refresh,
    }
    if extra_by_provider:
        body["extraByProvider"] = {
            provider: {key: list(values) for key, values in keys.items()}
            for provider, keys in extra_by_provider.items()
        }
    return body


def debounce_configmap_body(*, seconds: int, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The ConfigMap mirroring the refresh-debounce setting (``data.value``, a decimal string)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": DEBOUNCE_CONFIGMAP, "namespace": namespace},
        "data": {"value": str(seconds)},
    }


def _crd(kind: str, plural: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": properties,
                            # Rancher's CRDs of these kinds keep fields they do not declare.
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


_STRING: dict[str, Any] = {"type": "string"}
_BOOLEAN: dict[str, Any] = {"type": "boolean"}


def crd_manifests() -> list[dict[str, Any]]:
    """The two CustomResourceDefinitions, with Rancher's field names and types."""
    token = _crd(
        "ClusterAuthToken",
        CLUSTER_AUTH_TOKENS,
        {
            "userName": _STRING,
            "enabled": _BOOLEAN,
            "expiresAt": _STRING,
            "lastUsedAt": {"type": "string", "format": "date-time", "nullable": True},
            "hash": _STRING,
        },
    )
    attribute = _crd(
        "ClusterUserAttribute",
        CLUSTER_USER_ATTRIBUTES,
        {
            "groups": {"type": "array", "items": _STRING},
            "enabled": _BOOLEAN,
            "lastRefresh": _STRING,
            "needsRefresh": _BOOLEAN,
            "extraByProvider": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": _STRING},
                },
            },
        },
    )
    return [token, attribute]


def now_utc() -> datetime:
    """The current time in UTC (one place to read the clock)."""
    return datetime.now(UTC)

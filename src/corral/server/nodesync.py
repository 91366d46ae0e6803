"""The node syncer and stats aggregator: downstream Nodes into management Nodes, their sums into the Cluster.

As Rancher's server does (its user-cluster node syncer and its cluster stats aggregator), the cluster
controller reads the downstream cluster's Nodes and keeps one ``management.cattle.io/v3`` Node per node in
the cluster's namespace upstream: the node's spec and a trimmed status (``internalNodeStatus``), its labels
and annotations, the roles its labels give, and ``requested``/``limits`` from the annotations the cluster
agent writes (`corral.agent.podresources`). The Cluster's status gets the sums of capacity, allocatable,
requested and limits (pods, memory, cpu) over the schedulable nodes, as Rancher counts them.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, Final, Literal

from corral.errors import ConflictError, KubeAPIError, NotFoundError
from corral.k8s.aio import AsyncKubeClient
from corral.k8s.quantity import Quantity, QuantityError, add_lists

logger = logging.getLogger(__name__)

__all__ = ["NodeSyncer", "cluster_stats", "management_node", "same_node"]

JSON = dict[str, Any]
MGMT: Final = "/apis/management.cattle.io/v3"
NODE_NAME_LABEL: Final = "management.cattle.io/nodename"
SYNCER_ANNOTATION: Final = "management.cattle.io/nodesyncer"
REQUESTS_ANNOTATION: Final = "management.cattle.io/pod-requests"
LIMITS_ANNOTATION: Final = "management.cattle.io/pod-limits"
_ROLE: Final = "node-role.kubernetes.io/"
_STAT_KEYS: Final = ("pods", "memory", "cpu")
_KEY_FORMATS: Final[dict[str, Literal["DecimalSI", "BinarySI"]]] = {
    "pods": "DecimalSI",
    "memory": "BinarySI",
    "cpu": "DecimalSI",
}


def _go_time(stamp: str) -> str:
    """An RFC 3339 time as Go's ``time.Time.String`` writes it (Rancher's condition times)."""
    if not stamp:
        return ""
    try:
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return parsed.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _resource_list(annotations: Mapping[str, str], key: str) -> dict[str, str]:
    text = annotations.get(key) or ""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _set_condition(conditions: list[JSON], wanted: JSON) -> None:
    for i, condition in enumerate(conditions):
        if condition.get("type") == wanted["type"]:
            conditions[i] = {**condition, **wanted}
            return
    conditions.append(wanted)


def management_node(node: Mapping[str, Any], existing: Mapping[str, Any] | None, *, cluster: str) -> JSON:
    """The management Node for downstream ``node``: ``existing`` updated, or a new one (``machine-`` name)."""
    metadata = node.get("metadata") or {}
    name = str(metadata.get("name") or "")
    labels = dict(metadata.get("labels") or {})
    annotations = dict(metadata.get("annotations") or {})
    status = copy.deepcopy(dict(node.get("status") or {}))
    machine: JSON
    if existing is None:
        machine = {
            "metadata": {"generateName": "machine-", "namespace": cluster},
            "spec": {"requestedHostname": name},
            "status": {"requested": {}, "limits": {}},
        }
    else:
        machine = copy.deepcopy(dict(existing))
    machine["apiVersion"] = "management.cattle.io/v3"
    machine["kind"] = "Node"
    meta = machine.setdefault("metadata", {})
    meta.setdefault("labels", {})[NODE_NAME_LABEL] = name
    meta.setdefault("annotations", {})[SYNCER_ANNOTATION] = "true"
    spec = machine.setdefault("spec", {})
    spec["internalNodeSpec"] = copy.deepcopy(dict(node.get("spec") or {}))
    out = machine.setdefault("status", {})
    requested = dict(out.get("requested") or {})
    requested.update(_resource_list(annotations, REQUESTS_ANNOTATION))
    limits = dict(out.get("limits") or {})
    limits.update(_resource_list(annotations, LIMITS_ANNOTATION))
    out["requested"], out["limits"] = requested, limits
    out["nodeLabels"] = labels
    etcd = f"{_ROLE}etcd" in labels
    control = f"{_ROLE}controlplane" in labels or f"{_ROLE}control-plane" in labels
    worker = f"{_ROLE}worker" in labels
    spec["etcd"], spec["controlPlane"] = etcd, control
    spec["worker"] = worker or not (etcd or control)
    out["nodeAnnotations"] = {
        k: v for k, v in annotations.items() if k not in (REQUESTS_ANNOTATION, LIMITS_ANNOTATION)
    }
    out["nodeName"] = name
    # Rancher's trimmed status: no images, volumes or config; of the conditions only Ready.
    for key in ("config", "volumesInUse", "volumesAttached", "images"):
        status.pop(key, None)
    ready = [c for c in status.get("conditions") or () if c.get("type") == "Ready"]
    status["conditions"] = ready
    out["internalNodeStatus"] = status
    conditions = [dict(c) for c in out.get("conditions") or ()]
    for condition in ready:
        _set_condition(
            conditions,
            {
                "type": "Ready",
                "status": condition.get("status", "Unknown"),
                "lastTransitionTime": _go_time(str(condition.get("lastTransitionTime") or "")),
                "lastUpdateTime": _go_time(str(condition.get("lastHeartbeatTime") or "")),
                "reason": condition.get("reason", ""),
                "message": condition.get("message", ""),
            },
        )
    _set_condition(
        conditions, {"type": "Registered", "status": "True", "message": "registered with kubernetes"}
    )
    out["conditions"] = conditions
    if not spec["internalNodeSpec"].get("unschedulable"):
        out["conditions"] = [c for c in conditions if c.get("type") != "Drained"]
        spec["desiredNodeUnschedulable"] = ""
    return machine


def _comparable(machine: Mapping[str, Any]) -> JSON:
    status = copy.deepcopy(dict(machine.get("status") or {}))
    internal = status.get("internalNodeStatus") or {}
    for condition in internal.get("conditions") or ():
        condition.pop("lastHeartbeatTime", None)
        condition.pop("lastTransitionTime", None)
    return {
        "spec": machine.get("spec") or {},
        "status": status,
        "labels": (machine.get("metadata") or {}).get("labels") or {},
        "annotations": (machine.get("metadata") or {}).get("annotations") or {},
    }


def same_node(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether writing ``wanted`` over ``existing`` would change nothing Rancher compares."""
    return _comparable(existing) == _comparable(wanted)


def _schedulable(machine: Mapping[str, Any]) -> bool:
    spec = machine.get("spec") or {}
    internal = spec.get("internalNodeSpec") or {}
    if internal.get("unschedulable"):
        return False
    if spec.get("worker"):
        return True
    for taint in internal.get("taints") or ():
        key = str(taint.get("key") or "")
        if key in (f"{_ROLE}controlplane", f"{_ROLE}control-plane", f"{_ROLE}etcd") and taint.get(
            "effect"
        ) in ("NoSchedule", "NoExecute"):
            return False
    return True


def cluster_stats(machines: Iterable[Mapping[str, Any]]) -> JSON:
    """The Cluster status fields Rancher's stats aggregator writes, from the cluster's management Nodes."""
    every = list(machines)
    counted = [m for m in every if _schedulable(m)]
    result: JSON = {"nodeCount": len(every)}
    workers: dict[str, int] = {}
    for machine in counted:
        os_name = ((machine.get("status") or {}).get("nodeLabels") or {}).get("kubernetes.io/os")
        if os_name and (machine.get("spec") or {}).get("worker"):
            workers[os_name] = workers.get(os_name, 0) + 1
    if "linux" in workers:
        result["linuxWorkerCount"] = workers["linux"]
    if "windows" in workers:
        result["windowsWorkerCount"] = workers["windows"]

    def lists(field: str) -> Iterable[Mapping[str, str]]:
        for machine in counted:
            status = machine.get("status") or {}
            source = (
                (status.get("internalNodeStatus") or {}) if field in ("capacity", "allocatable") else status
            )
            yield {k: v for k, v in (source.get(field) or {}).items() if k in _STAT_KEYS}

    for field in ("capacity", "allocatable", "requested", "limits"):
        try:
            sums = add_lists(lists(field))
        except QuantityError as e:
            logger.warning("a node's %s: %s", field, e)
            continue
        result[field] = {
            key: str(sums.get(key, Quantity(Fraction(0), _KEY_FORMATS[key]))) for key in _STAT_KEYS
        }
    return result


class NodeSyncer:
    """Keeps one cluster's management Nodes upstream in step with its downstream Nodes."""

    def __init__(self, upstream: AsyncKubeClient, *, cluster: str) -> None:
        self.upstream = upstream
        self.cluster = cluster
        self.collection = f"{MGMT}/namespaces/{cluster}/nodes"

    async def _ensure_namespace(self) -> None:
        body: JSON = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.cluster}}
        try:
            await self.upstream.create("/api/v1/namespaces", body)
        except KubeAPIError as e:
            if e.status != 409:
                raise

    async def sync(self, nodes: Iterable[Mapping[str, Any]]) -> list[JSON]:
        """Create, update and delete management Nodes for ``nodes``; returns the cluster's ones."""
        try:
            machines = (await self.upstream.list(self.collection)).get("items") or []
        except NotFoundError:
            await self._ensure_namespace()
            machines = []
        by_node: dict[str, JSON] = {}
        stale: list[JSON] = []
        for machine in machines:
            node_name = (machine.get("status") or {}).get("nodeName") or (
                (machine.get("metadata") or {}).get("labels") or {}
            ).get(NODE_NAME_LABEL)
            if node_name and node_name not in by_node:
                by_node[str(node_name)] = machine
            else:
                stale.append(machine)
        result: list[JSON] = []
        seen: set[str] = set()
        for node in nodes:
            name = str(node["metadata"]["name"])
            seen.add(name)
            result.append(await self._write(node, by_node.get(name)))
        stale.extend(machine for name, machine in by_node.items() if name not in seen)
        await self._remove(stale)
        return result

    async def _write(self, node: Mapping[str, Any], existing: JSON | None) -> JSON:
        wanted = management_node(node, existing, cluster=self.cluster)
        if existing is None:
            try:
                return await self.upstream.create(self.collection, wanted)
            except NotFoundError:
                await self._ensure_namespace()
                return await self.upstream.create(self.collection, wanted)
        if same_node(existing, wanted):
            return existing
        try:
            return await self.upstream.replace(f"{self.collection}/{existing['metadata']['name']}", wanted)
        except ConflictError:
            return existing  # the next round writes it

    async def _remove(self, stale: Iterable[Mapping[str, Any]]) -> None:
        for machine in stale:
            meta = machine.get("metadata") or {}
            if SYNCER_ANNOTATION not in (meta.get("annotations") or {}):
                continue  # as Rancher: only what the syncer made is removed
            await self.upstream.delete(f"{self.collection}/{meta['name']}")
            logger.info("cluster %s: removed management node %s", self.cluster, meta["name"])

"""Snapshots of one cluster's keys in etcd, made and restored by the node agent of an etcd node.

corral's local clusters may share one etcd, each under its own ``--etcd-prefix``, so a snapshot is
of the cluster's prefix, not of the whole store: every key under ``<prefix>/`` at one revision
(paged ranges pinned to the first page's revision), written as gzip'd JSON lines (mode 0600: it
holds the cluster's Secrets). A restore makes the prefix equal to the snapshot again -- keys the
snapshot lacks are deleted, changed and missing ones put back -- in transactions of at most
`TXN_OPS` operations, and touches no key outside the prefix. The apiserver sees the restore through
its watch as ordinary changes at new revisions, so it needs no restart (a whole-store restore rewinds
revisions and does). A namespace the restore removes is removed with its objects at once, not by
the namespace controller, so controllers that react to an object's deletion before they see its
namespace go may write it again: for a few seconds the restore deletes such objects again. Keys
lose their etcd leases (an Event restored this way no longer expires).
The store is reached through etcd's v3 JSON gateway (``/v3/kv/...``), so no etcdctl is needed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from corral.errors import CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "TXN_OPS",
    "EtcdSnapshotError",
    "EtcdStore",
    "RestoreResult",
    "SnapshotInfo",
    "restore_snapshot",
    "save_snapshot",
    "snapshot_info",
    "snapshot_path",
]

FORMAT: Final = "corral-etcd-prefix/v1"
TXN_OPS: Final = 100
"""Operations per transaction: below etcd's default ``--max-txn-ops`` of 128."""
TXN_BYTES: Final = 1024 * 1024
"""Bytes of keys and values per transaction: below etcd's default 1.5 MiB request limit."""
PAGE: Final = 500
ORPHAN_ROUNDS: Final = 3
ORPHAN_PAUSE_SECONDS: Final = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class EtcdSnapshotError(CorralError):
    """etcd refused or failed a request, or a snapshot file is missing or damaged."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    name: str
    prefix: str
    revision: int
    keys: int
    size: int
    created: str

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "revision": self.revision,
            "keys": self.keys,
            "size": self.size,
            "created": self.created,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    name: str
    put: int
    deleted: int
    unchanged: int

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "put": self.put, "deleted": self.deleted, "unchanged": self.unchanged}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's ``GetPrefixRangeEnd``)."""
    end = bytearray(prefix)
    for index in range(len(end) - 1, -1, -1):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\x00"


class EtcdStore:
    """One etcd (``http://host:port``) and one cluster's key prefix in it."""

    def __init__(self, endpoint: str, prefix: str, *, timeout_seconds: float = 30.0) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise EtcdSnapshotError(f"the etcd endpoint must be an http(s) URL, got {endpoint!r}")
        if not prefix.startswith("/") or prefix.rstrip("/") == "":
            raise EtcdSnapshotError(f"the etcd prefix must be an absolute key path, got {prefix!r}")
        self.endpoint = endpoint.rstrip("/")
        self.prefix = prefix.rstrip("/")
        self.timeout_seconds = timeout_seconds

    @property
    def key_prefix(self) -> bytes:
        """Every key of the cluster starts with this (the slash keeps ``/a/b`` from ``/a/bc``)."""
        return (self.prefix + "/").encode()

    async def _call(self, http: aiohttp.ClientSession, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            async with http.post(self.endpoint + path, json=body) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EtcdSnapshotError(f"etcd at {self.endpoint} unreachable: {exc or 'timed out'}") from None
        if status != 200:
            raise EtcdSnapshotError(f"etcd {path} answered HTTP {status}: {text[:200]}")
        try:
            answer: dict[str, Any] = json.loads(text)
        except ValueError:
            raise EtcdSnapshotError(f"etcd {path} answered something that is not JSON") from None
        return answer

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))

    async def read(self) -> tuple[int, dict[bytes, bytes]]:
        """``(revision, {key: value})`` of every key under the prefix, all at one revision."""
        start, end = self.key_prefix, _range_end(self.key_prefix)
        found: dict[bytes, bytes] = {}
        revision = 0
        async with self._session() as http:
            while True:
                body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end), "limit": PAGE}
                if revision:
                    body["revision"] = revision
                answer = await self._call(http, "/v3/kv/range", body)
                if not revision:
                    revision = int((answer.get("header") or {}).get("revision") or 0)
                kvs = answer.get("kvs") or []
                for kv in kvs:
                    found[base64.b64decode(kv["key"])] = base64.b64decode(kv.get("value") or "")
                if not answer.get("more") or not kvs:
                    return revision, found
                start = base64.b64decode(kvs[-1]["key"]) + b"\x00"

    async def apply(self, puts: Mapping[bytes, bytes], deletes: list[bytes]) -> None:
        """Write ``puts`` and delete ``deletes`` (keys under the prefix only) in bounded transactions."""
        ops: list[tuple[int, dict[str, Any]]] = []
        for key in deletes:
            self._check(key)
            ops.append((len(key), {"request_delete_range": {"key": _b64(key)}}))
        for key, value in puts.items():
            self._check(key)
            ops.append((len(key) + len(value), {"request_put": {"key": _b64(key), "value": _b64(value)}}))
        async with self._session() as http:
            for batch in _batches(ops):
                answer = await self._call(http, "/v3/kv/txn", {"success": batch})
                if answer.get("succeeded") is False:
                    raise EtcdSnapshotError("etcd refused a restore transaction")

    def _check(self, key: bytes) -> None:
        if not key.startswith(self.key_prefix):
            raise EtcdSnapshotError(f"refusing to write a key outside {self.prefix}/")


def _batches(ops: list[tuple[int, dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for weight, op in ops:
        if batch and (len(batch) >= TXN_OPS or size + weight > TXN_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(op)
        size += weight
    if batch:
        yield batch


def snapshot_path(folder: Path, name: str) -> Path:
    """The file of snapshot ``name`` in ``folder``; `EtcdSnapshotError` for a name that is not one."""
    if not _NAME.match(name):
        raise EtcdSnapshotError(
            "a snapshot name is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return folder / f"{name}.jsonl.gz"


async def save_snapshot(store: EtcdStore, folder: Path, name: str) -> SnapshotInfo:
    """Write every key of ``store``'s prefix to ``folder/<name>.jsonl.gz`` (0600); refuses to overwrite."""
    path = snapshot_path(folder, name)
    if path.exists():
        raise EtcdSnapshotError(f"snapshot {name} exists already")
    revision, found = await store.read()
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = {
        "format": FORMAT,
        "prefix": store.prefix,
        "revision": revision,
        "keys": len(found),
        "created": created,
    }
    await asyncio.to_thread(_write, path, header, found)
    logger.info("etcd snapshot %s: %d keys of %s at revision %d", name, len(found), store.prefix, revision)
    return SnapshotInfo(
        name=name,
        prefix=store.prefix,
        revision=revision,
        keys=len(found),
        size=path.stat().st_size,
        created=created,
    )


def _write(path: Path, header: Mapping[str, Any], found: Mapping[bytes, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
        out.write(json.dumps(header).encode() + b"\n")
        for key in sorted(found):
            out.write(json.dumps({"k": _b64(key), "v": _b64(found[key])}).encode() + b"\n")
    tmp.replace(path)


def _load(path: Path, name: str) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    try:
        with gzip.open(path, "rb") as stream:
            lines = stream.read().splitlines()
    except FileNotFoundError:
        raise EtcdSnapshotError(f"no snapshot {name}") from None
    except (OSError, EOFError) as exc:
        raise EtcdSnapshotError(f"snapshot {name} is damaged: {exc}") from None
    try:
        header = json.loads(lines[0])
        pairs = {base64.b64decode(d["k"]): base64.b64decode(d["v"]) for d in map(json.loads, lines[1:])}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EtcdSnapshotError(f"snapshot {name} is damaged: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise EtcdSnapshotError(f"snapshot {name} is not a {FORMAT} file")
    if header.get("keys") != len(pairs):
        raise EtcdSnapshotError(f"snapshot {name} is truncated: {len(pairs)} of {header.get('keys')} keys")
    return header, pairs


def snapshot_info(folder: Path, name: str) -> SnapshotInfo:
    path = snapshot_path(folder, name)
    header, pairs = _load(path, name)
    return SnapshotInfo(
        name=name,
        prefix=str(header["prefix"]),
        revision=int(header["revision"]),
        keys=len(pairs),
        size=path.stat().st_size,
        created=str(header["created"]),
    )


async def restore_snapshot(store: EtcdStore, folder: Path, name: str) -> RestoreResult:
    """Make ``store``'s prefix hold exactly the snapshot's keys and values again."""
    header, wanted = await asyncio.to_thread(_load, snapshot_path(folder, name), name)
    if header.get("prefix") != store.prefix:
        raise EtcdSnapshotError(f"snapshot {name} is of {header.get('prefix')}/, not of {store.prefix}/")
    _, live = await store.read()
    deletes = sorted(key for key in live if key not in wanted)
    puts = {key: value for key, value in wanted.items() if live.get(key) != value}
    await store.apply(puts, deletes)
    gone = {key.rpartition(b"/")[2] for key in deletes if key.startswith(store.key_prefix + b"namespaces/")}
    orphans = 0
    for _ in range(ORPHAN_ROUNDS if gone else 0):
        # Controllers that saw an object of a removed namespace go may write it again before they
        # see the namespace go (kube-root-ca.crt, the default ServiceAccount): delete those again.
        await asyncio.sleep(ORPHAN_PAUSE_SECONDS)
        _, live = await store.read()
        again = sorted(key for key in live if key not in wanted and key.split(b"/")[-2] in gone)
        await store.apply({}, again)
        orphans += len(again)
    logger.info(
        "etcd snapshot %s restored to %s: %d put, %d deleted, %d written again by controllers and deleted",
        name,
        store.prefix,
        len(puts),
        len(deletes),
        orphans,
    )
    return RestoreResult(
        name=name, put=len(puts), deleted=len(deletes) + orphans, unchanged=len(wanted) - len(puts)
    )

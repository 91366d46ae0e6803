"""Node operations a node agent serves to the server through its tunnel: etcd snapshots, for now.

The server reaches them by dialing `OPS_ADDRESS` through the node's session; the agent answers that
one address with an in-process HTTP server on a socket pair, so nothing on the node listens for
them and only the server (the session's other end) can call them. Routes (JSON bodies):

* ``GET /v1/etcd/snapshots/<name>``: what a snapshot holds (404 if none);
* ``POST /v1/etcd/snapshots`` ``{"name": N}``: snapshot the cluster's etcd prefix on this node;
* ``POST /v1/etcd/snapshots/<name>/restore``: make the prefix hold the snapshot again.

Snapshots are files on the node (`corral.agent.etcd`), as Rancher's RKE kept them on etcd nodes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Final

from aiohttp import web

from corral.agent.etcd import (
    EtcdSnapshotError,
    EtcdStore,
    restore_snapshot,
    save_snapshot,
    snapshot_info,
    snapshot_path,
)
from corral.tunnel.transport import AsyncioStream, LocalDialer, Pipe, Stream, dial_local

logger = logging.getLogger(__name__)

__all__ = ["OPS_ADDRESS", "OPS_HOST", "NodeOperations"]

OPS_HOST: Final = "node-agent.corral.invalid"
"""A name that resolves nowhere (``.invalid`` is reserved), so no real address is shadowed."""
OPS_ADDRESS: Final = f"{OPS_HOST}:80"


class NodeOperations:
    """The operations HTTP app of one node agent and the local dialer that reaches it."""

    def __init__(self, *, store: EtcdStore | None, snapshot_dir: Path) -> None:
        self.store = store
        self.snapshot_dir = snapshot_dir
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()

    @property
    def operations(self) -> list[str]:
        """What the agent offers, for its params (the server picks a node by it)."""
        return ["etcd-snapshot"] if self.store is not None else []

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/etcd/snapshots", self._create)
        app.router.add_get("/v1/etcd/snapshots/{name}", self._get)
        app.router.add_post("/v1/etcd/snapshots/{name}/restore", self._restore)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def dialer(self, fallback: LocalDialer = dial_local) -> LocalDialer:
        """Dials `OPS_ADDRESS` to the operations app, anything else as ``fallback`` does."""

        async def dial(proto: str, address: str) -> Stream | Pipe:
            if proto != "tcp" or address != OPS_ADDRESS or self._runner is None:
                return await fallback(proto, address)
            server = self._runner.server
            assert server is not None
            ours, theirs = socket.socketpair()
            loop = asyncio.get_running_loop()
            await loop.connect_accepted_socket(server, theirs)
            reader, writer = await asyncio.open_connection(sock=ours)
            return AsyncioStream(reader, writer)

        return dial

    # -- routes --------------------------------------------------------------------------------

    def _etcd(self) -> EtcdStore:
        if self.store is None:
            raise web.HTTPNotImplemented(text="this node agent has no etcd to snapshot")
        return self.store

    async def _create(self, request: web.Request) -> web.Response:
        store = self._etcd()
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON") from None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            raise web.HTTPBadRequest(text="name is required")
        async with self._lock:
            try:
                snapshot_path(self.snapshot_dir, name)
                info = await save_snapshot(store, self.snapshot_dir, name)
            except EtcdSnapshotError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response(info.document(), status=201)

    async def _get(self, request: web.Request) -> web.Response:
        self._etcd()
        name = request.match_info["name"]
        try:
            if not snapshot_path(self.snapshot_dir, name).exists():
                raise web.HTTPNotFound(text=f"no snapshot {name}")
            info = await asyncio.to_thread(snapshot_info, self.snapshot_dir, name)
        except EtcdSnapshotError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response(info.document())

    async def _restore(self, request: web.Request) -> web.Response:
        store = self._etcd()
        name = request.match_info["name"]
        async with self._lock:
            try:
                if not snapshot_path(self.snapshot_dir, name).exists():
                    raise web.HTTPNotFound(text=f"no snapshot {name}")
                result = await restore_snapshot(store, self.snapshot_dir, name)
            except EtcdSnapshotError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response(result.document())

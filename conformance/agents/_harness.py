"""A tunnel server for agent conformance: the connect endpoints, the tunnel dialer and the proxy over TLS.

A test seam, not the product's server: the registration token lookup and the registrar are stand-ins
(one token names one cluster; the registrar keeps what the cluster agent reported and the proxy's
cluster lookup serves it back), and the proxy's user is one fixed token bound to cluster-admin
downstream. Everything else is corral's own: `TunnelEndpoints`, `TunnelDialer`, `AuthProxy`, and the
agents are real ``corral agent`` processes started through `corral.agent.fleet`.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from corral.agent.config import ca_checksum
from corral.auth.identity import UserInfo
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.pki import CertificateAuthority
from corral.model.trace import Event
from corral.server.connect import ClusterParams, FastFailover, TunnelEndpoints
from corral.server.proxy import AuthProxy, ProxySettings
from corral.server.proxy_interfaces import (
    AccessReview,
    AuthenticationError,
    AuthRequest,
    ClusterTarget,
    ServiceAccountTokenError,
)
from corral.server.tunnel_dialer import DialPolicy, TunnelDialer
from corral.tunnel.testing import wait_until

USER_TOKEN = "token-agents:bcdfghjklmnpqrstvwxz2456789bcdfghjklmnpqrstvwxz24567"
REGISTRATION_TOKEN = "rtok2456789bcdfghjklmnpqrstvwxz2456789bcdfghjklmnpqrst"
USER = UserInfo(name="u-agents", extras={"principalid": ("local://u-agents",), "username": ("agents",)})
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@dataclass
class Seams:
    """The stand-ins: one token, one cluster, what its agent registered."""

    cluster: str
    registered: dict[str, ClusterParams] = field(default_factory=dict)

    async def cluster_for(self, token: str) -> str | None:
        return self.cluster if token == REGISTRATION_TOKEN else None

    async def register(self, cluster: str, params: ClusterParams) -> None:
        params.ca_pem  # noqa: B018 - refuses a CA that is not base64 of a PEM, as register_cluster does
        self.registered[cluster] = params

    async def authenticate(self, request: AuthRequest) -> UserInfo:
        if request.headers.get("Authorization", "") != f"Bearer {USER_TOKEN}":
            raise AuthenticationError("must authenticate")
        return USER

    async def token_owner(self, token_name: str) -> str | None:
        return USER.name

    async def can_access(self, cluster: str, user: UserInfo) -> bool:
        return cluster == self.cluster

    async def get(self, cluster: str) -> ClusterTarget | None:
        params = self.registered.get(cluster)
        if params is None:
            return None
        return ClusterTarget(name=cluster, api_endpoint=f"https://{params.address}", ca_pem=params.ca_pem)

    async def token_for(self, cluster: str, user: UserInfo) -> str:
        return self.registered[cluster].token  # cattle-admin, impersonating the user

    async def allowed(self, review: AccessReview, *, cluster: str | None) -> bool:
        return False


class _NoServiceAccountTokens:
    async def token_for(self, cluster: str, *, namespace: str, name: str, expiration_seconds: int) -> str:
        raise ServiceAccountTokenError("not offered here")


@dataclass
class TunnelServer:
    url: str
    ca_pem: bytes
    endpoints: TunnelEndpoints
    dialer: TunnelDialer
    seams: Seams
    events: list[Event]
    epoch: float
    authority: CertificateAuthority
    """The CA of the server's certificate: a restarted server presents one from the same CA."""

    @property
    def checksum(self) -> str:
        return ca_checksum(self.ca_pem.decode())

    def now(self) -> float:
        return time.monotonic() - self.epoch

    async def wait_sessions(self, key: str, count: int = 1, *, timeout_seconds: float = 60.0) -> None:
        def enough() -> bool:
            return len([s for s in self.endpoints.manager.sessions(key) if not s.closed]) >= count

        await wait_until(enough, f"{count} session(s) of {key}", timeout_seconds=timeout_seconds)

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "corral",
                    "cluster": {
                        "server": f"{self.url}/k8s/clusters/{self.seams.cluster}",
                        "certificate-authority-data": __import__("base64").b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "u", "user": {"token": USER_TOKEN}}],
            "contexts": [{"name": "corral", "context": {"cluster": "corral", "user": "u"}}],
            "current-context": "corral",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path


def grant_user(handle: ClusterHandle) -> None:
    """The proxy's user may do anything downstream (the tests are about the path, not RBAC)."""
    with handle.client() as admin:
        admin.apply(
            f"{RBAC}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "corral-agents-test-user"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER.name}],
            },
        )


@asynccontextmanager
async def tunnel_server(
    cluster: str,
    folder: Path,
    *,
    fast: bool = False,
    policy: DialPolicy | None = None,
    port: int = 0,
    authority: CertificateAuthority | None = None,
) -> AsyncIterator[TunnelServer]:
    """The server on 127.0.0.1 over TLS, in Rancher's mode or the fast one.

    A restart is the same ``port`` and ``authority`` again (the agents trust that CA's checksum).
    """
    authority = authority or CertificateAuthority.create("agents test CA")
    serving = authority.issue_serving("corral-server", hosts=["127.0.0.1"])
    cert, key = folder / "tls.crt", folder / "tls.key"
    cert.write_bytes(serving.cert_pem)
    key.write_bytes(serving.key_pem)
    key.chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    epoch = time.monotonic()
    events: list[Event] = []

    def trace_time() -> float:
        return time.monotonic() - epoch

    seams = Seams(cluster)
    endpoints = TunnelEndpoints(
        tokens=seams,
        registrar=seams,
        fast=FastFailover() if fast else None,
        trace_sink=events.append,
        trace_time=trace_time,
    )
    dialer = TunnelDialer(
        endpoints,
        clusters=seams,
        policy=policy or DialPolicy(retry_sessions=fast),
        trace_sink=events.append,
        trace_time=trace_time,
    )
    proxy = AuthProxy(
        authenticator=seams,
        clusters=seams,
        accounts=seams,
        reviewer=seams,
        service_account_tokens=_NoServiceAccountTokens(),
        dialer=dialer,
        settings=ProxySettings(retry_idempotent=fast),  # as corral server --fast-failover sets it
        trace_sink=events.append,
        trace_time=trace_time,
    )
    cacerts = authority.cert_pem.decode()

    async def settings_cacerts(_: web.Request) -> web.Response:
        return web.json_response({"type": "setting", "id": "cacerts", "value": cacerts})

    app = web.Application()
    app.router.add_get("/v3/settings/cacerts", settings_cacerts)
    endpoints.add_routes(app)
    proxy.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield TunnelServer(url, authority.cert_pem, endpoints, dialer, seams, events, epoch, authority)
    finally:
        await endpoints.close()
        await proxy.close()
        await runner.cleanup()

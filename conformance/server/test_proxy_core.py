"""The proxy's HTTP core against a real kube-apiserver: kubectl works as the user, smuggling gains nothing.

The per-user impersonation account is made by hand here (namespace, ClusterRole allowing only the
impersonation of one user, ServiceAccount, binding, a TokenRequest token), as Rancher would make
it; the proxy reaches the cluster with a `DirectDialer`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle, ClusterSet
from corral.controlplane.pki import CertificateAuthority
from corral.k8s import KubeClient, wait_for
from corral.k8s.kubeconfig import KubeConfig
from corral.server.proxy import AuthProxy
from corral.server.proxy_dial import DirectDialer
from corral.server.proxy_interfaces import (
    AccessReview,
    AuthenticationError,
    AuthRequest,
    ClusterTarget,
    ServiceAccountTokenError,
)

NAMESPACE = "cattle-impersonation-system"
TOKEN = "token-proxytest:bcdfghjklmnpqrstvwxz2456789bcdfghjklmnpqrstvwxz24567"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class Setup:
    handle: ClusterHandle
    user: UserInfo
    namespace: str
    sa_token: str


def impersonation_role(user: UserInfo) -> dict[str, object]:
    """Rancher's rules for one user (users, requesttokenid, requesthost, groups, principalid, username)."""
    auth = "authentication.k8s.io"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"cattle-impersonation-{user.name}"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["users"],
                "verbs": ["impersonate"],
                "resourceNames": [user.name],
            },
            {"apiGroups": [auth], "resources": ["userextras/requesttokenid"], "verbs": ["impersonate"]},
            {"apiGroups": [auth], "resources": ["userextras/requesthost"], "verbs": ["impersonate"]},
            {
                "apiGroups": [""],
                "resources": ["groups"],
                "verbs": ["impersonate"],
                "resourceNames": list(user.groups),
            },
            {
                "apiGroups": [auth],
                "resources": ["userextras/principalid"],
                "verbs": ["impersonate"],
                "resourceNames": list(user.extras["principalid"]),
            },
            {
                "apiGroups": [auth],
                "resources": ["userextras/username"],
                "verbs": ["impersonate"],
                "resourceNames": list(user.extras["username"]),
            },
        ],
    }


@pytest.fixture
def setup(cluster_set: ClusterSet) -> Iterator[Setup]:
    handle = next(iter(cluster_set))
    suffix = uuid.uuid4().hex[:8]
    user = UserInfo(
        name=f"u-{suffix}",
        extras={"principalid": (f"local://u-{suffix}",), "username": ("proxy tester",)},
        token_name="token-proxytest",
    )
    account = f"cattle-impersonation-{user.name}"
    namespace = f"t-proxy-{suffix}"
    with handle.client() as admin:
        admin.apply(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        admin.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        admin.create(f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "hello"}})
        admin.apply(f"{RBAC}/clusterroles", impersonation_role(user))
        admin.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {"metadata": {"name": account}})
        admin.apply(
            f"{RBAC}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": account},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
            },
        )
        admin.create(
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            {
                "metadata": {"name": "view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user.name}],
            },
        )
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        sa_token = admin.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token", request)[
            "status"
        ]["token"]
        sa_user = f"system:serviceaccount:{NAMESPACE}:{account}"
        wait_for(
            lambda: admin.allows(sa_user, [], "impersonate", "users", name=user.name),
            timeout_seconds=30,
            what="the impersonation ClusterRoleBinding to take effect",
        )
        wait_for(
            lambda: admin.allows(user.name, [], "list", "configmaps", namespace=namespace),
            timeout_seconds=30,
            what="the user's RoleBinding to take effect",
        )
        try:
            yield Setup(handle=handle, user=user, namespace=namespace, sa_token=sa_token)
        finally:
            for path in (
                f"/api/v1/namespaces/{namespace}",
                f"{RBAC}/clusterrolebindings/{account}",
                f"{RBAC}/clusterroles/{account}",
                f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}",
            ):
                admin.delete(path)


class _Seams:
    """One user with one token, one cluster, the hand-made account; every --as review is refused."""

    def __init__(self, s: Setup) -> None:
        self.s = s

    async def authenticate(self, request: AuthRequest) -> UserInfo:
        if request.headers.get("Authorization", "") != f"Bearer {TOKEN}":
            raise AuthenticationError("must authenticate")
        return self.s.user

    async def token_owner(self, token_name: str) -> str | None:
        return self.s.user.name if token_name == self.s.user.token_name else None

    async def can_access(self, cluster: str, user: UserInfo) -> bool:
        return cluster == self.s.handle.name

    async def get(self, cluster: str) -> ClusterTarget | None:
        if cluster != self.s.handle.name:
            return None
        ca = self.s.handle.ca_pem.decode() if self.s.handle.ca_pem else None
        return ClusterTarget(name=cluster, api_endpoint=self.s.handle.server, ca_pem=ca)

    async def token_for(self, cluster: str, user: UserInfo) -> str:
        return self.s.sa_token

    async def allowed(self, review: AccessReview, *, cluster: str | None) -> bool:
        return False


class _NoServiceAccountTokens:
    async def token_for(self, cluster: str, *, namespace: str, name: str, expiration_seconds: int) -> str:
        raise ServiceAccountTokenError("not offered in this test")


@dataclass(frozen=True)
class Served:
    url: str
    ca_pem: bytes


@pytest.fixture
async def proxy(setup: Setup, tmp_path: Path) -> AsyncIterator[Served]:
    """The proxy over TLS (kubectl sends a bearer token only over TLS), certificate for 127.0.0.1."""
    authority = CertificateAuthority.create("proxy test CA")
    serving = authority.issue_serving("corral-server", hosts=["127.0.0.1"])
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(serving.cert_pem)
    key.write_bytes(serving.key_pem)
    key.chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seams = _Seams(setup)
    proxy = AuthProxy(
        authenticator=seams,
        clusters=seams,
        accounts=seams,
        reviewer=seams,
        service_account_tokens=_NoServiceAccountTokens(),
        dialer=DirectDialer(timeout_seconds=10),
    )
    app = web.Application()
    proxy.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"https://127.0.0.1:{port}/k8s/clusters/{setup.handle.name}", authority.cert_pem)
    finally:
        await runner.cleanup()
        await proxy.close()


async def kubectl(binaries: build.Built, kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(binaries["kubectl"]),
        f"--kubeconfig={kubeconfig}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


def proxy_kubeconfig(served: Served, tmp_path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "proxy",
                "cluster": {
                    "server": served.url,
                    "certificate-authority-data": base64.b64encode(served.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "u"}}],
        "current-context": "proxy",
    }
    path = tmp_path / "proxy.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@pytest.mark.requirement("PROXY-001", "PROXY-004", "PROXY-005", "PROXY-007")
async def test_kubectl_through_the_proxy_acts_as_the_user(
    setup: Setup, proxy: Served, corral_binaries: build.Built, tmp_path: Path
) -> None:
    config = proxy_kubeconfig(proxy, tmp_path)
    code, out, err = await kubectl(
        corral_binaries, config, "get", "configmaps", "-n", setup.namespace, "-o", "name"
    )
    assert code == 0, err
    assert "configmap/hello" in out.split()
    code, out, err = await kubectl(corral_binaries, config, "auth", "whoami", "-o", "json")
    assert code == 0, err
    identity = json.loads(out)["status"]["userInfo"]
    assert identity["username"] == setup.user.name
    assert set(identity["groups"]) >= set(AUTHENTICATED_GROUPS)
    assert identity["extra"]["requesttokenid"] == ["token-proxytest"]
    assert identity["extra"]["principalid"] == [f"local://{setup.user.name}"]
    # the user may not read secrets, through the proxy as directly
    code, _, err = await kubectl(corral_binaries, config, "get", "secrets", "-n", setup.namespace)
    assert code != 0
    assert "forbidden" in err.lower()


SMUGGLING = [
    [("Impersonate-Group", "system:masters")],
    [("Connection", "Impersonate-User, Impersonate-Group"), ("Impersonate-Group", "system:masters")],
    [("impersonate-group", "system:masters"), ("Impersonate_Group", "system:masters")],
    [("Impersonate-Uid", "0"), ("Impersonate-Extra-Scopes", "admin")],
    [("Connection", "Authorization"), ("Authorization", "Bearer x")],
]


@pytest.mark.requirement("PROXY-008", "PROXY-010")
async def test_smuggled_impersonation_gains_nothing(setup: Setup, proxy: Served) -> None:
    secrets = f"{proxy.url}/api/v1/namespaces/kube-system/secrets"
    trust = ssl.create_default_context(cadata=proxy.ca_pem.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
        for attack in SMUGGLING:
            headers = [("Authorization", f"Bearer {TOKEN}"), *attack]
            async with http.get(secrets, headers=headers) as r:
                assert r.status == 403, attack
                status = await r.json()
                assert f'User "{setup.user.name}" cannot list resource "secrets"' in status["message"]
        as_admin = [("Authorization", f"Bearer {TOKEN}"), ("Impersonate-User", "system:admin")]
        async with http.get(secrets, headers=as_admin) as r:
            assert (r.status, await r.text()) == (403, "not allowed to impersonate user")


@pytest.mark.requirement("IMP-007")
def test_the_impersonation_account_alone_can_do_nothing(setup: Setup) -> None:
    """Why Rancher uses one account per user: without its impersonation headers the token is powerless."""
    bare = KubeConfig(server=setup.handle.server, ca_pem=setup.handle.ca_pem, token=setup.sa_token)
    with KubeClient(bare) as client:
        assert not client.can_i("list", "configmaps", namespace=setup.namespace)
        assert not client.can_i("list", "secrets", namespace="kube-system")

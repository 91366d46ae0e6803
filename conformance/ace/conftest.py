"""One cluster whose kube-apiserver asks a real `corral kube-api-auth` process about bearer tokens.

The webhook config points at a port chosen before the cluster starts; kube-api-auth starts after,
with the cluster's admin kubeconfig, once the ACE CRDs exist. Users reach the apiserver with the real
kubectl through a kubeconfig whose ACE context `add_ace_contexts` wrote. Local provider only.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import string
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from corral.auth import hashers
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.local import LocalProvider
from corral.controlplane.processes import free_port
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth import sync, testing
from corral.kubeapiauth.kubeconfig import ControlPlaneEndpoint, add_ace_contexts
from corral.model import Scenario

T = TypeVar("T")

CLUSTER = "acme"
SCENARIO = Scenario.from_dict(
    {
        "name": "ace",
        "regions": ["us"],
        "clusters": [
            {"name": CLUSTER, "region": "us", "nodes": [{"name": "acme-cp", "roles": ["controlplane"]}]}
        ],
    }
)
_ALPHABET = string.ascii_lowercase + string.digits


def token_secret() -> str:
    """54 characters of [a-z0-9], the shape of a Rancher token's secret."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(54))


@dataclass
class Ace:
    """The cluster, its kube-api-auth and the secrets handed out (to look for in the logs)."""

    handle: ClusterHandle
    kubectl: Path
    auth_url: str
    log: Path
    trace: Path
    folder: Path
    handed_out: list[str] = field(default_factory=list)

    def call(self, work: Callable[[AsyncKubeClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncKubeClient(self.handle.admin_config()) as client:
                return await work(client)

        return asyncio.run(main())

    def new_token(self, user: str, *, name: str = "", **changes: Any) -> tuple[sync.TokenCopy, str]:
        """A cluster-scoped SHA3 token of ``user`` (not written anywhere yet) and its bearer string."""
        secret = token_secret()
        self.handed_out.append(secret)
        name = name or f"kubeconfig-{user}-{secrets.token_hex(3)}"
        fields: dict[str, Any] = {
            "name": name,
            "user_id": user,
            "cluster": CLUSTER,
            "enabled": True,
            "expires_at": "",
            "hashed": hashers.hash_secret(secret),
        }
        fields.update(changes)
        return sync.TokenCopy(**fields), f"{name}:{secret}"

    def sync_user(self, user: str, groups: tuple[str, ...] = (), *, enabled: bool = True) -> None:
        copy = sync.UserCopy(user_id=user, groups=groups, enabled=enabled)
        self.call(lambda c: sync.upsert_user_attribute(c, copy))

    def sync_token(self, token: sync.TokenCopy) -> None:
        self.call(lambda c: sync.upsert_token(c, token, cluster=CLUSTER))

    def kubeconfig(self, bearer: str) -> Path:
        """A kubeconfig as the server generates it plus its ACE context, ``acme-cp``, made current."""
        generated = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CLUSTER, "cluster": {"server": "https://127.0.0.1:9/k8s/clusters/c-acme"}}],
            "users": [{"name": CLUSTER, "user": {"token": bearer}}],
            "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": CLUSTER}}],
            "current-context": CLUSTER,
        }
        endpoint = ControlPlaneEndpoint(node="acme-cp", server=self.handle.server)
        document = add_ace_contexts(
            generated, cluster_name=CLUSTER, cluster_ca_pem=self.handle.ca_pem, nodes=[endpoint]
        )
        document["current-context"] = "acme-cp"
        path = self.folder / f"kubeconfig-{secrets.token_hex(4)}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        path.chmod(0o600)
        return path

    def kubectl_as(self, bearer: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run_kubectl(self.kubeconfig(bearer), *args)

    def run_kubectl(self, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), f"--kubeconfig={kubeconfig}", "--request-timeout=20s", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "HOME": str(self.folder)},
        )

    def post(self, body: bytes, path: str = "/v1/authenticate") -> tuple[int, str, bytes]:
        """One request straight to kube-api-auth: status, Content-Type, body."""
        host, port = self.auth_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            connection.close()

    def review(self, bearer: str) -> tuple[int, str, bytes]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": bearer}}
        return self.post(json.dumps(body).encode())


@pytest.fixture(scope="package")
def ace(corral_binaries: build.Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ace]:
    folder = tmp_path_factory.mktemp("ace")
    # As Rancher writes it (§5.4): a kubeconfig whose server is kube-api-auth's authenticate route.
    hook = testing.webhook(folder, port=free_port())
    # No TokenReview version, as Rancher starts the apiserver: kube-api-auth answers in v1beta1, the
    # default, which an apiserver told to speak v1 could not convert ("unknown conversion").
    provider = LocalProvider(binaries=corral_binaries, webhooks={CLUSTER: hook.config}, webhook_version=None)
    run_dir = folder / "run"
    handle = provider.up(SCENARIO, run_dir)[CLUSTER]
    log, trace = folder / "kube-api-auth.log", folder / "trace.jsonl"
    try:
        ace = Ace(
            handle=handle,
            kubectl=Path(corral_binaries["kubectl"]),
            auth_url=hook.url,
            log=log,
            trace=trace,
            folder=folder,
        )
        ace.call(sync.ensure_crds)
        with testing.running(
            port=hook.port, kubeconfig=handle.kubeconfig, cluster_id=CLUSTER, trace=trace, log=log
        ):
            yield ace
    finally:
        provider.down(run_dir)

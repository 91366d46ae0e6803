"""Both clients built from each kind of kubeconfig, against a loopback HTTPS server that plays the apiserver.

Client certificates, token files, exec plugins (token or certificate, refreshed on expiry),
insecure-skip-tls-verify, tls-server-name, a wrong CA; and no credential file left behind.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import ssl
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.controlplane.pki import CertificateAuthority
from corral.errors import ConfigError, KubeAPIError
from corral.k8s import ExecPlugin, KubeClient, KubeConfig
from corral.k8s.aio import AsyncKubeClient
from tests.controlplane.fake_api import FakeAPI, serve

FLAVOURS = ("sync", "async")


@dataclass
class Authorities:
    serving: CertificateAuthority
    clients: CertificateAuthority


@pytest.fixture(scope="module")
def authorities() -> Authorities:
    return Authorities(
        CertificateAuthority.create("fake serving CA"), CertificateAuthority.create("fake client CA")
    )


def _server_context(folder: Path, authorities: Authorities, *, hosts: tuple[str, ...]) -> ssl.SSLContext:
    pair = authorities.serving.issue_serving("fake-apiserver", hosts=hosts)
    (folder / "serving.crt").write_bytes(pair.cert_pem)
    (folder / "serving.key").write_bytes(pair.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "serving.crt", folder / "serving.key")
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=authorities.clients.cert_pem.decode())
    return context


@pytest.fixture
def https(tmp_path_factory: pytest.TempPathFactory, authorities: Authorities) -> Iterator[FakeAPI]:
    folder = tmp_path_factory.mktemp("tls")
    with serve(_server_context(folder, authorities, hosts=("127.0.0.1",))) as fake:
        fake.answers[("GET", "/version")] = (200, {"gitVersion": "v1.36.3"})
        yield fake


def fetch(config: KubeConfig, flavour: str, path: str = "/version", times: int = 1) -> list[dict[str, Any]]:
    """GET ``path`` ``times`` times with a fresh client of the given flavour."""
    if flavour == "sync":
        with KubeClient(config, timeout_seconds=10) as client:
            return [client.get(path) for _ in range(times)]

    async def run() -> list[dict[str, Any]]:
        async with AsyncKubeClient(config, timeout_seconds=10) as client:
            return [await client.get(path) for _ in range(times)]

    return asyncio.run(run())


def loaded(tmp_path: Path, config: KubeConfig) -> KubeConfig:
    """The config as a file would give it back (every kubeconfig kind goes through the reader)."""
    return KubeConfig.load(config.write(tmp_path / "kubeconfig.yml"))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_client_certificate_kubeconfig_authenticates_with_its_certificate(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, flavour: str
) -> None:
    pair = authorities.clients.issue_client("alice", ["devs"])
    config = KubeConfig(
        server=https.url, ca_pem=authorities.serving.cert_pem, cert_pem=pair.cert_pem, key_pem=pair.key_pem
    )
    assert fetch(loaded(tmp_path, config), flavour) == [{"gitVersion": "v1.36.3"}]
    assert https.seen[0].client_cn == "alice"
    assert https.seen[0].header("Authorization") == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_token_file_kubeconfig_sends_the_token_as_bearer(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, flavour: str
) -> None:
    (tmp_path / "ca.crt").write_bytes(authorities.serving.cert_pem)
    (tmp_path / "token").write_text("file-token\n")
    document = {
        "clusters": [{"name": "c", "cluster": {"server": https.url, "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"tokenFile": "token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    config = KubeConfig.from_dict(document, base_dir=tmp_path)
    fetch(config, flavour)
    assert https.seen[0].header("Authorization") == ["Bearer file-token"]
    assert https.seen[0].client_cn is None


PLUGIN = """\
import json, os, pathlib, sys
here = pathlib.Path(__file__).parent
count = here / "runs"
runs = len(count.read_text().splitlines()) + 1 if count.exists() else 1
count.write_text("run\\n" * runs)
mode = os.environ["PLUGIN_MODE"]
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
if mode == "fail":
    sys.stderr.write("no login session\\n")
    sys.exit(3)
if mode == "token":
    status = {"token": f"exec-{runs}", "expirationTimestamp": os.environ["PLUGIN_EXPIRES"]}
else:
    status = {
        "clientCertificateData": (here / "exec.crt").read_text(),
        "clientKeyData": (here / "exec.key").read_text(),
    }
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"""


def plugin_config(
    folder: Path, server: str, ca_pem: bytes, *, mode: str, expires_in: datetime.timedelta | None = None
) -> KubeConfig:
    """A kubeconfig file whose exec plugin is a script beside it, named by a relative path."""
    script = folder / "plugin.py"
    script.write_text(f"#!{sys.executable}\n" + PLUGIN)
    script.chmod(0o700)
    expires = datetime.datetime.now(datetime.UTC) + (expires_in or datetime.timedelta(hours=1))
    document = {
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": "./plugin.py",
                        "env": [
                            {"name": "PLUGIN_MODE", "value": mode},
                            {"name": "PLUGIN_EXPIRES", "value": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = folder / "kubeconfig.yml"
    path.write_text(json.dumps(document))
    return KubeConfig.load(path)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def plugin_runs(folder: Path) -> int:
    return len((folder / "runs").read_text().splitlines())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_exec_plugin_token_is_sent_and_reused_while_it_is_valid(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, flavour: str
) -> None:
    config = plugin_config(tmp_path, https.url, authorities.serving.cert_pem, mode="token")
    assert config.exec_plugin == ExecPlugin(
        command=str(tmp_path / "plugin.py"),
        api_version="client.authentication.k8s.io/v1",
        env=config.exec_plugin.env if config.exec_plugin else (),
        interactive_mode="Never",
    )
    fetch(config, flavour, times=2)
    assert [seen.header("Authorization") for seen in https.seen] == [["Bearer exec-1"], ["Bearer exec-1"]]
    assert plugin_runs(tmp_path) == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_exec_plugin_token_about_to_expire_is_refreshed_before_a_request(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, flavour: str
) -> None:
    soon = datetime.timedelta(minutes=1)  # inside the clients' five minutes of skew: expired for them
    config = plugin_config(tmp_path, https.url, authorities.serving.cert_pem, mode="token", expires_in=soon)
    fetch(config, flavour, times=2)
    tokens = [seen.header("Authorization")[0] for seen in https.seen]
    assert all(token.startswith("Bearer exec-") for token in tokens)
    assert len(set(tokens)) == 2
    assert "Bearer exec-1" not in tokens


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_exec_plugin_may_answer_with_a_client_certificate(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, flavour: str
) -> None:
    pair = authorities.clients.issue_client("exec-bob")
    (tmp_path / "exec.crt").write_bytes(pair.cert_pem)
    (tmp_path / "exec.key").write_bytes(pair.key_pem)
    config = plugin_config(tmp_path, https.url, authorities.serving.cert_pem, mode="cert")
    fetch(config, flavour)
    assert https.seen[0].client_cn == "exec-bob"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failing_exec_plugin_is_a_config_error_naming_the_user(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, flavour: str
) -> None:
    config = plugin_config(tmp_path, https.url, authorities.serving.cert_pem, mode="fail")
    with pytest.raises(ConfigError, match=r"kubeconfig user 'u': .*exec"):
        fetch(config, flavour)
    assert https.seen == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_insecure_skip_tls_verify_accepts_an_unknown_ca_and_without_it_the_handshake_fails(
    https: FakeAPI, tmp_path: Path, flavour: str
) -> None:
    insecure = KubeConfig(server=https.url, token="t", insecure_skip_tls_verify=True)
    assert fetch(loaded(tmp_path, insecure), flavour) == [{"gitVersion": "v1.36.3"}]
    wrong_ca = KubeConfig(server=https.url, token="t", ca_pem=CertificateAuthority.create("other").cert_pem)
    with pytest.raises(KubeAPIError) as error:
        fetch(wrong_ca, flavour)
    assert (error.value.status, error.value.reason) == (0, "ConnectionError")
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value)
    assert len(https.seen) == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tls_server_name_verifies_the_certificate_against_another_name(
    tmp_path: Path, authorities: Authorities, flavour: str
) -> None:
    with serve(_server_context(tmp_path, authorities, hosts=("kube.internal",))) as fake:
        fake.answers[("GET", "/version")] = (200, {"gitVersion": "v1.36.3"})
        named = KubeConfig(
            server=fake.url, ca_pem=authorities.serving.cert_pem, tls_server_name="kube.internal"
        )
        assert fetch(loaded(tmp_path, named), flavour) == [{"gitVersion": "v1.36.3"}]
        with pytest.raises(KubeAPIError, match="cannot reach"):
            fetch(KubeConfig(server=fake.url, ca_pem=authorities.serving.cert_pem), flavour)


def test_a_key_that_does_not_match_its_certificate_is_a_config_error(authorities: Authorities) -> None:
    alice, bob = authorities.clients.issue_client("alice"), authorities.clients.issue_client("bob")
    config = KubeConfig(server="https://127.0.0.1:1", cert_pem=alice.cert_pem, key_pem=bob.key_pem)
    with pytest.raises(
        ConfigError, match="kubeconfig user 'user': the client certificate and key do not load"
    ):
        KubeClient(config)


def test_no_credential_file_outlives_building_and_using_the_clients(
    https: FakeAPI, authorities: Authorities, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    plugin_folder = tmp_path / "plugin"
    plugin_folder.mkdir()
    bob = authorities.clients.issue_client("exec-bob")
    (plugin_folder / "exec.crt").write_bytes(bob.cert_pem)
    (plugin_folder / "exec.key").write_bytes(bob.key_pem)
    alice = authorities.clients.issue_client("alice")
    configs = [
        KubeConfig(
            server=https.url,
            ca_pem=authorities.serving.cert_pem,
            cert_pem=alice.cert_pem,
            key_pem=alice.key_pem,
        ),
        plugin_config(plugin_folder, https.url, authorities.serving.cert_pem, mode="cert"),
    ]
    for config in configs:
        for flavour in FLAVOURS:
            fetch(config, flavour)
    assert [seen.client_cn for seen in https.seen] == ["alice", "alice", "exec-bob", "exec-bob"]
    assert os.listdir(scratch) == []

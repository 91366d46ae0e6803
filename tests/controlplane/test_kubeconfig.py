"""Kubeconfigs: what corral writes reads back the same, other shapes load, secrets stay hidden."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from corral.errors import ConfigError
from corral.k8s import KubeConfig

CONFIG = KubeConfig(
    server="https://127.0.0.1:6443",
    ca_pem=b"-----CA-----\n",
    cert_pem=b"-----CERT-----\n",
    key_pem=b"-----KEY-----\n",
    cluster_name="c-us",
    user_name="c-us-admin",
)


def test_a_written_kubeconfig_reads_back_equal_and_is_private(tmp_path: Path) -> None:
    path = CONFIG.write(tmp_path / "kube_config_c-us.yml", context="c-us")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert KubeConfig.load(path) == CONFIG
    document = yaml.safe_load(path.read_text())
    assert document["current-context"] == "c-us"
    assert base64.b64decode(document["users"][0]["user"]["client-key-data"]) == b"-----KEY-----\n"


def test_files_referenced_relative_to_the_kubeconfig_and_tokens_are_read(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"ca-bytes")
    (tmp_path / "token").write_text("s3cret\n")
    document = {
        "clusters": [{"name": "x", "cluster": {"server": "https://h:1/", "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"tokenFile": "token", "as": "bob", "as-groups": ["g1", "g2"]}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "x", "user": "u"}}],
        "current-context": "ctx",
    }
    (tmp_path / "config").write_text(yaml.safe_dump(document))
    config = KubeConfig.load(tmp_path / "config")
    assert config.server == "https://h:1"
    assert config.ca_pem == b"ca-bytes"
    assert config.token == "s3cret"
    assert (config.impersonate_user, config.impersonate_groups) == ("bob", ("g1", "g2"))


def test_secrets_never_appear_in_the_repr() -> None:
    text = repr(CONFIG.impersonating("eve", ("g",)))
    assert "KEY" not in text
    assert "CERT" not in text
    with_token = KubeConfig(server="https://h", token="tok-123456")
    assert "tok-123456" not in repr(with_token)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a mapping"),
        ({"contexts": []}, "no current-context and 0 contexts"),
        ({"current-context": "nope", "contexts": [{"name": "a", "context": {}}]}, "no context named 'nope'"),
        (
            {
                "current-context": "a",
                "contexts": [{"name": "a", "context": {"cluster": "x"}}],
                "clusters": [],
            },
            "unknown cluster 'x'",
        ),
        (
            {
                "current-context": "a",
                "contexts": [{"name": "a", "context": {"cluster": "x"}}],
                "clusters": [{"name": "x", "cluster": {"server": "ftp://h"}}],
            },
            "no http(s) server URL: 'ftp://h'",
        ),
    ],
)
def test_a_broken_kubeconfig_is_refused_with_a_precise_message(document: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        KubeConfig.from_dict(document, source="k.yml")
    assert message in str(error.value)
    assert str(error.value).startswith("k.yml: ")


def _with_user(user: dict[str, object], cluster: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "clusters": [{"name": "x", "cluster": {"server": "https://h:1", **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "x", "user": "u"}}],
        "current-context": "ctx",
    }


def test_an_exec_plugin_and_tls_server_name_read_back_and_a_relative_command_is_anchored(
    tmp_path: Path,
) -> None:
    exec_section = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "./bin/login",
        "args": ["token", "--cluster", "x"],
        "env": [{"name": "LOGIN_SECRET", "value": "hunter2"}],
        "provideClusterInfo": True,
        "interactiveMode": "Never",
    }
    document = _with_user({"exec": exec_section}, {"tls-server-name": "kube.internal"})
    config = KubeConfig.from_dict(document, base_dir=tmp_path)
    plugin = config.exec_plugin
    assert plugin is not None
    assert plugin.command == str(tmp_path / "bin" / "login")
    assert plugin.args == ("token", "--cluster", "x")
    assert plugin.env == (("LOGIN_SECRET", "hunter2"),)
    assert (plugin.provide_cluster_info, plugin.interactive_mode) == (True, "Never")
    assert config.tls_server_name == "kube.internal"
    assert "hunter2" not in repr(config)
    assert KubeConfig.load(config.write(tmp_path / "again.yml")) == config
    on_path = KubeConfig.from_dict(
        _with_user({"exec": {**exec_section, "command": "gke-auth"}}), base_dir=tmp_path
    )
    assert on_path.exec_plugin is not None
    assert on_path.exec_plugin.command == "gke-auth"


@pytest.mark.parametrize(
    ("exec_section", "message"),
    [
        ("aws", "users[].user.exec must be a mapping, got str"),
        ({"apiVersion": "client.authentication.k8s.io/v1"}, "users[].user.exec needs a command"),
        (
            {"command": "x", "apiVersion": "v1"},
            "exec.apiVersion must be client.authentication.k8s.io/<version>",
        ),
        (
            {"command": "x", "apiVersion": "client.authentication.k8s.io/v1", "args": "a b"},
            "exec.args must be a list of strings",
        ),
        (
            {"command": "x", "apiVersion": "client.authentication.k8s.io/v1", "env": [{"name": "A"}]},
            "exec.env must be a list of {name, value} strings",
        ),
    ],
)
def test_a_broken_exec_section_is_refused_with_a_precise_message(exec_section: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        KubeConfig.from_dict(_with_user({"exec": exec_section}), source="k.yml")
    assert message in str(error.value)
    assert str(error.value).startswith("k.yml: ")

"""Kubeconfig files: read the parts corral needs, write self-contained ones.

corral reads one context of a kubeconfig (server, CA, client certificate and key, bearer token,
exec credential plugin, impersonation) into a `KubeConfig` value, and writes kubeconfigs with every
credential embedded as data, so a file works wherever it is copied. Secrets never appear in a ``repr``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from corral.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecPlugin:
    """A ``users[].user.exec`` credential plugin: a command that prints an ExecCredential.

    Adopted clusters (EKS, GKE, OIDC logins) authenticate so; the official clients run the command
    and refresh its token when it expires. A relative command path was resolved against the
    kubeconfig's folder when it was read, as kubectl does.
    """

    command: str
    api_version: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    provide_cluster_info: bool = False
    interactive_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        section: dict[str, Any] = {"apiVersion": self.api_version, "command": self.command}
        if self.args:
            section["args"] = list(self.args)
        if self.env:
            section["env"] = [{"name": name, "value": value} for name, value in self.env]
        if self.provide_cluster_info:
            section["provideClusterInfo"] = True
        if self.interactive_mode:
            section["interactiveMode"] = self.interactive_mode
        return section


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeConfig:
    """Where a cluster is and how to authenticate to it (one context of a kubeconfig)."""

    server: str
    ca_pem: bytes | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    exec_plugin: ExecPlugin | None = None
    impersonate_user: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    cluster_name: str = "cluster"
    user_name: str = "user"
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    """The name to verify the serving certificate against, when it is not the URL's host."""

    def impersonating(self, user: str, groups: tuple[str, ...] = ()) -> KubeConfig:
        """The same credentials acting as another user (needs the `impersonate` verb)."""
        return replace(self, impersonate_user=user, impersonate_groups=tuple(groups), user_name=user)

    # -- reading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, context: str | None = None) -> KubeConfig:
        """Read one context (the current one by default) of a kubeconfig file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read kubeconfig: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: kubeconfig is not valid YAML") from e
        return cls.from_dict(data, base_dir=path.parent, source=str(path), context=context)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        base_dir: Path | None = None,
        source: str = "<kubeconfig>",
        context: str | None = None,
    ) -> KubeConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a kubeconfig must be a mapping, got {type(data).__name__}")
        name = context or data.get("current-context")
        contexts = _named(data, "contexts", "context", source)
        if not name:
            if len(contexts) != 1:
                raise ConfigError(f"{source}: no current-context and {len(contexts)} contexts to choose from")
            name = next(iter(contexts))
        if name not in contexts:
            raise ConfigError(f"{source}: no context named {name!r} (known: {', '.join(contexts) or 'none'})")
        ctx = contexts[name]
        cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
        clusters, users = _named(data, "clusters", "cluster", source), _named(data, "users", "user", source)
        if cluster_name not in clusters:
            raise ConfigError(f"{source}: context {name!r} names unknown cluster {cluster_name!r}")
        cluster = clusters[cluster_name]
        user = users.get(user_name, {}) if user_name else {}
        server = cluster.get("server")
        if not isinstance(server, str) or not server.startswith(("https://", "http://")):
            raise ConfigError(f"{source}: cluster {cluster_name!r} has no http(s) server URL: {server!r}")
        base = base_dir or Path.cwd()
        groups = user.get("as-groups") or ()
        return cls(
            server=server.rstrip("/"),
            ca_pem=_data_or_file(cluster, "certificate-authority", base, source),
            cert_pem=_data_or_file(user, "client-certificate", base, source),
            key_pem=_data_or_file(user, "client-key", base, source),
            token=_token(user, base, source),
            exec_plugin=_exec_plugin(user, base, source),
            impersonate_user=user.get("as") or None,
            impersonate_groups=tuple(str(g) for g in groups),
            cluster_name=str(cluster_name),
            user_name=str(user_name or "user"),
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
            tls_server_name=_optional_str(cluster, "tls-server-name", source),
        )

    # -- writing ---------------------------------------------------------------------------------

    def to_dict(self, *, context: str | None = None) -> dict[str, Any]:
        """A kubeconfig document with every credential embedded as base64 data."""
        ctx_name = context or self.cluster_name
        cluster: dict[str, Any] = {"server": self.server}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = _b64(self.ca_pem)
        if self.insecure_skip_tls_verify:
            cluster["insecure-skip-tls-verify"] = True
        if self.tls_server_name:
            cluster["tls-server-name"] = self.tls_server_name
        user: dict[str, Any] = {}
        if self.cert_pem is not None:
            user["client-certificate-data"] = _b64(self.cert_pem)
        if self.key_pem is not None:
            user["client-key-data"] = _b64(self.key_pem)
        if self.token is not None:
            user["token"] = self.token
        if self.exec_plugin is not None:
            user["exec"] = self.exec_plugin.to_dict()
        if self.impersonate_user:
            user["as"] = self.impersonate_user
        if self.impersonate_groups:
            user["as-groups"] = list(self.impersonate_groups)
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.cluster_name, "cluster": cluster}],
            "users": [{"name": self.user_name, "user": user}],
            "contexts": [
                {"name": ctx_name, "context": {"cluster": self.cluster_name, "user": self.user_name}}
            ],
            "current-context": ctx_name,
            "preferences": {},
        }

    def render(self, *, context: str | None = None) -> str:
        return yaml.safe_dump(self.to_dict(context=context), sort_keys=False)

    def write(self, path: str | Path, *, context: str | None = None) -> Path:
        """Write the kubeconfig with mode 0600 (it holds credentials) and return its path."""
        return write_private(Path(path), self.render(context=context).encode())


def write_private(path: Path, data: bytes) -> Path:
    """Write a file that only its owner may read, created so from the start (no 0644 window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _named(data: Mapping[str, Any], key: str, inner: str, source: str) -> dict[str, dict[str, Any]]:
    items = data.get(key) or []
    if not isinstance(items, list):
        raise ConfigError(f"{source}: {key} must be a list, got {type(items).__name__}")
    result: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{source}: {key}[{index}] needs a name")
        body = item.get(inner) or {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: {key}[{index}].{inner} must be a mapping")
        result[item["name"]] = dict(body)
    return result


def _data_or_file(section: Mapping[str, Any], key: str, base: Path, source: str) -> bytes | None:
    encoded = section.get(f"{key}-data")
    if encoded:
        try:
            return base64.b64decode(str(encoded), validate=True)
        except ValueError as e:
            raise ConfigError(f"{source}: {key}-data is not valid base64") from e
    filename = section.get(key)
    if filename:
        file = base / str(filename)
        try:
            return file.read_bytes()
        except OSError as e:
            raise ConfigError(f"{source}: cannot read {key} file {str(file)!r}: {e.strerror or e}") from e
    return None


def _token(user: Mapping[str, Any], base: Path, source: str) -> str | None:
    token = user.get("token")
    if token:
        return str(token)
    token_file = user.get("tokenFile")
    if token_file:
        file = base / str(token_file)
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{source}: cannot read tokenFile {str(file)!r}: {e.strerror or e}") from e
    return None


def _optional_str(section: Mapping[str, Any], key: str, source: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, got {type(value).__name__}")
    return value


def _exec_plugin(user: Mapping[str, Any], base: Path, source: str) -> ExecPlugin | None:
    section = user.get("exec")
    if section is None:
        return None
    where = f"{source}: users[].user.exec"
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}")
    command, api_version = section.get("command"), section.get("apiVersion")
    if not isinstance(command, str) or not command:
        raise ConfigError(f"{where} needs a command")
    if not isinstance(api_version, str) or not api_version.startswith("client.authentication.k8s.io/"):
        raise ConfigError(
            f"{where}.apiVersion must be client.authentication.k8s.io/<version>, got {api_version!r}"
        )
    args = section.get("args") or []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise ConfigError(f"{where}.args must be a list of strings")
    env = section.get("env") or []
    if not isinstance(env, list) or not all(
        isinstance(item, Mapping) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)
        for item in env
    ):
        raise ConfigError(f"{where}.env must be a list of {{name, value}} strings")
    # kubectl resolves a command with a path separator against the kubeconfig's folder; a bare
    # name is looked up on PATH when the plugin runs.
    if "/" in command and not Path(command).is_absolute():
        command = str(base / command)
    interactive = section.get("interactiveMode")
    return ExecPlugin(
        command=command,
        api_version=api_version,
        args=tuple(args),
        env=tuple((str(item["name"]), str(item["value"])) for item in env),
        provide_cluster_info=bool(section.get("provideClusterInfo", False)),
        interactive_mode=str(interactive) if interactive else None,
    )

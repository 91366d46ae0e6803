"""From a `KubeConfig` to what the official clients need: a loader document, a TLS context, headers.

Both clients (``kubernetes`` and ``kubernetes_asyncio``) authenticate through their own
`KubeConfigLoader`, which runs exec plugins and refreshes their tokens. TLS material stays with
corral: the loader document carries no CA, certificate or key, so the loaders write no files, and
whatever must be a file for an API that reads only files lives in a private folder (0700, files
0600) that is removed as soon as the bytes are loaded.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.errors import ConfigError
from corral.k8s.kubeconfig import KubeConfig

logger = logging.getLogger(__name__)

Header = tuple[str, str]

#: The context name of the documents handed to the loaders.
CONTEXT = "corral"


def loader_document(config: KubeConfig) -> dict[str, Any]:
    """A one-context kubeconfig for the official loaders: server and identity, no TLS material.

    A static token wins over an exec plugin when a kubeconfig has both. Only a plugin that asks
    for the cluster's details (``provideClusterInfo``) sees the CA, as the protocol says.
    """
    cluster: dict[str, Any] = {"server": config.server}
    if config.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    if config.tls_server_name:
        cluster["tls-server-name"] = config.tls_server_name
    user: dict[str, Any] = {}
    if config.token:
        user["token"] = config.token
    elif config.exec_plugin is not None:
        user["exec"] = config.exec_plugin.to_dict()
        if config.exec_plugin.provide_cluster_info and config.ca_pem is not None:
            cluster["certificate-authority-data"] = _b64(config.ca_pem)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
    }


def impersonation_headers(config: KubeConfig) -> list[Header]:
    """``Impersonate-User`` and one ``Impersonate-Group`` line per group (never comma-joined)."""
    if not config.impersonate_user:
        return []
    return [
        ("Impersonate-User", config.impersonate_user),
        *(("Impersonate-Group", group) for group in config.impersonate_groups),
    ]


def ssl_context(config: KubeConfig, *, client_pair: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
    """A TLS client context that trusts the kubeconfig's CA and presents its client certificate.

    ``client_pair`` (certificate, key) replaces the kubeconfig's, for an exec plugin that answered
    with a certificate instead of a token.
    """
    where = f"kubeconfig cluster {config.cluster_name!r}"
    if config.insecure_skip_tls_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_pem is not None:
        try:
            context = ssl.create_default_context(cadata=config.ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"{where}: the certificate authority is not a valid PEM certificate") from e
    else:
        context = ssl.create_default_context()
    pair = client_pair
    if pair is None and config.cert_pem is not None and config.key_pem is not None:
        pair = (config.cert_pem, config.key_pem)
    if pair is not None:
        # `load_cert_chain` reads only files: a private one, gone before this returns.
        with private_folder() as folder:
            chain = write_secret(folder / "client.pem", pair[0].rstrip(b"\n") + b"\n" + pair[1])
            try:
                context.load_cert_chain(str(chain))
            except ssl.SSLError as e:
                raise ConfigError(
                    f"kubeconfig user {config.user_name!r}: the client certificate and key do not load "
                    f"(not PEM, or not a pair): {e.reason or 'SSL error'}"
                ) from None
    return context


@contextlib.contextmanager
def private_folder() -> Iterator[Path]:
    """A folder only this user can enter (``mkdtemp`` makes it 0700), removed with its content."""
    with tempfile.TemporaryDirectory(prefix="corral-k8s-") as folder:
        yield Path(folder)


def write_secret(path: Path, data: bytes) -> Path:
    """Create ``path`` with mode 0600 from the start and write ``data`` to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def read_loaded_pair(cert_file: str | None, key_file: str | None) -> tuple[bytes, bytes] | None:
    """The certificate and key an exec plugin gave the loader (which keeps them as files)."""
    if not cert_file or not key_file:
        return None
    return Path(cert_file).read_bytes(), Path(key_file).read_bytes()


def require_credentials(config: KubeConfig, *, token: bool, pair: tuple[bytes, bytes] | None) -> None:
    """An exec plugin that produced neither a token nor a certificate is a configuration error."""
    if config.exec_plugin is not None and not config.token and not token and pair is None:
        raise ConfigError(
            f"kubeconfig user {config.user_name!r}: the exec plugin {config.exec_plugin.command!r} "
            "gave no token and no client certificate (its error is in the log)"
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

"""An agent's configuration, read as Rancher's agent reads it, and the CA checksum check of its entrypoint.

The server URL and registration token come from ``CATTLE_SERVER`` / ``CATTLE_TOKEN``, else from the
mounted credentials Secret (``<dir>/url``, ``<dir>/token``; ``/cattle-credentials`` in a Pod). With
``CATTLE_CA_CHECKSUM`` set, the agent downloads ``<server>/v3/settings/cacerts`` (without verifying:
that is what the checksum is for), compares the sha256 of the value (newline-terminated, as Rancher's
``CAChecksum`` computes it) and stops with a clear message on a mismatch; the CA then verifies the
server (``package/run.sh``). The token is never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

import aiohttp

from corral.errors import ConfigError, CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "CREDENTIALS_DIR",
    "AgentConfig",
    "AgentConfigError",
    "CAChecksumError",
    "ca_checksum",
    "fetch_verified_ca",
    "load_config",
]

CREDENTIALS_DIR: Final = Path("/cattle-credentials")
CACERTS_PATH: Final = "/v3/settings/cacerts"

AgentKind = Literal["cluster", "node"]


class AgentConfigError(ConfigError):
    """The agent's configuration is missing or unusable (the message names the variable or file)."""


class CAChecksumError(CorralError):
    """The server's ``cacerts`` is not the CA ``CATTLE_CA_CHECKSUM`` names: the agent must not connect."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything one agent process needs."""

    kind: AgentKind
    server: str
    """``https://host[:port]`` of the server (``CATTLE_SERVER``), without a trailing slash."""
    token: str = field(repr=False)
    ca_checksum: str = ""
    node: str = ""
    """The node of a node agent (``CATTLE_NODE_NAME``)."""
    connect: bool = False
    """``CATTLE_AGENT_CONNECT=true``: always ``/v3/connect`` (node agents), never ``/register``."""
    state_dir: Path = Path()
    """Where the ``connected`` marker file is written (Rancher: the working directory)."""
    kubeconfig: Path | None = None
    """The cluster's credentials; None is the Pod's in-cluster ServiceAccount."""

    @property
    def connected_marker(self) -> Path:
        return self.state_dir / "connected"

    @property
    def websocket_base(self) -> str:
        url = urlsplit(self.server)
        return f"{'wss' if url.scheme == 'https' else 'ws'}://{url.netloc}"


def _credential(env: Mapping[str, str], variable: str, folder: Path, file: str) -> str:
    value = env.get(variable, "").strip()
    if value:
        return value
    path = folder / file
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise AgentConfigError(f"{variable} is not set and {path} does not exist") from None
    except OSError as exc:
        raise AgentConfigError(f"{variable} is not set and {path} cannot be read: {exc.strerror}") from None


def load_config(
    env: Mapping[str, str] | None = None,
    *,
    kind: AgentKind,
    node: str = "",
    credentials_dir: Path = CREDENTIALS_DIR,
    state_dir: Path | None = None,
    kubeconfig: Path | None = None,
) -> AgentConfig:
    """Read the configuration from the environment and the credentials folder."""
    env = os.environ if env is None else env
    server = _credential(env, "CATTLE_SERVER", credentials_dir, "url").rstrip("/")
    url = urlsplit(server)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise AgentConfigError(f"CATTLE_SERVER must be an https URL, got {server!r}")
    token = _credential(env, "CATTLE_TOKEN", credentials_dir, "token")
    if kind == "node":
        node = node or env.get("CATTLE_NODE_NAME", "")
        if not node:
            raise AgentConfigError("a node agent needs its node's name (--node or CATTLE_NODE_NAME)")
    checksum = env.get("CATTLE_CA_CHECKSUM", "").strip().lower()
    if checksum and (len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum)):
        raise AgentConfigError("CATTLE_CA_CHECKSUM must be a sha256 in hex (64 characters)")
    return AgentConfig(
        kind=kind,
        server=server,
        token=token,
        ca_checksum=checksum,
        node=node,
        connect=kind == "node" or env.get("CATTLE_AGENT_CONNECT", "") == "true",
        state_dir=state_dir or Path.cwd(),
        kubeconfig=kubeconfig,
    )


def ca_checksum(ca_pem: str) -> str:
    """Rancher's checksum of a ``cacerts`` value: sha256 of it with a final newline."""
    if not ca_pem.endswith("\n"):
        ca_pem += "\n"
    return hashlib.sha256(ca_pem.encode()).hexdigest()


async def fetch_verified_ca(server: str, checksum: str, *, timeout_seconds: float = 10.0) -> str:
    """The server's ``cacerts`` PEM once it matches ``checksum``; `CAChecksumError` otherwise."""
    url = server + CACERTS_PATH
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as http,
            http.get(url, ssl=False) as response,
        ):
            body = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CAChecksumError(
            f"cannot download {url} to check CATTLE_CA_CHECKSUM: {exc or 'timed out'}"
        ) from None
    if status != 200:
        raise CAChecksumError(f"{url} answered HTTP {status}; cannot check CATTLE_CA_CHECKSUM")
    try:
        value = json.loads(body).get("value", "")
    except (ValueError, AttributeError):
        value = ""
    if not isinstance(value, str) or not value:
        raise CAChecksumError(
            "The environment variable CATTLE_CA_CHECKSUM is set but there is no CA certificate"
            f" configured at {url}"
        )
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise CAChecksumError(f"Value from {url} does not look like an x509 certificate")
    found = ca_checksum(value)
    if found != checksum:
        raise CAChecksumError(
            f"Configured cacerts checksum ({found}) does not match given --ca-checksum ({checksum}); "
            f"please check if the correct certificate is configured at {url}"
        )
    return value


def server_ssl(ca_pem: str | None) -> ssl.SSLContext:
    """Verify the server with its checked CA, else with the system's trust store."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()

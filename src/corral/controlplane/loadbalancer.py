"""A TCP load balancer in front of a cluster's kube-apiservers: the address behind an ACE FQDN.

Rancher leaves the load balancer to the operator; corral runs Debian's HAProxy (installed by
`corral.controlplane.hostpkgs` when missing) in TCP mode, so TLS goes through to the apiservers and
kubectl checks their certificate against the cluster's CA. Each backend is health-checked every
half second and a connection that fails on one apiserver is tried on another, so the FQDN keeps
answering while any control-plane apiserver is up. `render_config` is pure; `start` runs the
process in a `ProcessGroup` and waits until it accepts connections.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from corral.controlplane import hostpkgs
from corral.controlplane.processes import ProcessGroup, tail
from corral.errors import ConfigError, ControlPlaneError

logger = logging.getLogger(__name__)

__all__ = ["PACKAGE", "ROLE", "ensure_haproxy", "render_config", "start"]

PACKAGE: Final = "haproxy"
ROLE: Final = "load-balancer"
HEALTH_INTERVAL_MS: Final = 500


def _backend(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.port is None:
        raise ConfigError(f"load balancer backend {url!r} must be https://host:port")
    return parts.hostname, parts.port


def render_config(*, listen_host: str, listen_port: int, backends: Mapping[str, str]) -> str:
    """HAProxy's configuration: one TCP frontend, round robin over ``backends`` (name -> https URL)."""
    if not backends:
        raise ConfigError("a load balancer needs at least one backend")
    lines = [
        "global",
        "    maxconn 4096",
        "    log stdout format raw local0 notice",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    timeout connect 2s",
        "    timeout client 1h",  # watches stay open for as long as kubectl holds them
        "    timeout server 1h",
        "    retries 2",
        "    option redispatch",  # a connection refused by one apiserver is sent to another
        "",
        "frontend ace",
        f"    bind {listen_host}:{listen_port}",
        "    default_backend apiservers",
        "",
        "backend apiservers",
        "    balance roundrobin",
        f"    default-server inter {HEALTH_INTERVAL_MS}ms fall 1 rise 1",
    ]
    for name, url in backends.items():
        host, port = _backend(url)
        if not name.replace("-", "").replace(".", "").isalnum():
            raise ConfigError(f"load balancer backend name {name!r} must be a DNS label")
        lines.append(f"    server {name} {host}:{port} check")
    return "\n".join(lines) + "\n"


def ensure_haproxy(*, report: Callable[[str], None] | None = None, log_dir: Path | None = None) -> str:
    """The path of ``haproxy``, installed from the machine's apt sources when missing."""
    found = shutil.which(PACKAGE) or shutil.which(PACKAGE, path="/usr/sbin:/sbin")
    if found is None:
        hostpkgs.ensure_packages((PACKAGE,), report=report, log_dir=log_dir, purpose="an ACE load balancer")
        found = shutil.which(PACKAGE) or shutil.which(PACKAGE, path="/usr/sbin:/sbin")
    if found is None:
        raise ControlPlaneError("haproxy is installed but not on PATH or in /usr/sbin")
    return found


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start(
    group: ProcessGroup,
    *,
    name: str,
    config_file: Path,
    listen_host: str,
    listen_port: int,
    backends: Mapping[str, str],
    haproxy: str,
    cluster: str = "",
    timeout_seconds: float = 30.0,
) -> None:
    """Write the configuration, start HAProxy in the foreground and wait until it listens."""
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(render_config(listen_host=listen_host, listen_port=listen_port, backends=backends))
    group.start(name, [haproxy, "-db", "-f", str(config_file)], role=ROLE)
    deadline = time.monotonic() + timeout_seconds
    while not _accepts(listen_host, listen_port):
        group.check_alive(name)
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"{name} not listening on {listen_host}:{listen_port} after {timeout_seconds:g}s; "
                f"last lines of {group.log_path(name)}:\n{tail(group.log_path(name))}"
            )
        time.sleep(0.1)
    logger.info("load balancer of %s on %s:%d", cluster or name, listen_host, listen_port)

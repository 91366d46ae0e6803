"""A real kube-api-auth for tests and benchmarks: the apiserver's webhook config and the running process.

Conformance modules and benchmarks wire a cluster to kube-api-auth the way Rancher's ACE does: the
port is chosen before the apiserver starts, its token webhook config names ``/v1/authenticate`` there,
and ``corral kube-api-auth`` is started once the cluster is up and waited on until ``/healthcheck``.
"""

from __future__ import annotations

import http.client
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError
from corral.k8s import KubeConfig

logger = logging.getLogger(__name__)

__all__ = ["KubeApiAuthStartError", "Webhook", "running", "webhook"]

WEBHOOK_FILE = "kube-api-authn-webhook.yaml"


class KubeApiAuthStartError(CorralError):
    """kube-api-auth exited, or did not answer its health check in time."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where kube-api-auth will listen, and the apiserver's token webhook config that points there."""

    port: int
    url: str
    config: Path


def webhook(folder: Path, *, port: int) -> Webhook:
    """Write the webhook config as Rancher writes it (§5.4): kube-api-auth's authenticate route, no TLS."""
    url = f"http://127.0.0.1:{port}"
    config = KubeConfig(
        server=f"{url}/v1/authenticate",
        cluster_name="webhook",
        user_name="Default",
        insecure_skip_tls_verify=True,
    ).write(folder / WEBHOOK_FILE)
    return Webhook(port=port, url=url, config=config)


@contextmanager
def running(
    *, port: int, kubeconfig: Path, cluster_id: str, trace: Path, log: Path, timeout_seconds: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """``corral kube-api-auth`` for ``cluster_id`` on ``port``, healthy on entry, stopped on exit."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "corral", "--log-level=DEBUG", "kube-api-auth",
                f"--listen=127.0.0.1:{port}",
                f"--kubeconfig={kubeconfig}",
                f"--trace={trace}",
                f"--cluster={cluster_id}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_healthy(port, process, log, timeout_seconds)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-2000:]
            raise KubeApiAuthStartError(f"kube-api-auth exited with {process.returncode}:\n{tail}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/healthcheck")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    tail = log.read_text()[-2000:]
    raise KubeApiAuthStartError(f"kube-api-auth not healthy within {timeout_seconds:g} s:\n{tail}")

"""The proxy's streams on real nodes: ``corral up`` of a topology whose downstream nodes run Pods.

A user who is a project member drives the real kubectl through the server's proxy with the
kubeconfig ``generateKubeconfig`` wrote: creates a Pod in the project's namespace, ``exec``s into it,
follows its log and fetches through ``port-forward``; an ``exec`` in a namespace outside the project
is refused, so the user's own RBAC governs the upgrade requests too. Runs as root, like every test of
real nodes; where they cannot work it fails with the reason.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from conformance.real_topology import USER, RealTopology, wait_until
from corral.controlplane import images
from corral.k8s import KubeClient, KubeConfig

pytestmark = [pytest.mark.local_only, pytest.mark.real_nodes]

NAMESPACE = "team-a"  # the project's namespace
OUTSIDE = "outside"  # a namespace of no project the user is in
SERVE = (
    "import http.server as h, itertools, sys, threading, time\n"
    "def tick():\n"
    "    for i in itertools.count():\n"
    "        print(f'tick {i}', flush=True)\n"
    "        time.sleep(0.2)\n"
    "threading.Thread(target=tick, daemon=True).start()\n"
    "h.test(h.SimpleHTTPRequestHandler, port=8080, bind='0.0.0.0')\n"
)


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": images.CORRAL_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", SERVE],
                }
            ]
        },
    }


def _running(client: KubeClient, namespace: str, name: str) -> bool:
    pod = client.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return bool(pod.get("status", {}).get("phase") == "Running")


@pytest.fixture(scope="module")
def user_pod(real_topology: RealTopology) -> str:
    """A Pod the user created through the proxy in the project's namespace, Running."""
    created = subprocess.run(
        [*real_topology.argv(), "-n", NAMESPACE, "apply", "-f", "-"],
        input=json.dumps(_pod("box")), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    with real_topology.admin() as admin:
        wait_until(lambda: _running(admin, NAMESPACE, "box"), timeout=120, what="the user's Pod Running")
    return "box"


@pytest.mark.requirement("SRV-021")
def test_real_nodes_processes_are_in_the_topology(real_topology: RealTopology) -> None:
    listed = {(p["role"], p["node"]) for p in real_topology.doc["processes"] if p["node"]}
    # The cluster has ACE on: its control-plane node's kube-apiserver is that node's, as Rancher runs it.
    assert listed == {
        (role, node) for role in ("kubelet", "containerd") for node in ("c-real-cp", "c-real-w1")
    } | {("kube-apiserver", "c-real-cp")}
    assert all(p["cluster"] == "c-real" for p in real_topology.doc["processes"] if p["node"])


@pytest.mark.requirement("PROXY-016")
def test_exec_through_the_proxy_as_the_user(real_topology: RealTopology, user_pod: str) -> None:
    executed = real_topology.as_user(
        "-n", NAMESPACE, "exec", user_pod, "--", "python3", "-c", "import os; print(6 * 7, os.getuid())"
    )
    assert executed.returncode == 0, executed.stderr
    assert executed.stdout.split()[0] == "42"
    piped = subprocess.run(
        [*real_topology.argv(), "-n", NAMESPACE, "exec", "-i", user_pod, "--", "python3", "-c",
         "import sys; print(sys.stdin.read().upper())"],
        input="through the proxy", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "THROUGH THE PROXY"


@pytest.mark.requirement("PROXY-014")
def test_logs_follow_streams_through_the_proxy(real_topology: RealTopology, user_pod: str) -> None:
    argv = [*real_topology.argv(), "-n", NAMESPACE, "logs", "-f", "--tail=1", user_pod]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follow:
        try:
            assert follow.stdout is not None
            seen: list[int] = []
            deadline = time.monotonic() + 30
            while len(seen) < 4 and time.monotonic() < deadline:
                ready, _, _ = select.select([follow.stdout], [], [], 1.0)
                if ready:
                    line = follow.stdout.readline()
                    assert line, f"kubectl logs -f ended: {follow.stderr.read() if follow.stderr else ''}"
                    if line.startswith("tick "):
                        seen.append(int(line.split()[1]))
            assert len(seen) == 4, f"lines followed: {seen}"
            assert seen == sorted(seen)
            assert len(set(seen)) == 4  # new lines, arriving while the request is open
            assert follow.poll() is None  # still following
        finally:
            follow.terminate()


@pytest.mark.requirement("PROXY-016")
def test_port_forward_through_the_proxy(real_topology: RealTopology, user_pod: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        [*real_topology.argv(), "-n", NAMESPACE, "port-forward", f"pod/{user_pod}", f"{port}:8080"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        body = wait_until(lambda: _fetch(f"http://127.0.0.1:{port}/"), timeout=30, what="the port-forward")
        assert "Directory listing" in body
        assert "Directory listing" in (_fetch(f"http://127.0.0.1:{port}/") or "")  # a second connection
    finally:
        forward.terminate()
        forward.wait(timeout=10)


@pytest.mark.requirement("PROXY-022")
def test_exec_outside_the_users_project_is_refused(real_topology: RealTopology, user_pod: str) -> None:
    with real_topology.admin() as admin:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OUTSIDE}}
        admin.apply("/api/v1/namespaces", namespace)
        admin.apply(f"/api/v1/namespaces/{OUTSIDE}/pods", _pod("guarded"))
        wait_until(lambda: _running(admin, OUTSIDE, "guarded"), timeout=120, what="the guarded Pod Running")
    refused = real_topology.as_user("-n", OUTSIDE, "exec", "guarded", "--", "true")
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower(), refused.stderr
    # kubectl reads the Pod before it upgrades; ask for the exec subresource itself as well
    status, body = _post_as_user(
        real_topology, f"/api/v1/namespaces/{OUTSIDE}/pods/guarded/exec?command=true&stdout=true"
    )
    assert status == 403, body
    answer = json.loads(body)
    assert answer["reason"] == "Forbidden"
    assert 'cannot create resource "pods/exec"' in answer["message"], answer["message"]
    allowed = real_topology.as_user("-n", NAMESPACE, "exec", user_pod, "--", "true")
    assert allowed.returncode == 0, allowed.stderr  # the same verb in the project's namespace


def _post_as_user(topology: RealTopology, path: str) -> tuple[int, str]:
    """POST through the proxy with the user's kubeconfig token (no upgrade: only the authorization)."""
    config = KubeConfig.load(topology.doc["users"][USER]["kubeconfig"])
    assert config.token
    assert config.ca_pem
    request = urllib.request.Request(config.server.rstrip("/") + path, data=b"", method="POST")
    request.add_header("Authorization", f"Bearer {config.token}")
    context = ssl.create_default_context(cadata=config.ca_pem.decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return str(response.read().decode())
    except OSError:
        return None

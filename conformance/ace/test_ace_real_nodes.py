"""ACE on real nodes: kube-api-auth as Rancher deploys it, checked with the real kubectl.

The real-nodes topology (one session fixture, shared with the proxy's and the agents' tests) has ACE
on for its cluster: kube-api-auth is the ``cattle-system/kube-api-auth`` DaemonSet on the host
network of the control-plane node, listening on that node's address, where the apiserver's webhook
config points. A user's ACE context works, an unknown token is refused, and with the server frozen
the cluster still authenticates its users on its own.
"""

from __future__ import annotations

import json
import secrets
import string
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.real_topology import CLUSTER, USER, RealTopology
from corral.model import TokenReviewed
from corral.model.trace import read_trace
from corral.run.server_faults import server_fault

pytestmark = [pytest.mark.local_only, pytest.mark.real_nodes, pytest.mark.timeout(600)]

CONTEXT = "c-real-cp"
"""The ACE context of the cluster's one control-plane node (``<cluster>-<node>``, prefix trimmed)."""
NAMESPACE = "team-a"


def _admin(topology: RealTopology, *args: str) -> Any:
    kubeconfig = topology.doc["clusters"][CLUSTER]["admin_kubeconfig"]
    done = subprocess.run(
        [str(topology.kubectl), "--kubeconfig", kubeconfig, *args, "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _bearer(topology: RealTopology) -> str:
    document = yaml.safe_load(Path(topology.doc["users"][USER]["kubeconfig"]).read_text())
    return str(next(u for u in document["users"] if u["name"] == CLUSTER)["user"]["token"])


def _review(base: str, bearer: str) -> int:
    body = json.dumps({"kind": "TokenReview", "spec": {"token": bearer}}).encode()
    request = urllib.request.Request(base + "/v1/authenticate", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _reviews(topology: RealTopology) -> list[TokenReviewed]:
    events = read_trace(Path(topology.doc["server"]["trace_file"]))
    return [e for e in events if isinstance(e, TokenReviewed) and e.cluster == CLUSTER]


@pytest.mark.requirement("ACE-024", "ACE-015", "ACE-016")
def test_kube_api_auth_is_a_daemonset_on_the_control_plane_nodes(real_topology: RealTopology) -> None:
    daemonset = _admin(real_topology, "-n", "cattle-system", "get", "daemonset", "kube-api-auth")
    pod_spec = daemonset["spec"]["template"]["spec"]
    assert pod_spec["hostNetwork"] is True
    assert daemonset["status"]["desiredNumberScheduled"] == daemonset["status"]["numberReady"] == 1
    pods = _admin(real_topology, "-n", "cattle-system", "get", "pods", "-l", "app=kube-api-auth")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == ["c-real-cp"]  # not on the worker c-real-w1
    node = _admin(real_topology, "get", "node", "c-real-cp")
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert pods[0]["status"]["podIP"] == address  # the host network: the node's own address
    assert real_topology.doc["clusters"][CLUSTER]["kube_api_auth"] == [f"http://{address}:6440"]
    # No kube-api-auth process on the host: the Pods are kube-api-auth.
    assert not [p for p in real_topology.doc["processes"] if p["role"] == "kube-api-auth"]
    webhook = Path(real_topology.doc["server"]["trace_file"]).parent / "ace" / CLUSTER / "c-real-cp"
    config = yaml.safe_load((webhook / "kube-api-authn-webhook.yaml").read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"http://{address}:6440/v1/authenticate"


@pytest.mark.requirement("ACE-017", "ACE-024")
def test_an_ace_context_works_and_an_unknown_token_is_refused(real_topology: RealTopology) -> None:
    user_id = real_topology.doc["users"][USER]["id"]
    before = len([r for r in _reviews(real_topology) if r.user == user_id and r.authenticated])
    done = real_topology.as_user("--context", CONTEXT, "get", "pods", "-n", NAMESPACE)
    assert done.returncode == 0, done.stderr
    # The Pod's TokenReview reached the run's trace through its host-path mount.
    assert len([r for r in _reviews(real_topology) if r.user == user_id and r.authenticated]) > before
    denied = real_topology.as_user("--context", CONTEXT, "get", "pods", "-n", "kube-system")
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr  # authenticated through ACE, refused by RBAC as dana
    alphabet = string.ascii_lowercase + string.digits
    unknown = f"kubeconfig-u-{secrets.token_hex(4)}:" + "".join(secrets.choice(alphabet) for _ in range(54))
    refused = real_topology.as_user("--context", CONTEXT, "--token", unknown, "get", "pods", "-n", NAMESPACE)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stderr
    base = real_topology.doc["clusters"][CLUSTER]["kube_api_auth"][0]
    assert _review(base, unknown) == 401


@pytest.mark.requirement("ACE-019")
def test_with_the_server_frozen_the_ace_context_keeps_working(real_topology: RealTopology) -> None:
    run_dir = Path(real_topology.doc["server"]["trace_file"]).parent
    bearer = _bearer(real_topology)
    base = real_topology.doc["clusters"][CLUSTER]["kube_api_auth"][0]
    server_fault(run_dir, "freeze")
    try:
        # One request, no discovery: nothing answers through the proxy, which is the server.
        proxy = real_topology.as_user(
            "--context",
            CLUSTER,
            "--request-timeout=2s",
            "get",
            "--raw",
            f"/api/v1/namespaces/{NAMESPACE}/pods",
        )
        assert proxy.returncode != 0
        done = real_topology.as_user("--context", CONTEXT, "get", "pods", "-n", NAMESPACE)
        assert done.returncode == 0, done.stderr
        assert _review(base, bearer) == 200  # kube-api-auth itself, past the apiserver's token cache
    finally:
        server_fault(run_dir, "start")
    back = real_topology.as_user("--context", CLUSTER, "get", "pods", "-n", NAMESPACE)
    assert back.returncode == 0, back.stderr

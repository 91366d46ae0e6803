"""Real nodes run Pods: Deployments spread and serve through Services, hostNetwork DaemonSets land on
control-plane nodes, kubectl logs/exec/port-forward reach containers, Pods use their ServiceAccount."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from typing import Any

import pytest

from conformance.nodes.conftest import Kubectl, container, running_pods, wait_until
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.processes import read_state
from corral.k8s import KubeClient
from corral.model import Scenario


def _deployment(name: str, replicas: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def _run_pod(
    client: KubeClient, kubectl: Kubectl, namespace: str, name: str, script: str, **spec: Any
) -> str:
    """Run a Python script in a Pod to completion; return its log. Fails when the Pod fails."""
    client.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [container("main", ["python3", "-c", script])],
                **spec,
            },
        },
    )
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    phase = wait_until(
        lambda: (
            client.get(path)["status"].get("phase") in {"Succeeded", "Failed"}
            and client.get(path)["status"]["phase"]
        ),
        timeout=120,
        what=f"pod {name} to finish",
    )
    logs = kubectl("-n", namespace, "logs", name)
    assert logs.returncode == 0, logs.stderr
    assert phase == "Succeeded", f"pod {name} ended {phase}: {logs.stdout}"
    return logs.stdout


@pytest.mark.requirement("CP-014")
def test_every_node_is_ready_on_containerd_with_its_processes_recorded(
    real_cluster: ClusterHandle, real_admin: KubeClient, real_scenario: Scenario
) -> None:
    expected = {node.name: node.roles for node in real_scenario.clusters[0].nodes}
    items = {node["metadata"]["name"]: node for node in real_admin.get("/api/v1/nodes")["items"]}
    assert set(items) == set(expected)
    for name, node in items.items():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready, name
        assert ready[0]["status"] == "True", name
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
        for role in expected[name]:
            assert node["metadata"]["labels"].get(f"node-role.kubernetes.io/{role}") == "true"
    run_dir = real_cluster.kubeconfig.parent
    records = read_state(run_dir)
    for name in expected:
        roles = sorted(r.role for r in records if r.node == name)
        assert roles == ["containerd", "kubelet"], (name, roles)


@pytest.mark.requirement("CP-015")
def test_a_deployment_of_two_replicas_spreads_over_two_nodes_and_serves_through_a_service(
    real_admin: KubeClient, ns: str, kubectl: Kubectl
) -> None:
    anti_affinity = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
    server = container("web", ["python3", "-m", "http.server", "8080"], ports=[{"containerPort": 8080}])
    real_admin.create(
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        _deployment("web", 2, {"affinity": anti_affinity, "containers": [server]}),
    )
    real_admin.create(
        f"/api/v1/namespaces/{ns}/services",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    pods = wait_until(
        lambda: len(running_pods(real_admin, ns, "app=web")) == 2 and running_pods(real_admin, ns, "app=web"),
        timeout=120,
        what="two Running web pods",
    )
    assert len({pod["spec"]["nodeName"] for pod in pods}) == 2
    wait_until(
        lambda: any(
            s.get("endpoints") and len(s["endpoints"]) == 2
            for s in real_admin.get(
                f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                query={"labelSelector": "kubernetes.io/service-name=web"},
            )["items"]
        ),
        timeout=60,
        what="the Service's EndpointSlice to list both pods",
    )
    # kube-proxy programs the Service a moment after its endpoints appear: the client waits for the
    # first answer (up to 30 s), then sends ten requests through the ClusterIP; every one must answer.
    script = (
        "import os, time, urllib.request\n"
        "url = f\"http://{os.environ['WEB_SERVICE_HOST']}/\"\n"
        "deadline = time.monotonic() + 30\n"
        "while True:\n"
        "    try:\n"
        "        urllib.request.urlopen(url, timeout=2)\n"
        "        break\n"
        "    except OSError:\n"
        "        if time.monotonic() > deadline:\n"
        "            raise\n"
        "        time.sleep(0.5)\n"
        "codes = [urllib.request.urlopen(url, timeout=5).status for _ in range(10)]\n"
        "print(codes)\n"
    )
    assert _run_pod(real_admin, kubectl, ns, "client", script).strip() == str([200] * 10)


@pytest.mark.requirement("CP-015")
def test_a_host_network_daemonset_runs_on_every_control_plane_node(
    real_admin: KubeClient, ns: str, real_scenario: Scenario
) -> None:
    control_plane = {n.name for n in real_scenario.clusters[0].control_plane_nodes}
    real_admin.create(
        f"/apis/apps/v1/namespaces/{ns}/daemonsets",
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "hostNetwork": True,
                        "nodeSelector": {"node-role.kubernetes.io/controlplane": "true"},
                        "containers": [container("agent", ["sleep", "infinity"])],
                    },
                },
            },
        },
    )
    pods = wait_until(
        lambda: (
            len(running_pods(real_admin, ns, "app=agent")) == len(control_plane)
            and running_pods(real_admin, ns, "app=agent")
        ),
        timeout=120,
        what="the DaemonSet's pods on the control-plane nodes",
    )
    assert {pod["spec"]["nodeName"] for pod in pods} == control_plane
    for pod in pods:
        assert pod["status"]["podIP"] == pod["status"]["hostIP"]  # the node's own address: host network


@pytest.mark.requirement("CP-016")
def test_kubectl_logs_exec_and_port_forward_reach_the_container(
    real_admin: KubeClient, ns: str, kubectl: Kubectl
) -> None:
    script = (
        "print('ready-marker', flush=True)\n"
        "import http.server as h\n"
        "h.test(h.SimpleHTTPRequestHandler, port=8080, bind='0.0.0.0')\n"
    )
    real_admin.create(
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {"name": "box", "labels": {"app": "box"}},
            "spec": {"containers": [container("box", ["python3", "-c", script])]},
        },
    )
    wait_until(lambda: running_pods(real_admin, ns, "app=box"), timeout=120, what="pod box Running")
    logs = wait_until(
        lambda: "ready-marker" in (out := kubectl("-n", ns, "logs", "box")).stdout and out,
        timeout=30,
        what="the marker in kubectl logs",
    )
    assert logs.returncode == 0
    executed = kubectl("-n", ns, "exec", "box", "--", "python3", "-c", "print(6 * 7)")
    assert executed.returncode == 0, executed.stderr
    assert executed.stdout.strip() == "42"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        [*kubectl.argv, "-n", ns, "port-forward", "pod/box", f"{port}:8080"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=kubectl.env,
    )
    try:
        body = wait_until(lambda: _get(f"http://127.0.0.1:{port}/"), timeout=30, what="the port-forward")
        assert "Directory listing" in body
    finally:
        forward.terminate()
        forward.wait(timeout=10)


@pytest.mark.requirement("CP-016")
def test_kubectl_attach_reaches_the_container_s_stdin_and_stdout(
    real_admin: KubeClient, ns: str, kubectl: Kubectl
) -> None:
    echo = "import sys\nfor line in sys.stdin:\n    print('echo:' + line.strip(), flush=True)\n"
    real_admin.create(
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {"name": "talker", "labels": {"app": "talker"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    container("talker", ["python3", "-u", "-c", echo], stdin=True, stdinOnce=True)
                ],
            },
        },
    )
    wait_until(lambda: running_pods(real_admin, ns, "app=talker"), timeout=120, what="pod talker Running")
    attached = subprocess.run(
        [*kubectl.argv, "-n", ns, "attach", "-i", "talker", "-c", "talker"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=kubectl.env,
        check=False,
    )
    assert attached.returncode == 0, attached.stderr
    assert "echo:hello" in attached.stdout


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return str(response.read().decode())
    except OSError:
        return None


@pytest.mark.requirement("CP-015")
def test_a_pod_reads_the_api_with_its_service_account_and_not_without(
    real_admin: KubeClient, ns: str, kubectl: Kubectl
) -> None:
    real_admin.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        {
            "metadata": {"name": "default-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
        },
    )
    script = (
        "import json, os, ssl, urllib.error, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "ns = open(f'{sa}/namespace').read()\n"
        "ctx = ssl.create_default_context(cafile=f'{sa}/ca.crt')\n"
        "url = f\"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
        '/api/v1/namespaces/{ns}/pods"\n'
        "token = open(f'{sa}/token').read()\n"
        "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token})\n"
        "pods = json.load(urllib.request.urlopen(req, context=ctx))['items']\n"
        "names = [p['metadata']['name'] for p in pods]\n"
        "try:\n"
        "    urllib.request.urlopen(url, context=ctx)\n"
        "    anonymous = 200\n"
        "except urllib.error.HTTPError as e:\n"
        "    anonymous = e.code\n"
        "print(json.dumps({'names': names, 'anonymous': anonymous}))\n"
    )
    out = json.loads(_run_pod(real_admin, kubectl, ns, "reader", script).strip().splitlines()[-1])
    assert "reader" in out["names"]
    assert out["anonymous"] in (401, 403)

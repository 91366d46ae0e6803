"""The cluster agent's per-node pod requests and limits, as Rancher's agent writes them."""

from __future__ import annotations

import json
from typing import Any

from corral.agent.podresources import LIMITS_ANNOTATION, REQUESTS_ANNOTATION, node_annotations, pod_resources


def pod(phase: str, *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(containers)],
            "initContainers": [{"name": f"i{i}", "resources": r} for i, r in enumerate(init)],
        },
        "status": {"phase": phase},
    }


def test_requests_and_limits_sum_over_running_pods_and_count_them() -> None:
    pods = [
        pod("Running", {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m"}}),
        pod("Pending", {"requests": {"cpu": "250m"}}, {"requests": {"memory": "64Mi"}}),
        pod("Succeeded", {"requests": {"cpu": "4"}}),
        pod("Failed", {"requests": {"cpu": "4"}}),
    ]
    requests, limits = pod_resources(pods)
    assert requests == {"cpu": "350m", "memory": "128Mi", "pods": "2"}
    assert limits == {"cpu": "200m"}


def test_an_init_container_raises_its_pods_figure_only_when_larger() -> None:
    pods = [
        pod(
            "Running",
            {"requests": {"cpu": "100m", "memory": "1Gi"}},
            init=({"requests": {"cpu": "1", "memory": "1Mi"}},),
        ),
    ]
    requests, _ = pod_resources(pods)
    assert requests == {"cpu": "1", "memory": "1Gi", "pods": "1"}


def test_no_pods_give_empty_lists_and_no_pod_count() -> None:
    assert pod_resources([]) == ({}, {})
    assert node_annotations([]) == {REQUESTS_ANNOTATION: "{}", LIMITS_ANNOTATION: "{}"}


def test_annotations_are_json_resource_lists() -> None:
    annotations = node_annotations([pod("Running", {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}})])
    assert json.loads(annotations[REQUESTS_ANNOTATION]) == {"cpu": "1", "pods": "1"}
    assert json.loads(annotations[LIMITS_ANNOTATION]) == {"memory": "2Gi"}

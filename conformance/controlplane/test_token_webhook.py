"""A token webhook configured on an apiserver receives v1 TokenReviews and decides authentication.

The apiserver accepts both an https webhook URL (CA from the webhook kubeconfig) and a plain
http one on loopback; both are exercised. Only the local provider configures webhooks: `local_only`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.controlplane.tokenreview_responder import Responder, serve
from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle
from corral.controlplane.local import LocalProvider
from corral.errors import KubeAPIError
from corral.k8s import KubeClient, KubeConfig
from corral.model import Scenario

SCENARIO = Scenario.from_dict(
    {
        "name": "webhook",
        "regions": ["us"],
        "clusters": [
            {"name": "hooked", "region": "us", "nodes": [{"name": "hooked-cp", "roles": ["controlplane"]}]}
        ],
    }
)

pytestmark = [pytest.mark.local_only, pytest.mark.requirement("CP-009")]


@pytest.fixture(params=["https", "http"])
def hooked(
    request: pytest.FixtureRequest, corral_binaries: build.Built, tmp_path: Path
) -> Iterator[tuple[ClusterHandle, Responder]]:
    accepted = {"rancher-token-1": ("u-abc12", ("g-devs", "g-ops"))}
    with serve(accepted, tls=request.param == "https", folder=tmp_path) as responder:
        provider = LocalProvider(
            binaries=corral_binaries, webhooks={"hooked": responder.webhook_config(tmp_path / "webhook.yml")}
        )
        clusters = provider.up(SCENARIO, tmp_path / "run")
        try:
            yield clusters["hooked"], responder
        finally:
            provider.down(tmp_path / "run")


def whoami(handle: ClusterHandle, token: str) -> dict[str, Any]:
    with KubeClient(KubeConfig(server=handle.server, ca_pem=handle.ca_pem, token=token)) as client:
        review = client.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    return dict(review["status"]["userInfo"])


def test_the_webhook_gets_a_v1_tokenreview_and_its_answer_authenticates_the_caller(
    hooked: tuple[ClusterHandle, Responder],
) -> None:
    handle, responder = hooked
    identity = whoami(handle, "rancher-token-1")
    assert identity["username"] == "u-abc12"
    assert {"g-devs", "g-ops", "system:authenticated"} == set(identity["groups"])
    review = responder.reviews[0]
    assert review["apiVersion"] == "authentication.k8s.io/v1"
    assert review["kind"] == "TokenReview"
    assert review["spec"]["token"] == "rancher-token-1"


def test_a_token_the_webhook_rejects_is_unauthorized(hooked: tuple[ClusterHandle, Responder]) -> None:
    handle, responder = hooked
    with pytest.raises(KubeAPIError) as rejected:
        whoami(handle, "forged-token")
    assert rejected.value.status == 401
    assert "forged-token" not in str(rejected.value)
    assert [r["spec"]["token"] for r in responder.reviews] == ["forged-token"]

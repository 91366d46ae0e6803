"""Where the server reviews ``kubectl --as``: the management cluster, or the request's cluster on request.

`UpstreamReviewer` with recording clients: the scope decides which client answers, and a cluster
whose controller has no client yet is an error (a refusal), never a silent review elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from corral.k8s.aio import AsyncKubeClient
from corral.server.app import UpstreamReviewer
from corral.server.proxy_interfaces import AccessReview, AccessReviewError


class _Recorder:
    def __init__(self, name: str, answer: bool) -> None:
        self.name = name
        self.answer = answer
        self.calls: list[tuple[str, tuple[str, ...], str, str, dict[str, Any]]] = []

    async def allows(self, user: str, groups: Sequence[str], verb: str, resource: str, **kw: Any) -> bool:
        self.calls.append((user, tuple(groups), verb, resource, kw))
        return self.answer


REVIEW = AccessReview(
    user="u-alice",
    groups=("devs", "system:authenticated"),
    verb="impersonate",
    resource="users",
    name="u-bob",
)


async def test_management_scope_asks_the_upstream_and_downstream_scope_the_cluster() -> None:
    upstream, downstream = _Recorder("upstream", False), _Recorder("c-one", True)
    clients = {"c-one": downstream}
    reviewer = UpstreamReviewer(
        cast(AsyncKubeClient, upstream), downstream=lambda c: cast(AsyncKubeClient, clients.get(c))
    )
    assert await reviewer.allowed(REVIEW, cluster=None) is False
    assert await reviewer.allowed(REVIEW, cluster="c-one") is True
    assert [c[:4] for c in upstream.calls] == [
        ("u-alice", ("devs", "system:authenticated"), "impersonate", "users")
    ]
    assert downstream.calls[0][4]["name"] == "u-bob"
    assert len(downstream.calls) == 1


async def test_a_cluster_without_a_client_is_an_error_not_a_review_elsewhere() -> None:
    upstream = _Recorder("upstream", True)
    reviewer = UpstreamReviewer(cast(AsyncKubeClient, upstream), downstream=lambda c: None)
    with pytest.raises(AccessReviewError, match="c-gone"):
        await reviewer.allowed(REVIEW, cluster="c-gone")
    without = UpstreamReviewer(cast(AsyncKubeClient, upstream))
    with pytest.raises(AccessReviewError):
        await without.allowed(REVIEW, cluster="c-one")
    assert upstream.calls == []

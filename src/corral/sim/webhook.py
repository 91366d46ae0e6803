"""kube-api-auth, the ACE token webhook, as kube-apiserver sees it: a review behind a token cache.

kube-apiserver caches webhook answers (`--authentication-token-webhook-cache-ttl`, 2 minutes by
default), so only a user's first ACE request in a while pays for a TokenReview. kube-api-auth
reads only objects inside the downstream cluster, so it answers whether the server is up or not.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from corral.model import Calibration, TokenReviewed
from corral.sim.recorder import Recorder


class TokenReviewWebhook:
    """kube-api-auth of one cluster plus its apiserver's token cache."""

    __slots__ = ("_cache", "_cluster", "_env", "_recorder", "_review", "_ttl")

    def __init__(
        self, env: simpy.Environment, cluster: str, calibration: Calibration, recorder: Recorder
    ) -> None:
        self._env = env
        self._cluster = cluster
        self._review = calibration.kube_api_auth.review
        self._ttl = calibration.kube_api_auth.cache_ttl_seconds
        self._recorder = recorder
        self._cache: dict[str, float] = {}

    def authenticate(self, user: str, *, z: float) -> Generator[Any, Any, bool]:
        """Authenticate a user's cluster-scoped token; reviews only on a cache miss."""
        now = self._env.now
        if self._cache.get(user, -1.0) > now:
            return True
        latency = self._review.at(z)
        yield self._env.timeout(latency)
        self._cache[user] = self._env.now + self._ttl
        self._recorder.emit(
            TokenReviewed(
                t=self._env.now, cluster=self._cluster, user=user, authenticated=True, latency_seconds=latency
            )
        )
        return True

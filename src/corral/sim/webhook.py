"""kube-api-auth, the ACE token webhook, as kube-apiserver sees it: a review behind a token cache.

kube-apiserver caches webhook answers (`--authentication-token-webhook-cache-ttl`, 2 minutes by
default), so only a user's first ACE request in a while pays for a TokenReview. kube-api-auth
reads only objects inside the downstream cluster (the ClusterAuthToken copies the server syncs
down), so it answers whether the server is up or not, and it knows of a revocation only once
the copy has been synced, and the apiserver only once its cached answer has expired.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from corral.model import Calibration, TokenReviewed
from corral.sim.kernel import FastEnvironment
from corral.sim.recorder import Recorder


class TokenReviewWebhook:
    """kube-api-auth of one cluster plus its apiserver's token cache."""

    __slots__ = ("_cache", "_cluster", "_env", "_recorder", "_review", "_ttl", "copies")

    def __init__(
        self, env: FastEnvironment, cluster: str, calibration: Calibration, recorder: Recorder
    ) -> None:
        self._env = env
        self._cluster = cluster
        self._review = calibration.kube_api_auth.review
        self._ttl = calibration.kube_api_auth.cache_ttl_seconds
        self._recorder = recorder
        self._cache: dict[str, tuple[float, int]] = {}
        self.copies: dict[str, tuple[int, bool]] = {}
        """User -> (token generation, revoked) of the ClusterAuthToken copy in the cluster."""

    def authenticate(self, user: str, *, token: int = 0, z: float) -> Generator[Any, Any, bool]:
        """Authenticate a user's cluster-scoped token (generation `token`); reviews only on a cache miss."""
        now = self._env.now
        cached = self._cache.get(user)
        if cached is not None and cached[0] > now and cached[1] == token:
            return True
        latency = self._review.at(z)
        yield self._env.sleep(latency)
        generation, revoked = self.copies.get(user, (0, False))
        valid = generation == token and not revoked
        if valid:
            self._cache[user] = (self._env.now + self._ttl, token)
        self._recorder.emit(
            TokenReviewed(
                t=self._env.now,
                cluster=self._cluster,
                user=user if valid else "",
                authenticated=valid,
                latency_seconds=latency,
            )
        )
        return valid

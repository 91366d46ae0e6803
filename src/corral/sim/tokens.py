"""ACE tokens: the server's tokens and their copies in each cluster, synced only through a tunnel.

Revoking a token takes effect on the proxy at once. In a cluster, kube-api-auth keeps accepting
it until the clusterauthtoken controller has synced the change down, which needs the cluster's
agent connected: a cluster disconnected at the time gets it once its cluster agent reconnects
(docs/rancher.md#authorized-cluster-endpoint). A new token for the user (the fault lifted) is
unknown to a cluster until it is synced the same way.
"""

from __future__ import annotations

from corral.model import ClusterTokenSynced
from corral.sim.world import World


class TokenSync:
    """The server's token state and the controller that copies it into clusters."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.generation: dict[str, int] = {}
        """User -> generation of the token they hold now (a new token after a revocation)."""
        self._waiting: set[tuple[str, str]] = set()
        """(cluster, user) copies waiting for the cluster agent to reconnect."""

    def current(self, user: str) -> int:
        return self.generation.get(user, 0)

    def revoke(self, user: str) -> None:
        self._world.server.revoked.add(user)
        self._push(user)

    def reissue(self, user: str) -> None:
        self._world.server.revoked.discard(user)
        self.generation[user] = self.current(user) + 1
        self._push(user)

    def _push(self, user: str) -> None:
        for cluster in self._world.scenario.clusters:
            self._sync(cluster.name, user)

    def _sync(self, cluster: str, user: str) -> None:
        world = self._world
        if world.sessions.connected(cluster):
            self._schedule(cluster, user)
        elif (cluster, user) not in self._waiting:
            self._waiting.add((cluster, user))
            world.sessions.when_connected(cluster, lambda: self._reconnected(cluster, user))

    def _reconnected(self, cluster: str, user: str) -> None:
        self._waiting.discard((cluster, user))
        self._schedule(cluster, user)

    def _schedule(self, cluster: str, user: str) -> None:
        world = self._world
        delay = world.calibration.kube_api_auth.token_sync_seconds
        world.env.timeout(delay).callbacks.append(lambda _: self._apply(cluster, user))

    def _apply(self, cluster: str, user: str) -> None:
        world = self._world
        if not world.sessions.connected(cluster):
            self._sync(cluster, user)  # the agent went away before the writes got through
            return
        revoked = user in world.server.revoked
        world.webhooks[cluster].copies[user] = (self.current(user), revoked)
        world.recorder.emit(ClusterTokenSynced(t=world.env.now, cluster=cluster, user=user, revoked=revoked))

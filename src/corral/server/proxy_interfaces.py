"""The seams of the authentication proxy: who the caller is, where a cluster is, how to reach it.

The proxy's HTTP core depends only on these protocols; the token store, the impersonation-account
controller, the SubjectAccessReview client and the tunnel implement them elsewhere. Each failure
a seam may report has its own exception, so the proxy maps it to Rancher's status in one place.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from corral.auth.identity import UserInfo
from corral.errors import CorralError
from corral.tunnel.connection import Connection

SARScope = Literal["downstream", "management"]
"""Where client-impersonation SubjectAccessReviews run: the downstream cluster (Rancher 2.10-2.14)
or the management cluster (2.15 and later)."""


class ProxyError(CorralError):
    """A seam of the authentication proxy failed; the message is safe to show the caller."""


class AuthenticationError(ProxyError):
    """The request carries no usable Rancher token (missing, malformed, unknown, expired, disabled)."""


class ImpersonationAccountError(ProxyError):
    """The per-user impersonation service account (or its token) could not be ensured downstream."""


class ServiceAccountTokenError(ProxyError):
    """A TokenRequest for an impersonated ServiceAccount failed."""


class AccessReviewError(ProxyError):
    """A SubjectAccessReview could not be made (not a denial: an error on the way)."""


class DialError(ProxyError):
    """No byte stream to the cluster's API endpoint (agent disconnected, connection refused, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequest:
    """What a token authenticator may look at: headers, cookies, the Host and the path's cluster."""

    headers: Mapping[str, str]
    """Request headers; lookups must be case-insensitive (an aiohttp ``CIMultiDictProxy``)."""
    cookies: Mapping[str, str]
    host: str
    cluster: str
    """The cluster id of the path: a cluster-scoped token for another cluster is refused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTarget:
    """Where a downstream cluster's kube-apiserver is, as the cluster's status reports it."""

    name: str
    api_endpoint: str
    """``https://host:port`` (the in-cluster ``kubernetes`` service address the agent reported)."""
    ca_pem: str | None = None
    """PEM of the CA the endpoint's certificate chains to; None trusts the system store."""
    provisioned: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessReview:
    """One SubjectAccessReview: may ``user`` (with ``groups``) ``verb`` the named resource?

    Rancher's impersonation checks leave the API group empty for every resource, ``userextras/<key>``
    included; the fields mirror that.
    """

    user: str
    groups: tuple[str, ...]
    verb: str
    resource: str
    name: str
    namespace: str = ""
    group: str = ""


class Authenticator(Protocol):
    """Rancher's token authenticator: a request's credentials to a user."""

    async def authenticate(self, request: AuthRequest) -> UserInfo:
        """The caller, or `AuthenticationError` when there is no valid token."""
        ...

    async def token_owner(self, token_name: str) -> str | None:
        """The user id owning a token (for a ``requesttokenid`` extra); None if there is no such token."""
        ...


class ClusterLookup(Protocol):
    """Downstream clusters by id, and whether a user may see one."""

    async def can_access(self, cluster: str, user: UserInfo) -> bool:
        """May ``user`` read the cluster (``get clusters.management.cattle.io/<cluster>``)?

        Checked before the cluster is looked up, so a user who may not read clusters learns nothing
        of which ids exist.
        """
        ...

    async def get(self, cluster: str) -> ClusterTarget | None:
        """The cluster's target, or None when no cluster has this id."""
        ...


class ImpersonationAccounts(Protocol):
    """The per-user impersonation service accounts downstream (``cattle-impersonation-<user>``)."""

    async def token_for(self, cluster: str, user: UserInfo) -> str:
        """The account's bearer token; creates or updates the account first (`ImpersonationAccountError`)."""
        ...


class ServiceAccountTokens(Protocol):
    """TokenRequests for impersonated ServiceAccounts (``kubectl --as system:serviceaccount:...``)."""

    async def token_for(self, cluster: str, *, namespace: str, name: str, expiration_seconds: int) -> str:
        """A short-lived token of ``namespace/name`` in the cluster (`ServiceAccountTokenError`)."""
        ...


class AccessReviewer(Protocol):
    """SubjectAccessReviews for client impersonation, on the downstream or the management cluster."""

    async def allowed(self, review: AccessReview, *, cluster: str | None) -> bool:
        """The review's verdict; ``cluster`` None means the management cluster (`AccessReviewError`)."""
        ...


class Dialer(Protocol):
    """Byte streams to addresses as a cluster sees them (directly, or through its agent's tunnel).

    The result is a connected, non-blocking socket: asyncio streams (``asyncio.open_connection(sock=)``)
    and aiohttp connections (``loop.create_connection(sock=)``, TLS included) both sit on it, and a
    tunnel connection becomes one through a socket pair.
    """

    async def dial(self, cluster: str, host: str, port: int) -> socket.socket:
        """A connected socket to ``host:port`` for ``cluster``, or `DialError`."""
        ...


class StreamDialer(Dialer, Protocol):
    """A `Dialer` that can hand out a tunnel's connection itself rather than a socket bridged to it.

    The proxy's client runs its transport straight on such a connection: no socket pair, no task
    pumping bytes between them.
    """

    async def dial_stream(self, cluster: str, host: str, port: int) -> socket.socket | Connection:
        """As `Dialer.dial`, but a tunnelled stream comes back as the tunnel's `Connection`."""
        ...

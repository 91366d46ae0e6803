"""Who a request is: the identity the server authenticates and the proxy impersonates downstream.

The server builds a `UserInfo` from a token (Rancher's token authenticator); the proxy turns it into
``Impersonate-*`` headers and the impersonation ClusterRole's rules; kube-api-auth answers TokenReviews
with the same user name and groups, so RBAC decides alike on both paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Groups every authenticated Rancher user carries, on the proxy path and in the impersonation role.
AUTHENTICATED_GROUPS = ("system:authenticated", "system:cattle:authenticated")


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInfo:
    """An authenticated caller, as Rancher's token authenticator builds it."""

    name: str
    """The user's object name (``u-abcde``, ``user-xxxxx``): ``Impersonate-User`` downstream."""
    groups: tuple[str, ...] = AUTHENTICATED_GROUPS
    """Group principals plus `AUTHENTICATED_GROUPS`; one ``Impersonate-Group`` header each."""
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """``principalid``, ``username``, ``requesttokenid``, ``requesthost``: ``Impersonate-Extra-*``."""
    token_name: str = ""
    """The name of the token that authenticated the request (never its secret)."""

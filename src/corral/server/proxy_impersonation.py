"""Client impersonation through the proxy (``kubectl --as``): SubjectAccessReviews, then who the request is.

Follows Rancher's impersonation middleware: nothing to check unless ``Impersonate-User`` names
someone else; a ServiceAccount target needs ``impersonate serviceaccounts`` and is then served with
a token of that account; a user target needs ``impersonate users``, ``groups`` (those the caller
lacks) and ``userextras/<key>`` per value. A refusal is `ImpersonationRefusedError`, a 403 in
plain text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corral.auth.identity import UserInfo
from corral.server.proxy_headers import ClientImpersonation
from corral.server.proxy_interfaces import (
    AccessReview,
    AccessReviewer,
    AccessReviewError,
    Authenticator,
    ProxyError,
)

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ALL_AUTHENTICATED = "system:authenticated"
REQUEST_TOKEN_ID = "requesttokenid"  # noqa: S105 - an extra key, not a secret


class ImpersonationRefusedError(ProxyError):
    """The caller may not impersonate what it asked for; the message is the plain-text 403 body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccountTarget:
    """An impersonated ServiceAccount: the request is sent with a token of its own."""

    namespace: str
    name: str


def parse_service_account(username: str) -> ServiceAccountTarget:
    """``system:serviceaccount:<ns>:<name>`` to its parts (`ImpersonationRefusedError` if malformed)."""
    parts = username.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":")
    if len(parts) != 2 or not all(parts):
        raise ImpersonationRefusedError(
            "error checking if user can impersonate service account: invalid service account username"
            f" format: expected system:serviceaccount:<namespace>:<name>, but got {username!r}"
        )
    return ServiceAccountTarget(namespace=parts[0], name=parts[1])


class ImpersonationPolicy:
    """Decides a client's impersonation request with SubjectAccessReviews."""

    def __init__(self, *, reviewer: AccessReviewer, authenticator: Authenticator) -> None:
        self.reviewer = reviewer
        self.authenticator = authenticator

    async def resolve(
        self, user: UserInfo, asked: ClientImpersonation, *, review_cluster: str | None
    ) -> UserInfo | ServiceAccountTarget:
        """The identity to send downstream: ``user`` itself, the impersonated user, or a ServiceAccount.

        ``review_cluster`` is where the reviews run (None: the management cluster).
        """
        if not asked.user or asked.user == user.name:
            return user
        if asked.user.startswith(SERVICE_ACCOUNT_PREFIX):
            target = parse_service_account(asked.user)
            review = self._review(user, "serviceaccounts", target.name, namespace=target.namespace)
            await self._require(review, review_cluster, "service account")
            return target

        await self._require(self._review(user, "users", asked.user), review_cluster, "user")
        for group in asked.groups:
            if group not in user.groups:
                await self._require(self._review(user, "groups", group), review_cluster, "group")
        for key, values in asked.extras.items():
            if not key or "/" in key:
                problem = "must not be empty" if not key else "must not contain '/'"
                raise ImpersonationRefusedError(
                    f"error checking if user can impersonate extras: extra key {key!r} {problem}"
                )
            for value in values:
                await self._require(self._review(user, f"userextras/{key}", value), review_cluster, "extras")
        token_ids = asked.extras.get(REQUEST_TOKEN_ID, ())
        if len(token_ids) > 1:
            raise ImpersonationRefusedError("multiple requesttokenid values")
        if token_ids:
            owner = await self.authenticator.token_owner(token_ids[0])
            if owner is None:
                raise ImpersonationRefusedError("error getting request token: not found")
            if owner != asked.user:
                raise ImpersonationRefusedError("request token user does not match impersonation user")
        groups = asked.groups if ALL_AUTHENTICATED in asked.groups else (*asked.groups, ALL_AUTHENTICATED)
        return UserInfo(name=asked.user, groups=groups, extras=dict(asked.extras))

    @staticmethod
    def _review(user: UserInfo, resource: str, name: str, *, namespace: str = "") -> AccessReview:
        return AccessReview(
            user=user.name,
            groups=user.groups,
            verb="impersonate",
            resource=resource,
            name=name,
            namespace=namespace,
        )

    async def _require(self, review: AccessReview, cluster: str | None, what: str) -> None:
        try:
            allowed = await self.reviewer.allowed(review, cluster=cluster)
        except AccessReviewError as exc:
            raise ImpersonationRefusedError(f"error checking if user can impersonate {what}: {exc}") from exc
        if not allowed:
            logger.info("%s may not impersonate %s %r", review.user, review.resource, review.name)
            raise ImpersonationRefusedError(f"not allowed to impersonate {what}")

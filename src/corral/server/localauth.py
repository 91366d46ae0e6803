"""Rancher's local auth provider: users with passwords in Secrets, login, and the user's attributes.

Passwords are PBKDF2-SHA3-512 records in ``cattle-local-user-passwords/<userID>`` (bcrypt read as the
legacy format and rewritten after a good login). The key derivation runs in a worker thread so a
login does not stall the event loop, and an unknown user pays the same derivation as a wrong
password. Users are read from the cache; creating one stores the User, then its password Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from corral.auth import passwords
from corral.errors import AlreadyExistsError, CorralError, KubeAPIError
from corral.server.authn import LOCAL_PROVIDER, principal_id
from corral.server.state import JSON, ServerState

logger = logging.getLogger(__name__)

__all__ = ["LocalAuth", "LoginResult", "PasswordPolicyError", "UserExistsError"]

MIN_PASSWORD_LENGTH: Final = 12
"""Rancher's ``password-min-length`` default."""


class UserExistsError(CorralError):
    """A local user with that username exists already."""


class PasswordPolicyError(CorralError):
    """A new password breaks the policy (too short, equal to the username)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginResult:
    """The outcome of a login: the user when the password matched, and whether the user is enabled."""

    user: JSON | None
    enabled: bool = True


def check_password(username: str, password: str) -> None:
    """Rancher's local password rules: at least 12 characters, not the username."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"Password must be at least {MIN_PASSWORD_LENGTH} characters")
    if password == username:
        raise PasswordPolicyError("Password cannot be the same as username")


class LocalAuth:
    """Local users: create, verify passwords, and the UserAttribute a login keeps up to date."""

    def __init__(self, state: ServerState, *, iterations: int = passwords.ITERATIONS) -> None:
        self.state = state
        self.iterations = iterations

    def by_username(self, username: str) -> JSON | None:
        found = self.state.users.by_index("username", username)
        return found[0] if found else None

    async def _record(self, user_id: str) -> passwords.PasswordRecord | None:
        key = f"{passwords.PASSWORDS_NAMESPACE}/{user_id}"
        secret = self.state.passwords.get(key)
        if secret is None:
            try:
                secret = await self.state.upstream.get(
                    f"/api/v1/namespaces/{passwords.PASSWORDS_NAMESPACE}/secrets/{user_id}"
                )
                await self.state.passwords.observe(secret)
            except KubeAPIError:
                secret = None
        if secret is None:
            return None
        try:
            return passwords.PasswordRecord.from_secret(secret)
        except passwords.PasswordRecordError as exc:
            logger.warning("user %s: %s", user_id, exc)
            return None

    async def verify(self, username: str, password: str) -> LoginResult:
        """The user when the password is right; the same key derivation runs when the user is unknown."""
        user = self.by_username(username)
        if user is None:
            # Another process may have created the user a moment ago: look in the upstream once,
            # while the dummy derivation runs, so an unknown name costs what a wrong password costs.
            dummy = asyncio.to_thread(passwords.verify_or_dummy, None, password, iterations=self.iterations)
            await asyncio.gather(dummy, self._refresh_users())
            user = self.by_username(username)
            if user is None:
                return LoginResult(user=None)
        record = await self._record(str(user["metadata"]["name"])) if user is not None else None
        try:
            ok = await asyncio.to_thread(
                passwords.verify_or_dummy, record, password, iterations=self.iterations
            )
        except passwords.PasswordRecordError as exc:
            logger.warning("login for a local user failed on its password record: %s", exc)
            ok = False
        if not ok or user is None or record is None:
            return LoginResult(user=None)
        if record.algorithm == passwords.BCRYPT:
            await self._migrate(str(user["metadata"]["name"]), password)
        return LoginResult(user=user, enabled=user.get("enabled") is not False)

    async def _refresh_users(self) -> None:
        try:
            await self.state.refresh("users")
        except KubeAPIError as exc:
            logger.warning("listing users after a cache miss failed: %s", exc)

    async def _migrate(self, user_id: str, password: str) -> None:
        fresh = await asyncio.to_thread(passwords.hash_password, password, iterations=self.iterations)
        path = f"/api/v1/namespaces/{passwords.PASSWORDS_NAMESPACE}/secrets/{user_id}"
        try:
            stored = await self.state.upstream.patch(path, passwords.migration_patch(fresh), kind="json")
            await self.state.passwords.observe(stored)
        except KubeAPIError as exc:
            logger.warning("user %s: moving the password to PBKDF2 failed: %s", user_id, exc)

    async def create_user(
        self,
        *,
        username: str,
        password: str,
        display_name: str = "",
        enabled: bool = True,
        must_change_password: bool = False,
    ) -> JSON:
        """A new local user (generateName ``u-``) with its password Secret; `UserExistsError` if taken."""
        if self.by_username(username) is not None:
            raise UserExistsError(f"username {username!r} is already in use")
        check_password(username, password)
        user = await self.state.create(
            "users",
            {
                "metadata": {"generateName": "u-"},
                "username": username,
                "displayName": display_name,
                "enabled": enabled,
                "mustChangePassword": must_change_password,
            },
        )
        user_id = str(user["metadata"]["name"])
        user = await self.state.patch("users", user_id, {"principalIds": [principal_id(user_id)]})
        await self.set_password(user, password)
        return user

    async def set_password(self, user: Mapping[str, Any], password: str) -> None:
        """Store (or replace) the user's PBKDF2 password Secret, owned by the User."""
        user_id = str(user["metadata"]["name"])
        record = await asyncio.to_thread(passwords.hash_password, password, iterations=self.iterations)
        secret = passwords.password_secret(
            user_name=user_id, user_uid=str(user["metadata"]["uid"]), record=record
        )
        collection = f"/api/v1/namespaces/{passwords.PASSWORDS_NAMESPACE}/secrets"
        try:
            stored = await self.state.upstream.create(collection, secret)
        except AlreadyExistsError:
            stored = await self.state.upstream.replace(f"{collection}/{user_id}", secret)
        await self.state.passwords.observe(stored)

    async def record_login(self, user: Mapping[str, Any]) -> None:
        """Keep the user's UserAttribute as a local login leaves it (extras; no group principals)."""
        user_id = str(user["metadata"]["name"])
        extras = {"principalid": [principal_id(user_id)], "username": [str(user.get("username") or "")]}
        existing = self.state.userattributes.get(user_id)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if existing is None:
            body: JSON = {
                "metadata": {"name": user_id},
                "UserName": str(user.get("username") or ""),
                "GroupPrincipals": {LOCAL_PROVIDER: {"items": []}},
                "ExtraByProvider": {LOCAL_PROVIDER: extras},
                "LastRefresh": now,
                "NeedsRefresh": False,
                "lastLogin": now,
            }
            with contextlib.suppress(AlreadyExistsError):
                await self.state.create("userattributes", body)
            return
        if (existing.get("ExtraByProvider") or {}).get(LOCAL_PROVIDER) == extras:
            return
        merged = {**(existing.get("ExtraByProvider") or {}), LOCAL_PROVIDER: extras}
        await self.state.patch("userattributes", user_id, {"ExtraByProvider": merged, "lastLogin": now})

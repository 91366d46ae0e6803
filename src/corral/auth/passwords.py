"""Local-user passwords as current Rancher keeps them: PBKDF2-HMAC-SHA3-512 in a Secret, bcrypt as legacy.

Rancher stores one Secret per user in ``cattle-local-user-passwords`` named after the user, annotated
``cattle.io/password-hash: pbkdf2sha3512`` with ``data.password`` (32-byte key) and ``data.salt``
(32 random bytes), 210000 iterations (``pkg/auth/providers/local/pbkdf2``). Secrets migrated from the
old ``User.password`` field say ``bcrypt`` and hold only the bcrypt hash; a successful login rewrites
them as PBKDF2. `verify_or_dummy` makes an unknown user cost the same PBKDF2 work as a wrong password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import bcrypt

from corral.errors import CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "BCRYPT",
    "HASH_ANNOTATION",
    "ITERATIONS",
    "KEY_BYTES",
    "PASSWORDS_NAMESPACE",
    "PBKDF2_SHA3_512",
    "SALT_BYTES",
    "Kdf",
    "PasswordRecord",
    "PasswordRecordError",
    "hash_password",
    "migration_patch",
    "password_secret",
    "pbkdf2_sha3_512",
    "verify_or_dummy",
    "verify_password",
]

PASSWORDS_NAMESPACE: Final = "cattle-local-user-passwords"
HASH_ANNOTATION: Final = "cattle.io/password-hash"
PBKDF2_SHA3_512: Final = "pbkdf2sha3512"
BCRYPT: Final = "bcrypt"
ITERATIONS: Final = 210_000
KEY_BYTES: Final = 32
SALT_BYTES: Final = 32
BCRYPT_MAX_BYTES: Final = 72
"""bcrypt reads only this many password bytes (Go's implementation ignores the rest; we cut likewise)."""

Kdf = Callable[[bytes, bytes, int, int], bytes]
"""``kdf(password, salt, iterations, length) -> key``: replaceable so tests can observe the work done."""


class PasswordRecordError(CorralError):
    """A password Secret is malformed or uses an unknown algorithm; the message never includes its data."""


def pbkdf2_sha3_512(password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """PBKDF2 with HMAC-SHA3-512, as Go's ``pbkdf2.Key(sha3.New512, ...)``."""
    return hashlib.pbkdf2_hmac("sha3_512", password, salt, iterations, length)


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordRecord:
    """What the password Secret holds: the algorithm annotation and the raw ``data`` values."""

    algorithm: str
    """`PBKDF2_SHA3_512` or `BCRYPT` (the ``cattle.io/password-hash`` annotation)."""
    password: bytes = field(repr=False)
    """The derived key (PBKDF2) or the bcrypt hash string's bytes."""
    salt: bytes = field(default=b"", repr=False)
    """PBKDF2 salt; empty for bcrypt."""

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> PasswordRecord:
        """Read a Secret as the API returns it (``data`` values in standard base64)."""
        metadata = secret.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        algorithm = annotations.get(HASH_ANNOTATION, "")
        if algorithm not in (PBKDF2_SHA3_512, BCRYPT):
            raise PasswordRecordError(
                f"password Secret {metadata.get('name', '?')!r}: unsupported hashing algorithm {algorithm!r}"
                f" in annotation {HASH_ANNOTATION} (expected {PBKDF2_SHA3_512!r} or {BCRYPT!r})"
            )
        data = secret.get("data") or {}
        password = _decode_data(data, "password", metadata)
        salt = _decode_data(data, "salt", metadata) if algorithm == PBKDF2_SHA3_512 else b""
        return cls(algorithm=algorithm, password=password, salt=salt)


def _decode_data(data: Mapping[str, Any], key: str, metadata: Mapping[str, Any]) -> bytes:
    where = f"password Secret {metadata.get('name', '?')!r}: data.{key}"
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PasswordRecordError(f"{where} is missing or empty")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise PasswordRecordError(f"{where} is not standard base64") from None


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS, kdf: Kdf = pbkdf2_sha3_512
) -> PasswordRecord:
    """A new PBKDF2 record for ``password`` (random 32-byte salt unless one is given)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    key = kdf(password.encode("utf-8"), salt, iterations, KEY_BYTES)
    return PasswordRecord(algorithm=PBKDF2_SHA3_512, password=key, salt=salt)


def verify_password(
    record: PasswordRecord, password: str, *, iterations: int = ITERATIONS, kdf: Kdf = pbkdf2_sha3_512
) -> bool:
    """True when ``password`` matches ``record`` (constant-time compare for PBKDF2; bcrypt's own check).

    Raises `PasswordRecordError` for an unknown algorithm or a malformed bcrypt hash.
    """
    secret = password.encode("utf-8")
    if record.algorithm == PBKDF2_SHA3_512:
        return hmac.compare_digest(kdf(secret, record.salt, iterations, KEY_BYTES), record.password)
    if record.algorithm == BCRYPT:
        try:
            return bcrypt.checkpw(secret[:BCRYPT_MAX_BYTES], record.password)
        except ValueError:
            raise PasswordRecordError("bcrypt password hash is malformed") from None
    raise PasswordRecordError(f"unsupported hashing algorithm {record.algorithm!r}")


# The record an unknown user is checked against: a fixed salt and a key no password derives in practice.
_DUMMY_RECORD: Final = PasswordRecord(
    algorithm=PBKDF2_SHA3_512, password=bytes(KEY_BYTES), salt=bytes(SALT_BYTES)
)


def verify_or_dummy(
    record: PasswordRecord | None, password: str, *, iterations: int = ITERATIONS, kdf: Kdf = pbkdf2_sha3_512
) -> bool:
    """`verify_password`, or for an unknown user (``record is None``) the same PBKDF2 work and False.

    The login path calls this whether or not the user exists, so the response time does not tell
    which user names exist. (Rancher itself runs a bcrypt check of cost 10 for unknown users.)
    """
    if record is None:
        verify_password(_DUMMY_RECORD, password, iterations=iterations, kdf=kdf)
        return False
    return verify_password(record, password, iterations=iterations, kdf=kdf)


def password_secret(*, user_name: str, user_uid: str, record: PasswordRecord) -> dict[str, Any]:
    """The password Secret Rancher creates for a user (owned by the User, so it goes with it)."""
    data = {"password": base64.b64encode(record.password).decode("ascii")}
    if record.algorithm == PBKDF2_SHA3_512:
        data["salt"] = base64.b64encode(record.salt).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": user_name,
            "namespace": PASSWORDS_NAMESPACE,
            "annotations": {HASH_ANNOTATION: record.algorithm},
            "ownerReferences": [
                {"apiVersion": "management.cattle.io/v3", "kind": "User", "name": user_name, "uid": user_uid}
            ],
        },
        "data": data,
    }


def migration_patch(record: PasswordRecord) -> list[dict[str, Any]]:
    """The JSON patch that moves a bcrypt Secret to PBKDF2 after a successful login (``record`` is new).

    Two replaces, as Rancher sends them: ``/data`` and the annotation, its path escaped per RFC 6901.
    """
    escaped = HASH_ANNOTATION.replace("~", "~0").replace("/", "~1")
    data = {
        "password": base64.b64encode(record.password).decode("ascii"),
        "salt": base64.b64encode(record.salt).decode("ascii"),
    }
    return [
        {"op": "replace", "path": "/data", "value": data},
        {"op": "replace", "path": f"/metadata/annotations/{escaped}", "value": record.algorithm},
    ]

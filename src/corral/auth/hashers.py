"""Rancher's token hash formats: SHA3-512 (written today), SHA-256 and scrypt (still verified).

A token's secret is stored as ``$<version>:...`` and the version picks the hasher, as in Rancher's
``pkg/auth/tokens/hashers`` and kube-api-auth's copy of it. The strings are byte-compatible both ways:
a hash made here verifies in Rancher and the reverse. Errors name the part that is wrong, never a secret.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import re
import secrets

from corral.errors import CorralError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_VERSION",
    "HashFormatError",
    "HashVersion",
    "hash_secret",
    "hash_version",
    "verify",
]


class HashFormatError(CorralError):
    """A stored hash string is malformed; the message names the part (never the secret or the hash)."""


class HashVersion(enum.IntEnum):
    """The number after ``$`` (Rancher's HashVersion)."""

    SCRYPT = 1
    SHA256 = 2
    SHA3 = 3


DEFAULT_VERSION = HashVersion.SHA3
"""New hashes are SHA3-512, as Rancher's GetHasher."""

SALT_BYTES = 8
"""Every hasher draws an 8-byte salt."""
SHA3_VARIATION_SHA512 = 1
"""The second field of a SHA3 hash: 1 means SHA3-512, the only variation there is."""
SCRYPT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_KEY_BYTES = 64

# Bounds on the scrypt parameters read back from a stored hash: Rancher writes 15:8:1 and honours whatever the
# string says; we refuse absurd values so a corrupted record cannot make one verification take gigabytes.
_SCRYPT_MAX_LOG2_N = 20
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16

_B64_STD = re.compile(r"[A-Za-z0-9+/]*")
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _b64raw_encode(data: bytes) -> str:
    """Standard base64 without padding (Go's base64.RawStdEncoding)."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64raw_decode(text: str, part: str) -> bytes:
    """Decode like Go's RawStdEncoding.DecodeString: no padding, CR and LF ignored, lenient trailing bits."""
    cleaned = text.replace("\r", "").replace("\n", "")
    if not _B64_STD.fullmatch(cleaned) or len(cleaned) % 4 == 1:
        raise HashFormatError(f"hash format invalid: the {part} is not unpadded standard base64")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except binascii.Error as exc:  # pragma: no cover - the pattern above already excludes this
        raise HashFormatError(f"hash format invalid: the {part} is not unpadded standard base64") from exc


def _go_atoi(text: str, part: str) -> int:
    """Parse like Go's strconv.Atoi: optional sign, ASCII digits, nothing else (no spaces, no underscores)."""
    if not _DECIMAL.fullmatch(text):
        raise HashFormatError(f"hash format invalid: the {part} is not a decimal integer")
    return int(text)


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode("utf-8")


def hash_version(hashed: str) -> HashVersion:
    """The version of a stored hash, read as Rancher's GetHashVersion (the leading ``$`` is optional there).

    Raises `HashFormatError` when there are fewer than three ``:``-separated parts, the version is not a
    number, or no hasher exists for it.
    """
    parts = hashed.removeprefix("$").split(":", 2)
    if len(parts) != 3:
        raise HashFormatError("hash format invalid: expected '$<version>:...' with at least three parts")
    number = _go_atoi(parts[0], "version")
    try:
        return HashVersion(number)
    except ValueError:
        raise HashFormatError("hash version is not 1, 2 or 3: no hasher exists for it") from None


def hash_secret(
    secret: str | bytes, *, version: HashVersion = DEFAULT_VERSION, salt: bytes | None = None
) -> str:
    """Hash a token secret in Rancher's format for ``version`` (SHA3-512 by default).

    ``salt`` is for tests and interop vectors only; by default 8 random bytes are drawn, as Rancher does.
    """
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    data = _secret_bytes(secret)
    if version is HashVersion.SHA3:
        digest = hashlib.sha3_512(salt + data).digest()
        return f"${int(version)}:{SHA3_VARIATION_SHA512}:{_b64raw_encode(salt)}:{_b64raw_encode(digest)}"
    if version is HashVersion.SHA256:
        digest = hashlib.sha256(salt + data).digest()
        return f"${int(version)}:{_b64raw_encode(salt)}:{_b64raw_encode(digest)}"
    key = _scrypt(data, salt, log2_n=SCRYPT_LOG2_N, r=SCRYPT_R, p=SCRYPT_P, length=SCRYPT_KEY_BYTES)
    return f"${int(version)}:{salt.hex()}:{SCRYPT_LOG2_N}:{SCRYPT_R}:{SCRYPT_P}:{_b64raw_encode(key)}"


def verify(hashed: str, secret: str | bytes) -> bool:
    """True when ``secret`` matches the stored hash; the comparison is constant-time.

    A wrong secret gives False. A malformed hash raises `HashFormatError` naming the bad part, like
    Rancher's VerifyHash returning a format error rather than a mismatch.
    """
    version = hash_version(hashed)
    if not hashed.startswith("$"):
        raise HashFormatError("hash format invalid: missing the leading '$'")
    data = _secret_bytes(secret)
    if version is HashVersion.SHA3:
        expected, computed = _sha3_pair(hashed, data)
    elif version is HashVersion.SHA256:
        expected, computed = _sha256_pair(hashed, data)
    else:
        expected, computed = _scrypt_pair(hashed, data)
    return hmac.compare_digest(expected, computed)


def _sha3_pair(hashed: str, data: bytes) -> tuple[bytes, bytes]:
    parts = hashed[1:].split(":")
    if len(parts) != 4:
        raise HashFormatError("hash format invalid: a SHA3 hash has four parts '$3:<variation>:<salt>:<key>'")
    variation = _go_atoi(parts[1], "SHA3 variation")
    if variation != SHA3_VARIATION_SHA512:
        raise HashFormatError(
            f"hash format invalid: unknown SHA3 variation (only {SHA3_VARIATION_SHA512} exists)"
        )
    expected = _b64raw_decode(parts[3], "hash")
    if not expected:
        raise HashFormatError("hash format invalid: the hash is empty")
    salt = _b64raw_decode(parts[2], "salt")
    return expected, hashlib.sha3_512(salt + data).digest()


def _sha256_pair(hashed: str, data: bytes) -> tuple[bytes, bytes]:
    # Rancher splits into at most three parts here, so a ':' inside the hash part fails its base64 decoding.
    salt_text, hash_text = hashed[1:].split(":", 2)[1:]
    expected = _b64raw_decode(hash_text, "hash")
    if not expected:
        raise HashFormatError("hash format invalid: the hash is empty")
    salt = _b64raw_decode(salt_text, "salt")
    return expected, hashlib.sha256(salt + data).digest()


def _scrypt_pair(hashed: str, data: bytes) -> tuple[bytes, bytes]:
    parts = hashed[1:].split(":")
    if len(parts) != 6:
        raise HashFormatError(
            "hash format invalid: a scrypt hash has six parts '$1:<hex salt>:<N>:<r>:<p>:<key>'"
        )
    if not _HEX.fullmatch(parts[1]):
        raise HashFormatError("hash format invalid: the scrypt salt is not an even number of hex digits")
    salt = bytes.fromhex(parts[1])
    log2_n = _go_atoi(parts[2], "scrypt N exponent")
    r = _go_atoi(parts[3], "scrypt r")
    p = _go_atoi(parts[4], "scrypt p")
    if not (1 <= log2_n <= _SCRYPT_MAX_LOG2_N and 1 <= r <= _SCRYPT_MAX_R and 1 <= p <= _SCRYPT_MAX_P):
        raise HashFormatError(
            "hash format invalid: scrypt parameters outside"
            f" log2(N) 1..{_SCRYPT_MAX_LOG2_N}, r 1..{_SCRYPT_MAX_R}, p 1..{_SCRYPT_MAX_P}"
        )
    expected = _b64raw_decode(parts[5], "scrypt key")
    if not expected:
        raise HashFormatError("hash format invalid: the scrypt key is empty")
    return expected, _scrypt(data, salt, log2_n=log2_n, r=r, p=p, length=len(expected))


def _scrypt(data: bytes, salt: bytes, *, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL needs room for the 128*r*N work area plus 128*r*p for the mixing blocks; add a margin.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=maxmem)

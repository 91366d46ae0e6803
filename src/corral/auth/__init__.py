"""Identity primitives shared by the server and kube-api-auth: who a caller is, token values and hashes.

Pure functions and frozen data only (no network, no Kubernetes calls), byte-compatible with Rancher.
"""

from corral.auth.hashers import HashFormatError, HashVersion, hash_secret, verify
from corral.auth.identity import AUTHENTICATED_GROUPS, UserInfo
from corral.auth.passwords import PasswordRecord, PasswordRecordError, verify_or_dummy
from corral.auth.tokens import (
    CredentialSource,
    RequestCredential,
    TokenFormatError,
    TokenRef,
    credential_from_headers,
    parse_token,
)

__all__ = [
    "AUTHENTICATED_GROUPS",
    "CredentialSource",
    "HashFormatError",
    "HashVersion",
    "PasswordRecord",
    "PasswordRecordError",
    "RequestCredential",
    "TokenFormatError",
    "TokenRef",
    "UserInfo",
    "credential_from_headers",
    "hash_secret",
    "parse_token",
    "verify",
    "verify_or_dummy",
]

"""Token hashes: vectors computed here with hashlib (and Rancher's published one), formats, bad input."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.auth.hashers import HashFormatError, HashVersion, hash_secret, hash_version, verify

# Published in rancher/rancher pkg/auth/tokens/hashers/sha3_test.go (TestSHA3VerifyHash "valid hash").
RANCHER_SHA3 = (
    "$3:1:uFrxm43ggfw:zsN1zEFC7SvABTdR58o7yjIqfrI4cQ/HSYz3jBwwVnx5X+/ph4etGDIU9dvIYuy1IvnYUVe6a/Ar95xE+gfjhA"
)
RANCHER_SHA3_SECRET = "d" * 54

SALT = bytes(range(8))
SECRET = "hello world"


def b64raw(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_rancher_published_sha3_vector_verifies() -> None:
    assert verify(RANCHER_SHA3, RANCHER_SHA3_SECRET)
    assert not verify(RANCHER_SHA3, "wrong")
    assert not verify(RANCHER_SHA3, RANCHER_SHA3_SECRET[:-1])


def test_salt_is_raw_base64_of_eight_bytes() -> None:
    assert b64raw(SALT) == "AAECAwQFBgc"


def test_sha3_format_matches_a_vector_computed_with_hashlib() -> None:
    expected = f"$3:1:AAECAwQFBgc:{b64raw(hashlib.sha3_512(SALT + SECRET.encode()).digest())}"
    assert hash_secret(SECRET, salt=SALT) == expected
    assert hash_secret(SECRET, version=HashVersion.SHA3, salt=SALT) == expected


def test_sha256_format_matches_a_vector_computed_with_hashlib() -> None:
    expected = f"$2:AAECAwQFBgc:{b64raw(hashlib.sha256(SALT + SECRET.encode()).digest())}"
    assert hash_secret(SECRET, version=HashVersion.SHA256, salt=SALT) == expected
    assert verify(expected, SECRET)


def test_scrypt_format_matches_a_vector_computed_with_hashlib() -> None:
    key = hashlib.scrypt(SECRET.encode(), salt=SALT, n=1 << 15, r=8, p=1, dklen=64, maxmem=64 << 20)
    expected = f"$1:0001020304050607:15:8:1:{b64raw(key)}"
    assert hash_secret(SECRET, version=HashVersion.SCRYPT, salt=SALT) == expected
    assert verify(expected, SECRET)
    assert not verify(expected, SECRET + ":wrong!")


def test_scrypt_verification_uses_the_parameters_in_the_string() -> None:
    key = hashlib.scrypt(b"s", salt=b"\xab", n=1 << 4, r=2, p=1, dklen=16)
    assert verify(f"$1:ab:4:2:1:{b64raw(key)}", "s")


def test_default_hashes_are_random_salted_sha3() -> None:
    first, second = hash_secret(SECRET), hash_secret(SECRET)
    assert first != second
    assert first.startswith("$3:1:")
    assert len(base64.b64decode(first.split(":")[2] + "=")) == 8


@given(secret=st.text(max_size=100), other=st.text(max_size=100))
@settings(max_examples=150)
def test_sha_hashes_verify_their_secret_and_only_it(secret: str, other: str) -> None:
    for version in (HashVersion.SHA3, HashVersion.SHA256):
        hashed = hash_secret(secret, version=version)
        assert verify(hashed, secret)
        assert verify(hashed, other) == (other == secret)


def test_bytes_and_str_secrets_hash_alike() -> None:
    assert hash_secret("pässword", salt=SALT) == hash_secret("pässword".encode(), salt=SALT)


@pytest.mark.parametrize(
    ("hashed", "version"),
    [
        ("$1:some-salt-here:some-secret-here", HashVersion.SCRYPT),
        ("1:some-salt-here:some-secret-here", HashVersion.SCRYPT),  # the '$' is optional for the version
        ("$+3:1:a:b", HashVersion.SHA3),  # Go's Atoi accepts a sign
        ("$2:a:b:c", HashVersion.SHA256),
    ],
)
def test_hash_version(hashed: str, version: HashVersion) -> None:
    assert hash_version(hashed) is version


@pytest.mark.parametrize(
    "hashed",
    [
        "thisisnotahash",
        "$1:some-secret-here",
        "$not-a-number:a:b",
        "$ 3:1:a:b",
        "$3_0:1:a:b",
        "$4:a:b",
        "$0:a:b",
    ],
)
def test_hash_version_rejects(hashed: str) -> None:
    with pytest.raises(HashFormatError):
        hash_version(hashed)


@pytest.mark.parametrize(
    "hashed",
    [
        "$3:1:uFrxm43ggfw",  # too few parts
        RANCHER_SHA3.replace("$3:", "$2:", 1),  # read as SHA-256: the salt "1" is not base64
        RANCHER_SHA3.replace("$3:1:", "$3:2:", 1),  # unknown SHA3 variation
        RANCHER_SHA3.replace("$3:1:", "$3:B:", 1),  # variation not a number
        RANCHER_SHA3[1:],  # missing '$'
        RANCHER_SHA3.replace("$3:", "$A:", 1),
        RANCHER_SHA3.replace(":uFrx", ":#Frx", 1),  # non-base64 salt
        RANCHER_SHA3.replace(":zsN1", ":#sN1", 1),  # non-base64 key
        RANCHER_SHA3 + "==",  # padding is not raw base64
        RANCHER_SHA3 + ":extra",
        "$3:1:uFrxm43ggfw:",  # empty key
        "$2:AAECAwQFBgc:",
        "$1:zz:15:8:1:AAAA",  # salt not hex
        "$1:abc:15:8:1:AAAA",  # odd hex
        "$1:ab:31:8:1:AAAA",  # N out of bounds
        "$1:ab:15:0:1:AAAA",
        "$1:ab:15:8:1",
        "$1:ab:15:8:1:",
    ],
)
def test_malformed_hashes_raise_a_format_error(hashed: str) -> None:
    with pytest.raises(HashFormatError):
        verify(hashed, RANCHER_SHA3_SECRET)


def test_go_base64_ignores_line_breaks() -> None:
    salt, key = RANCHER_SHA3.split(":")[2:]
    folded = f"$3:1:{salt}:{key[:40]}\r\n{key[40:]}"
    assert verify(folded, RANCHER_SHA3_SECRET)


@given(secret=st.text(alphabet="bcdfghjklmnpqrstvwxz2456789", min_size=20, max_size=54))
def test_format_errors_never_echo_the_secret_or_the_hash(secret: str) -> None:
    for hashed in (
        f"$3:1:#{secret}:{secret}",
        f"$3:{secret}:a:b",
        f"$2:{secret}:#{secret}",
        f"${secret}:a:b",
    ):
        with pytest.raises(HashFormatError) as caught:
            verify(hashed, secret)
        assert secret not in str(caught.value)

"""Local-user passwords: PBKDF2-HMAC-SHA3-512 against a derivation written here, bcrypt, dummy work."""

from __future__ import annotations

import base64
import hashlib
import hmac

import bcrypt
import pytest

from corral.auth.passwords import (
    ITERATIONS,
    PasswordRecord,
    PasswordRecordError,
    hash_password,
    migration_patch,
    password_secret,
    pbkdf2_sha3_512,
    verify_or_dummy,
    verify_password,
)

SALT = bytes(range(32))


def reference_pbkdf2(password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """RFC 8018 PBKDF2 written out with hmac + sha3_512 (one 64-byte block covers a 32-byte key)."""
    assert length <= 64
    u = hmac.new(password, salt + (1).to_bytes(4, "big"), hashlib.sha3_512).digest()
    block = bytearray(u)
    for _ in range(iterations - 1):
        u = hmac.new(password, u, hashlib.sha3_512).digest()
        block = bytearray(a ^ b for a, b in zip(block, u, strict=True))
    return bytes(block[:length])


class RecordingKdf:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
        self.calls.append((len(salt), iterations, length))
        return pbkdf2_sha3_512(password, salt, iterations, length)


@pytest.mark.parametrize("iterations", [1, 2, 1000])
def test_kdf_is_pbkdf2_hmac_sha3_512(iterations: int) -> None:
    password = "pässword".encode()
    assert pbkdf2_sha3_512(password, SALT, iterations, 32) == reference_pbkdf2(password, SALT, iterations, 32)


def test_new_records_use_rancher_parameters() -> None:
    kdf = RecordingKdf()
    record = hash_password("correct horse", kdf=kdf)
    assert kdf.calls == [(32, 210_000, 32)]
    assert record.algorithm == "pbkdf2sha3512"
    assert len(record.salt) == 32
    assert len(record.password) == 32
    assert record.password == hashlib.pbkdf2_hmac("sha3_512", b"correct horse", record.salt, 210_000, 32)


def test_verify_pbkdf2() -> None:
    record = hash_password("s3cret", salt=SALT, iterations=50)
    assert record.password == reference_pbkdf2(b"s3cret", SALT, 50, 32)
    assert verify_password(record, "s3cret", iterations=50)
    assert not verify_password(record, "s3cret ", iterations=50)
    assert not verify_password(record, "s3cret", iterations=51)


def test_bcrypt_is_the_legacy_format() -> None:
    record = PasswordRecord(algorithm="bcrypt", password=bcrypt.hashpw(b"old-password", bcrypt.gensalt(4)))
    assert verify_password(record, "old-password")
    assert not verify_password(record, "old-passwor")


def test_bcrypt_reads_72_bytes_like_go() -> None:
    long = "x" * 72
    record = PasswordRecord(algorithm="bcrypt", password=bcrypt.hashpw(long.encode(), bcrypt.gensalt(4)))
    assert verify_password(record, long + "ignored beyond byte 72")
    assert not verify_password(record, "x" * 71)


def test_malformed_bcrypt_hash_is_a_record_error() -> None:
    with pytest.raises(PasswordRecordError, match="bcrypt"):
        verify_password(PasswordRecord(algorithm="bcrypt", password=b"not-a-bcrypt-hash"), "pw")


def test_unknown_algorithm_is_a_record_error() -> None:
    with pytest.raises(PasswordRecordError, match="unsupported"):
        verify_password(PasswordRecord(algorithm="md5", password=b"x"), "pw")


def test_password_secret_shape() -> None:
    record = PasswordRecord(algorithm="pbkdf2sha3512", password=b"k" * 32, salt=SALT)
    assert password_secret(user_name="u-abcde", user_uid="uid-1", record=record) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "u-abcde",
            "namespace": "cattle-local-user-passwords",
            "annotations": {"cattle.io/password-hash": "pbkdf2sha3512"},
            "ownerReferences": [
                {"apiVersion": "management.cattle.io/v3", "kind": "User", "name": "u-abcde", "uid": "uid-1"}
            ],
        },
        "data": {"password": base64.b64encode(b"k" * 32).decode(), "salt": base64.b64encode(SALT).decode()},
    }


def test_bcrypt_secret_has_no_salt_and_round_trips() -> None:
    record = PasswordRecord(algorithm="bcrypt", password=b"$2a$10$abc")
    secret = password_secret(user_name="u-x", user_uid="1", record=record)
    assert set(secret["data"]) == {"password"}
    assert PasswordRecord.from_secret(secret) == record


def test_from_secret_round_trip() -> None:
    record = hash_password("pw", salt=SALT, iterations=3)
    assert PasswordRecord.from_secret(password_secret(user_name="u", user_uid="1", record=record)) == record


@pytest.mark.parametrize(
    ("annotations", "data", "match"),
    [
        ({}, {"password": "AAAA", "salt": "AAAA"}, "unsupported hashing algorithm"),
        ({"cattle.io/password-hash": "argon2"}, {"password": "AAAA"}, "unsupported hashing algorithm"),
        ({"cattle.io/password-hash": "pbkdf2sha3512"}, {"password": "c2VjcmV0"}, "data.salt is missing"),
        ({"cattle.io/password-hash": "pbkdf2sha3512"}, {"password": "c2VjcmV0!", "salt": "AAAA"}, "base64"),
        ({"cattle.io/password-hash": "bcrypt"}, {}, "data.password is missing"),
    ],
)
def test_malformed_secrets(annotations: dict[str, str], data: dict[str, str], match: str) -> None:
    secret = {"metadata": {"name": "u-abcde", "annotations": annotations}, "data": data}
    with pytest.raises(PasswordRecordError, match=match) as caught:
        PasswordRecord.from_secret(secret)
    assert "c2VjcmV0" not in str(caught.value)


def test_record_repr_hides_key_and_salt() -> None:
    record = PasswordRecord(algorithm="pbkdf2sha3512", password=b"KEYKEYKEY", salt=b"SALTSALT")
    assert "KEYKEYKEY" not in repr(record)
    assert "SALTSALT" not in repr(record)


def test_unknown_user_costs_the_same_kdf_work_as_a_wrong_password() -> None:
    record = hash_password("right", salt=SALT, iterations=ITERATIONS)
    wrong, unknown = RecordingKdf(), RecordingKdf()
    assert not verify_or_dummy(record, "wrong", kdf=wrong)
    assert not verify_or_dummy(None, "wrong", kdf=unknown)
    assert wrong.calls == unknown.calls == [(32, ITERATIONS, 32)]


def test_dummy_path_is_false_whatever_the_password() -> None:
    kdf = RecordingKdf()
    for password in ("", "admin", "\x00" * 32):
        assert not verify_or_dummy(None, password, iterations=5, kdf=kdf)
    assert kdf.calls == [(32, 5, 32)] * 3


def test_known_user_with_the_right_password() -> None:
    record = hash_password("right", iterations=4)
    assert verify_or_dummy(record, "right", iterations=4)


def test_migration_patch() -> None:
    record = hash_password("pw", salt=SALT, iterations=3)
    assert migration_patch(record) == [
        {
            "op": "replace",
            "path": "/data",
            "value": {
                "password": base64.b64encode(record.password).decode(),
                "salt": base64.b64encode(SALT).decode(),
            },
        },
        {"op": "replace", "path": "/metadata/annotations/cattle.io~1password-hash", "value": "pbkdf2sha3512"},
    ]

"""Token names, secrets and values; reading the credential from request headers; expiry and lastUsedAt."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.auth.tokens import (
    SECRET_ALPHABET,
    CredentialSource,
    RequestCredential,
    TokenFormatError,
    credential_from_headers,
    expires_at,
    expires_at_text,
    generate_name,
    generate_secret,
    is_expired,
    is_idle_expired,
    kubeconfig_token_name,
    kubeconfig_token_prefix,
    last_used_update,
    parse_token,
    split_token_parts,
)

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
TOKEN = "token-x7k2q:" + "b" * 54
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def basic(text: str) -> str:
    return "Basic " + base64.urlsafe_b64encode(text.encode()).decode()


# --- names and secrets -------------------------------------------------------------------------------------


def test_secret_is_54_characters_of_the_alphabet() -> None:
    assert SECRET_ALPHABET == ALPHABET
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(re.fullmatch(f"[{ALPHABET}]{{54}}", s) for s in secrets)


def test_generated_names_append_five_alphabet_characters() -> None:
    assert re.fullmatch(f"token-[{ALPHABET}]{{5}}", generate_name("token-"))
    assert re.fullmatch(
        f"kubeconfig-u-abcde[{ALPHABET}]{{5}}", generate_name(kubeconfig_token_prefix("u-abcde"))
    )


def test_generated_names_cut_a_long_prefix_to_58() -> None:
    name = generate_name("p" * 70)
    assert len(name) == 63
    assert name.startswith("p" * 58)
    assert name[58:] != "ppppp"


def test_kubeconfig_token_names() -> None:
    assert kubeconfig_token_prefix("user-xyz12") == "kubeconfig-user-xyz12"
    assert kubeconfig_token_name("u-abcde") == "kubeconfig-u-abcde"
    assert kubeconfig_token_name("u-abcde", cluster_id="c-m-12345") == "kubeconfig-u-abcde.c-m-12345"


# --- token values ------------------------------------------------------------------------------------------


@given(st.text(max_size=30))
def test_split_token_parts_is_rancher_split(value: str) -> None:
    name, secret = split_token_parts(value)
    if value.count(":") == 1:
        assert f"{name}:{secret}" == value
    else:
        assert (name, secret) == (value.split(":", maxsplit=1)[0], "")


def test_parse_token() -> None:
    ref = parse_token(TOKEN)
    assert (ref.name, ref.secret, ref.ext) == ("token-x7k2q", "b" * 54, False)
    ext = parse_token("ext/token-abcde:secret")
    assert (ext.name, ext.secret, ext.ext) == ("token-abcde", "secret", True)
    assert "secret" not in repr(ext)


@pytest.mark.parametrize("value", ["", "token-abc", "a:b:c", ":secret", "name:", "ext/:secret", "a::"])
def test_parse_token_rejects(value: str) -> None:
    with pytest.raises(TokenFormatError):
        parse_token(value)


@given(st.text(alphabet=ALPHABET, min_size=8, max_size=54))
def test_parse_errors_never_echo_the_value(secret: str) -> None:
    for value in (f"n:{secret}:{secret}", f":{secret}", secret):
        with pytest.raises(TokenFormatError) as caught:
            parse_token(value)
        assert secret not in str(caught.value)


# --- reading the request -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": f"Bearer {TOKEN}"}, (TOKEN, CredentialSource.BEARER)),
        ({"authorization": f"bEaReR   {TOKEN}  "}, (TOKEN, CredentialSource.BEARER)),
        ({"Authorization": f"  Bearer {TOKEN}\t"}, (TOKEN, CredentialSource.BEARER)),
        ({"Authorization": basic(TOKEN)}, (TOKEN, CredentialSource.BASIC)),
        ({"Authorization": basic("ext/token-abcde:s")}, ("ext/token-abcde:s", CredentialSource.BASIC)),
        (
            {"Authorization": "BASIC " + base64.urlsafe_b64encode(b"a:b").decode()},
            ("a:b", CredentialSource.BASIC),
        ),
        ({"Cookie": f"R_SESS={TOKEN}"}, (TOKEN, CredentialSource.COOKIE)),
        ({"Authorization": "", "Cookie": f"R_SESS={TOKEN}"}, (TOKEN, CredentialSource.COOKIE)),
        ({"Authorization": " \t ", "Cookie": f"R_SESS={TOKEN}"}, (TOKEN, CredentialSource.COOKIE)),
        ({"Cookie": f'CSRF=x; R_SESS="{TOKEN}"; other=1'}, (TOKEN, CredentialSource.COOKIE)),
        # Go's TrimSpace does not strip U+001C..U+001F, unlike Python's str.strip()
        ({"Authorization": "Bearer abc\x1c"}, ("abc\x1c", CredentialSource.BEARER)),
        # Go's EqualFold folds LATIN SMALL LETTER LONG S to 's'
        (
            {"Authorization": "Ba\u017fic " + base64.urlsafe_b64encode(b"a:b").decode()},
            ("a:b", CredentialSource.BASIC),
        ),
        ({"Authorization": "Bearer ✓token:sëcret"}, ("✓token:sëcret", CredentialSource.BEARER)),
    ],
)
def test_credential_found(headers: dict[str, str], expected: tuple[str, CredentialSource]) -> None:
    found = credential_from_headers(headers)
    assert found is not None
    assert (found.value, found.source) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Bearer\tabc"},  # the scheme is split off at a space only
        {"Authorization": f"Digest {TOKEN}", "Cookie": f"R_SESS={TOKEN}"},  # a header is there: no cookie
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": "Basic " + base64.b64encode(b"a:b??>").decode()},  # '+' / '/' are not URL-safe
        {"Authorization": "Basic " + base64.urlsafe_b64encode(b"a:bc").decode().rstrip("=")},  # no padding
        {"Authorization": "Basic YQ==YQ=="},
        {"Authorization": "Basic " + base64.urlsafe_b64encode(b"\xff\xfe:x").decode()},  # not UTF-8
        {"Authorization": "Basic "},
        {"Cookie": "R_SESS="},
        {"Cookie": "R_SESS=a\\b"},
        {"Cookie": "r_sess=" + TOKEN},  # cookie names are case-sensitive
        {"Coo\u212aie": "R_SESS=" + TOKEN},  # KELVIN SIGN is not an ASCII 'k'
        {"Authori\u017eation": "Bearer x"},
    ],
)
def test_no_credential(headers: dict[str, str]) -> None:
    assert credential_from_headers(headers) is None


def test_only_the_first_authorization_header_counts() -> None:
    pairs = [("Authorization", "Digest x"), ("Authorization", f"Bearer {TOKEN}")]
    assert credential_from_headers(pairs) is None
    pairs = [("authorization", f"Bearer {TOKEN}"), ("AUTHORIZATION", "Bearer other:x")]
    found = credential_from_headers(pairs)
    assert found is not None
    assert found.value == TOKEN
    assert credential_from_headers({"Authorization": ["", f"Bearer {TOKEN}"], "Cookie": ["R_SESS=c:s"]}) == (
        RequestCredential(value="c:s", source=CredentialSource.COOKIE)
    )


def test_cookie_lookup_skips_invalid_values_and_spans_headers() -> None:
    pairs = [("Cookie", 'a=1; R_SESS="x;'), ("Cookie", "R_SESS=bad\x7f; R_SESS=good:s")]
    found = credential_from_headers(pairs)
    assert found is not None
    assert found.value == "good:s"


def test_the_credential_value_stays_out_of_its_repr() -> None:
    found = credential_from_headers({"Authorization": f"Bearer {TOKEN}"})
    assert "b" * 54 not in repr(found)


header_text = st.text(max_size=40)
schemes = st.sampled_from(
    ["Bearer", "bearer", "BEARER", "Basic", "basic", "Digest", "", " Bearer", "Bearer\t"]
)


@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(["Authorization", "authorization", "Cookie", "cookie", "X-Other"]) | header_text,
            st.builds(lambda s, v: f"{s} {v}", schemes, header_text) | header_text,
        ),
        max_size=5,
    )
)
@settings(max_examples=400)
def test_never_raises_and_follows_the_first_authorization_value(pairs: list[tuple[str, str]]) -> None:
    found = credential_from_headers(pairs)
    auths = [v for k, v in pairs if k.lower() == "authorization" and k.isascii()]
    if found is None:
        return
    assert found.value
    if found.source is CredentialSource.COOKIE:
        assert not auths or not auths[0].strip(" \t\r\n\v\f\x85\xa0")
    elif found.source is CredentialSource.BEARER:
        assert found.value in auths[0]


@given(
    name=st.text(alphabet=ALPHABET + "-", min_size=1, max_size=20), secret=st.text(min_size=1, max_size=60)
)
def test_basic_round_trip(name: str, secret: str) -> None:
    value = f"{name}:{secret}"
    found = credential_from_headers({"Authorization": basic(value)})
    assert found == RequestCredential(value=value, source=CredentialSource.BASIC)


# --- expiry ------------------------------------------------------------------------------------------------


def test_ttl_zero_never_expires() -> None:
    assert expires_at(T0, 0) is None
    assert expires_at_text(T0, 0) == ""
    assert not is_expired(T0, 0, now=T0 + timedelta(days=10000))


def test_expiry_is_inclusive_at_the_ttl() -> None:
    ttl = 30 * 24 * 3600 * 1000
    assert expires_at(T0, ttl) == T0 + timedelta(days=30)
    assert not is_expired(T0, ttl, now=T0 + timedelta(days=30, microseconds=-1))
    assert is_expired(T0, ttl, now=T0 + timedelta(days=30))


def test_expires_at_text_is_rfc3339_utc_to_the_second() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 999_000, tzinfo=timezone(timedelta(hours=2)))
    assert expires_at_text(created, 1500) == "2026-01-02T01:04:07Z"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_expired(datetime(2026, 1, 1), 1000, now=T0)


def test_idle_expiry() -> None:
    assert not is_idle_expired(None, 960, now=T0)
    assert not is_idle_expired(T0, 0, now=T0 + timedelta(days=1))
    assert not is_idle_expired(T0, 960, now=T0 + timedelta(minutes=960))
    assert is_idle_expired(T0, 960, now=T0 + timedelta(minutes=960, microseconds=1))


# --- lastUsedAt --------------------------------------------------------------------------------------------


def test_last_used_is_written_once_per_second() -> None:
    assert last_used_update(None, now=T0.replace(microsecond=123)) == T0
    assert last_used_update(T0, now=T0 + timedelta(milliseconds=999)) is None
    assert last_used_update(T0, now=T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=1)
    assert last_used_update(T0 + timedelta(seconds=5), now=T0) == T0  # a clock step back still writes


@given(st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=60))
def test_writes_never_exceed_one_per_second(steps_ms: list[int]) -> None:
    now, last, writes = T0, None, []
    for step in steps_ms:
        now += timedelta(milliseconds=step)
        written = last_used_update(last, now=now)
        if written is not None:
            assert written.microsecond == 0
            writes.append(written)
            last = written
    assert len(writes) == len(set(writes))
    assert len(writes) == len({w.replace(microsecond=0) for w in writes})
    assert len(writes) <= (now - T0).total_seconds() + 1

"""Redaction: no secret survives in headers, bodies, URLs or text, and what is not secret stays readable."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from corral.report.redact import (
    REDACTED,
    redact_exchange,
    redact_headers,
    redact_json,
    redact_text,
    redact_url,
)

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
secret_of_rancher = st.text(alphabet=ALPHABET, min_size=54, max_size=54)
token_name = st.from_regex(r"token-[a-z0-9]{5}|kubeconfig-u-[a-z0-9]{5}[a-z0-9]{5}", fullmatch=True)
SECRET = (ALPHABET * 2)[:54]


def test_bearer_keeps_the_token_name_and_loses_the_secret() -> None:
    headers = redact_headers({"Authorization": f"Bearer token-abcde:{SECRET}", "Accept": "application/json"})
    assert headers == [("Authorization", f"Bearer token-abcde:{REDACTED}"), ("Accept", "application/json")]


def test_basic_credentials_of_a_token_keep_only_its_name() -> None:
    value = "Basic " + base64.urlsafe_b64encode(f"token-abcde:{SECRET}".encode()).decode()
    assert redact_headers([("authorization", value)]) == [("authorization", f"Basic token-abcde:{REDACTED}")]


def test_basic_credentials_of_a_password_lose_everything_but_the_scheme() -> None:
    value = "Basic " + base64.b64encode(b"admin pass:w0rd s3cret").decode()
    assert redact_headers([("Authorization", value)]) == [("Authorization", f"Basic {REDACTED}")]


def test_cookies_and_tunnel_headers_are_replaced_whole() -> None:
    headers = redact_headers(
        [
            ("Cookie", f"R_SESS=token-abcde:{SECRET}"),
            ("X-API-Tunnel-Token", "abc"),
            ("X-API-Tunnel-Params", "e30="),
        ]
    )
    assert [value for _, value in headers] == [REDACTED] * 3


def test_json_bodies_lose_passwords_tokens_and_secret_data() -> None:
    body = {
        "type": "user",
        "username": "alice",
        "password": "hunter2hunter2",
        "nested": [{"token": f"token-abcde:{SECRET}"}, {"note": f"made kubeconfig-u-x:{SECRET}"}],
        "object": {"kind": "Secret", "data": {"token": "c2VjcmV0", "ca.crt": "Y2E="}},
    }
    out = redact_json(body)
    assert out["username"] == "alice"
    assert out["password"] == REDACTED
    assert out["nested"] == [
        {"token": f"token-abcde:{REDACTED}"},
        {"note": f"made kubeconfig-u-x:{REDACTED}"},
    ]
    assert out["object"] == {"kind": "Secret", "data": {"token": REDACTED, "ca.crt": REDACTED}}
    assert body["password"] == "hunter2hunter2"  # the input is left alone


def test_a_tokenreview_loses_its_token() -> None:
    review = {"kind": "TokenReview", "spec": {"token": f"token-abcde:{SECRET}"}}
    assert redact_json(review)["spec"]["token"] == f"token-abcde:{REDACTED}"


def test_urls_lose_user_info_and_secret_query_values() -> None:
    url = "https://admin:pw@rancher.example:8443/v3/tokens?token=abc&limit=5&password=x"
    assert (
        redact_url(url)
        == f"https://{REDACTED}@rancher.example:8443/v3/tokens?token={REDACTED}&limit=5&password={REDACTED}"
    )


def test_text_loses_jwts_private_keys_and_known_secrets() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----"
    text = f"sa {jwt} key {key} pw hunter2"
    out = redact_text(text, secrets=["hunter2"])
    assert jwt not in out
    assert "MIIEabc" not in out
    assert "hunter2" not in out
    assert out.startswith(f"sa {REDACTED} key -----BEGIN RSA PRIVATE KEY-----{REDACTED}")


def test_an_exchange_summary_is_json_and_keeps_what_is_not_secret() -> None:
    summary = redact_exchange(
        method="POST",
        url="https://srv/v3-public/localProviders/local?action=login",
        status=201,
        request_headers={"Content-Type": "application/json"},
        request_body={"username": "alice", "password": "pw-of-alice"},
        response_body=json.dumps({"token": f"token-abcde:{SECRET}", "userId": "u-x"}).encode(),
        seconds=0.0123456789,
    )
    text = json.dumps(summary)
    assert "pw-of-alice" not in text
    assert SECRET not in text
    assert summary["request"]["url"] == "https://srv/v3-public/localProviders/local?action=login"
    assert summary["seconds"] == 0.012346
    assert "u-x" in text


@given(name=token_name, secret=secret_of_rancher, prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_no_rancher_token_secret_survives_anywhere(name: str, secret: str, prefix: str, suffix: str) -> None:
    token = f"{name}:{secret}"
    summary = redact_exchange(
        method="GET",
        url=f"https://srv/k8s/clusters/c-1/api?x={prefix}",
        status=200,
        request_headers=[("Authorization", f"Bearer {token}"), ("X-Note", prefix + token + suffix)],
        request_body={"anything": [prefix + token + suffix], "token": token},
        response_body=prefix + token + suffix,
    )
    assert secret not in json.dumps(summary)


def _strings(value: object, own_keys: set[str]) -> list[str]:
    """Every string in a summary, values and keys, except the summary's own field names."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        found = [k for k in value if k not in own_keys]
        for item in value.values():
            found += _strings(item, own_keys)
        return found
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item, own_keys)]
    return []


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for item in value.values() for k in _keys(item)}
    if isinstance(value, list | tuple):
        return {k for item in value for k in _keys(item)}
    return set()


def _exchange(text: str, secrets: list[str]) -> dict[str, object]:
    return redact_exchange(
        method="POST",
        url="https://srv/v3/users",
        status=400,
        request_body={"description": f"a {text} b"},
        response_body={"message": f"bad {text}"},
        secrets=secrets,
    )


@given(secret=st.text(min_size=6, max_size=40).filter(lambda s: s.strip() == s and s.strip()))
def test_a_known_secret_never_survives(secret: str) -> None:
    # The summary's own field names ("response", "request", ...) are not data of the exchange: a
    # secret that happens to spell part of one is not a leak, so only the exchange's strings count.
    own_keys = _keys(_exchange("x", []))
    out = _exchange(secret, [secret])
    assert not [s for s in _strings(out, own_keys) if secret in s]

"""The downstream objects: Rancher's names and fields, and how they are read back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from corral.kubeapiauth.objects import (
    ClusterAuthToken,
    ClusterUserAttribute,
    ObjectFormatError,
    cluster_auth_token_body,
    cluster_user_attribute_body,
    crd_manifests,
    debounce_configmap_body,
    debounce_seconds,
    format_rfc3339,
    hash_secret_body,
    parse_rfc3339,
    secret_hash,
)


def test_the_crds_are_namespaced_v3_kinds_of_cluster_cattle_io() -> None:
    crds = {crd["metadata"]["name"]: crd["spec"] for crd in crd_manifests()}
    assert set(crds) == {"clusterauthtokens.cluster.cattle.io", "clusteruserattributes.cluster.cattle.io"}
    for spec in crds.values():
        assert spec["group"] == "cluster.cattle.io"
        assert spec["scope"] == "Namespaced"
        assert [v["name"] for v in spec["versions"]] == ["v3"]
    token_fields = crds["clusterauthtokens.cluster.cattle.io"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(token_fields["properties"]) == {"userName", "enabled", "expiresAt", "lastUsedAt", "hash"}
    attr = crds["clusteruserattributes.cluster.cattle.io"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(attr["properties"]) == {"groups", "enabled", "lastRefresh", "needsRefresh", "extraByProvider"}


def test_a_token_body_keeps_the_legacy_hash_empty_and_reads_back() -> None:
    body = cluster_auth_token_body(name="t1", user_name="u-1", enabled=True, expires_at="")
    assert body["hash"] == ""
    assert body["metadata"] == {"name": "t1", "namespace": "cattle-system"}
    assert ClusterAuthToken.from_json(body) == ClusterAuthToken(name="t1", user_name="u-1", enabled=True)


def test_the_hash_secret_holds_the_hash_under_data_hash() -> None:
    secret = hash_secret_body(name="t1", hashed="$3:1:abc:def")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["hash"]) == b"$3:1:abc:def"
    assert secret_hash(secret) == "$3:1:abc:def"
    assert secret_hash({"data": {}}) is None
    assert secret_hash({"data": {"hash": "%%%"}}) is None


def test_attribute_groups_are_sorted_and_extras_kept() -> None:
    body = cluster_user_attribute_body(
        user_id="u-1", groups=["b", "a"], enabled=True, extra_by_provider={"github": {"login": ["x"]}}
    )
    assert body["groups"] == ["a", "b"]
    read = ClusterUserAttribute.from_json(body)
    assert read.groups == ("a", "b")
    assert read.extra_by_provider == {"github": {"login": ("x",)}}


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {"name": "t"}, "enabled": "yes"},
        {"metadata": {"name": "t"}, "userName": 5},
        {"metadata": {}},
    ],
)
def test_a_token_of_the_wrong_shape_is_refused(obj: dict[str, object]) -> None:
    with pytest.raises(ObjectFormatError):
        ClusterAuthToken.from_json(obj)


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {"name": "u"}, "groups": "g"},
        {"metadata": {"name": "u"}, "groups": [1]},
        {"metadata": {"name": "u"}, "extraByProvider": {"p": {"k": "v"}}},
    ],
)
def test_an_attribute_of_the_wrong_shape_is_refused(obj: dict[str, object]) -> None:
    with pytest.raises(ObjectFormatError):
        ClusterUserAttribute.from_json(obj)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 30), ("+5", 5), ("-1", -1), ("0", 0), ("", -1), ("3.5", -1), (" 4", -1), ("9" * 30, -1)],
)
def test_the_debounce_is_a_decimal_integer_or_off(value: str, seconds: int) -> None:
    configmap = debounce_configmap_body(seconds=0)
    configmap["data"]["value"] = value
    assert debounce_seconds(configmap) == seconds


def test_no_configmap_means_no_debounce() -> None:
    assert debounce_seconds(None) == -1
    assert debounce_seconds({"data": None}) == -1


def test_rfc3339_times_need_a_zone_and_keep_nanoseconds_parseable() -> None:
    assert parse_rfc3339("2026-01-02T03:04:05Z", what="x") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_rfc3339("2026-01-02T03:04:05.123456789+02:00", what="x") == datetime(
        2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))
    )
    for bad in ("2026-01-02T03:04:05", "2026-01-02 03:04:05Z", "2026-13-02T03:04:05Z"):
        with pytest.raises(ObjectFormatError):
            parse_rfc3339(bad, what="x")
    assert format_rfc3339(datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC)) == "2026-01-02T03:04:05Z"

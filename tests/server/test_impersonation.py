"""The five impersonation objects: exact shapes, rule order, and Rancher's DeepEqual drift check."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.auth.identity import UserInfo
from corral.errors import ConfigError
from corral.server.impersonation import (
    cluster_role,
    cluster_role_binding,
    desired_rules,
    is_token_secret_for,
    namespace,
    parse_secret_ref,
    role_drift,
    secret_ref,
    service_account,
    token_secret_template,
)

USER = UserInfo(
    name="u-abcde",
    groups=("system:cattle:authenticated", "github_team://42", "system:authenticated", "github_team://42"),
    extras={
        "principalid": ("local://u-abcde", "github_user://7"),
        "username": ("alice",),
        "requesttokenid": ("token-xyz12",),
        "requesthost": ("rancher.example",),
    },
    token_name="token-xyz12",
)
LABELS = {"authz.cluster.cattle.io/impersonator": "true"}
ROLE_OWNER = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "name": "cattle-impersonation-u-abcde",
    "uid": "role-uid",
}


def test_rules_in_rancher_order() -> None:
    assert desired_rules(USER) == [
        {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": ["u-abcde"]},
        {
            "verbs": ["impersonate"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["userextras/requesttokenid"],
        },
        {
            "verbs": ["impersonate"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["userextras/requesthost"],
        },
        {
            "verbs": ["impersonate"],
            "apiGroups": [""],
            "resources": ["groups"],
            "resourceNames": ["github_team://42", "system:authenticated", "system:cattle:authenticated"],
        },
        {
            "verbs": ["impersonate"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["userextras/principalid"],
            "resourceNames": ["github_user://7", "local://u-abcde"],
        },
        {
            "verbs": ["impersonate"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["userextras/username"],
            "resourceNames": ["alice"],
        },
    ]


def test_a_user_without_groups_or_extras_still_gets_the_authenticated_groups() -> None:
    rules = desired_rules(UserInfo(name="user-xyz12", groups=()))
    assert [r["resources"] for r in rules] == [
        ["users"],
        ["userextras/requesttokenid"],
        ["userextras/requesthost"],
        ["groups"],
    ]
    assert rules[3]["resourceNames"] == ["system:authenticated", "system:cattle:authenticated"]


def test_namespace() -> None:
    assert namespace() == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "cattle-impersonation-system", "labels": LABELS},
    }


def test_cluster_role() -> None:
    assert cluster_role(USER) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "cattle-impersonation-u-abcde", "labels": LABELS},
        "rules": desired_rules(USER),
    }


def test_service_account() -> None:
    assert service_account(USER, cluster_role_uid="role-uid") == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "cattle-impersonation-u-abcde",
            "namespace": "cattle-impersonation-system",
            "labels": LABELS,
            "ownerReferences": [ROLE_OWNER],
        },
    }


def test_token_secret_template() -> None:
    assert token_secret_template(
        service_account_name="cattle-impersonation-u-abcde", service_account_uid="sa"
    ) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "generateName": "cattle-impersonation-u-abcde-token-",
            "namespace": "cattle-impersonation-system",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "name": "cattle-impersonation-u-abcde",
                    "uid": "sa",
                }
            ],
            "annotations": {"kubernetes.io/service-account.name": "cattle-impersonation-u-abcde"},
            "labels": {"cattle.io/service-account.name": "cattle-impersonation-u-abcde"},
        },
        "type": "kubernetes.io/service-account-token",
    }


def test_secret_ref_annotation() -> None:
    ref = secret_ref(namespace="cattle-impersonation-system", name="cattle-impersonation-u-abcde-token-x7k2q")
    assert ref == {
        "rancher.io/service-account.secret-ref": "cattle-impersonation-system/"
        "cattle-impersonation-u-abcde-token-x7k2q"
    }
    assert parse_secret_ref(next(iter(ref.values()))) == (
        "cattle-impersonation-system",
        "cattle-impersonation-u-abcde-token-x7k2q",
    )


@pytest.mark.parametrize("value", ["", "name-only", "a/b/c"])
def test_parse_secret_ref_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="secret-ref"):
        parse_secret_ref(value)


def test_is_token_secret_for() -> None:
    secret = token_secret_template(service_account_name="sa-1", service_account_uid="u")
    assert is_token_secret_for(secret, "sa-1")
    assert not is_token_secret_for(secret, "sa-2")
    assert not is_token_secret_for({**secret, "type": "Opaque"}, "sa-1")
    assert not is_token_secret_for({"type": "kubernetes.io/service-account-token"}, "sa-1")


def test_cluster_role_binding() -> None:
    assert cluster_role_binding(USER, cluster_role_uid="role-uid") == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": "cattle-impersonation-u-abcde",
            "ownerReferences": [ROLE_OWNER],
            "labels": LABELS,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": "cattle-impersonation-u-abcde",
                "namespace": "cattle-impersonation-system",
            }
        ],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cattle-impersonation-u-abcde",
        },
    }


def test_owner_uid_is_required() -> None:
    with pytest.raises(ConfigError, match="uid"):
        service_account(USER, cluster_role_uid="")


# --- drift ---


def test_identical_rules_do_not_drift() -> None:
    assert not role_drift(desired_rules(USER), desired_rules(USER))


def test_unknown_keys_are_ignored_like_go_decoding() -> None:
    actual = [{**rule, "x-extra": 1} for rule in desired_rules(USER)]
    assert not role_drift(actual, desired_rules(USER))


def test_explicit_null_equals_absent() -> None:
    actual = copy.deepcopy(desired_rules(USER))
    actual[1]["resourceNames"] = None
    actual[1]["nonResourceURLs"] = None
    assert not role_drift(actual, desired_rules(USER))


def test_empty_list_differs_from_absent() -> None:
    actual = copy.deepcopy(desired_rules(USER))
    actual[1]["resourceNames"] = []
    assert role_drift(actual, desired_rules(USER))


def test_group_change_order_change_and_missing_rule_drift() -> None:
    desired = desired_rules(USER)
    assert role_drift(desired_rules(UserInfo(name="u-abcde")), desired)
    assert role_drift(list(reversed(desired)), desired)
    assert role_drift(desired[:-1], desired)
    assert role_drift(None, desired)
    assert role_drift([], None)
    assert not role_drift(None, None)


rule_lists = st.lists(st.text(alphabet="abc:/", max_size=4), max_size=3)
rule = st.fixed_dictionaries(
    {"verbs": rule_lists},
    optional={"apiGroups": rule_lists, "resources": rule_lists, "resourceNames": rule_lists | st.none()},
)


@given(rules=st.lists(rule, max_size=4), data=st.data())
def test_drift_is_false_only_for_an_equal_go_value(rules: list[dict[str, Any]], data: st.DataObject) -> None:
    assert not role_drift(rules, copy.deepcopy(rules))
    if rules:
        index = data.draw(st.integers(min_value=0, max_value=len(rules) - 1))
        changed = copy.deepcopy(rules)
        changed[index]["verbs"] = [*changed[index]["verbs"], "impersonate"]
        assert role_drift(changed, rules)

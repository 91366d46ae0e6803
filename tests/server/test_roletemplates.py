"""Built-in RoleTemplates: the data matches Rancher's role_data.go and renders as Rancher stores it."""

from __future__ import annotations

import pytest

from corral.server.roletemplates import BUILTIN, by_name, role_template


def test_the_built_in_names_and_contexts() -> None:
    assert {(s.name, s.context) for s in BUILTIN} == {
        ("cluster-admin", "cluster"),
        ("admin", "project"),
        ("edit", "project"),
        ("view", "project"),
        ("cluster-owner", "cluster"),
        ("cluster-member", "cluster"),
        ("project-owner", "project"),
        ("project-member", "project"),
        ("read-only", "project"),
    }


def test_inherited_templates_exist_and_are_external() -> None:
    names = {s.name for s in BUILTIN}
    for spec in BUILTIN:
        for inherited in spec.role_template_names:
            assert inherited in names
            assert by_name(inherited).external
    assert [by_name(n).role_template_names for n in ("project-owner", "project-member", "read-only")] == [
        ("admin",),
        ("edit",),
        ("view",),
    ]


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("cluster-owner", 11),
        ("cluster-member", 16),
        ("project-owner", 22),
        ("project-member", 24),
        ("read-only", 19),
    ],
)
def test_rule_counts_match_rancher(name: str, count: int) -> None:
    assert len(by_name(name).rules) == count


def test_cluster_owner_rules_open_and_close_as_rancher() -> None:
    rules = role_template(by_name("cluster-owner"))["rules"]
    assert rules[0] == {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
    assert rules[-1] == {"verbs": ["*"], "nonResourceURLs": ["*"]}


def test_read_only_only_reads() -> None:
    for rule in by_name("read-only").rules:
        assert set(rule.verbs) <= {"get", "list", "watch"}, rule


def test_members_get_the_local_cluster_by_name() -> None:
    for name in ("cluster-member", "project-owner", "project-member", "read-only"):
        rendered = role_template(by_name(name))["rules"]
        assert {
            "verbs": ["get"],
            "apiGroups": ["management.cattle.io"],
            "resources": ["clusters"],
            "resourceNames": ["local"],
        } in rendered


def test_project_member_extras_beyond_project_owner() -> None:
    member = role_template(by_name("project-member"))["rules"]
    crud = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
    assert {"verbs": crud, "apiGroups": ["telemetry.istio.io"], "resources": ["telemetries"]} in member
    assert member[-1]["apiGroups"] == ["traefik.io"]
    assert len(member[-1]["resources"]) == 9


def test_rendering_of_project_owner() -> None:
    body = role_template(by_name("project-owner"))
    assert body["metadata"] == {
        "name": "project-owner",
        "labels": {"authz.management.cattle.io/bootstrapping": "default-roletemplate"},
        "annotations": {"authz.management.cattle.io/bootstrapped-role": "true"},
    }
    assert {k: v for k, v in body.items() if k not in ("metadata", "rules")} == {
        "apiVersion": "management.cattle.io/v3",
        "kind": "RoleTemplate",
        "displayName": "Project Owner",
        "description": "",
        "builtin": True,
        "external": False,
        "hidden": False,
        "context": "project",
        "roleTemplateNames": ["admin"],
        "projectCreatorDefault": True,
    }


def test_cluster_owner_is_the_cluster_creator_default_and_administrative() -> None:
    body = role_template(by_name("cluster-owner"))
    assert body["clusterCreatorDefault"] is True
    assert body["administrative"] is True
    assert "clusterCreatorDefault" not in role_template(by_name("cluster-owner"), bootstrapped=False)


def test_kubernetes_defaults_have_no_rules() -> None:
    body = role_template(by_name("view"))
    assert "rules" not in body
    assert (body["external"], body["hidden"]) == (True, True)


def test_unknown_name() -> None:
    with pytest.raises(KeyError, match="read-only"):
        by_name("cluster-read-only")

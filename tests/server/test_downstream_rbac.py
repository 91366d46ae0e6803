"""Downstream RBAC for role-template bindings: Rancher's names, labels and roles.

The name vectors were computed by wrangler's ``SafeConcatName`` and Rancher's ``getBindingHash``
themselves (Go, from their sources), so a drift in the hash input or the cut shows here.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.errors import ConfigError
from corral.server import downstream_rbac as rbac
from corral.server.roletemplates import BUILTIN, by_name, role_template


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ("authz.cluster.cattle.io/crtb-owner", "crtb-abcde"),
            "authz.cluster.cattle.io/crtb-owner-crtb-abcde",
        ),
        (
            ("authz.cluster.cattle.io/crtb-owner", "u-b4qkhsnliz-member-binding-x"),
            "authz.cluster.cattle.io/crtb-owner-u-b4qkhsnliz-member-bi-76bf4",
        ),
        (
            ("authz.cluster.cattle.io/prtb-owner", "prtb-with-a-long-name-of-forty-chars-0123"),
            "authz.cluster.cattle.io/prtb-owner-prtb-with-a-long-name-3976cc",
        ),
        (("cluster-member", "aggregator"), "cluster-member-aggregator"),
    ],
)
def test_safe_concat_name_matches_wrangler(parts: tuple[str, ...], expected: str) -> None:
    assert rbac.safe_concat_name(*parts) == expected
    assert len(rbac.safe_concat_name(*parts)) <= 63


def test_binding_names_match_rancher() -> None:
    user = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u-abcde"}
    group = {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}
    assert rbac.cluster_role_binding_name("cluster-member-aggregator", user) == "crb-ij2l6y6oi4"
    assert rbac.cluster_role_binding_name("cluster-owner-aggregator", group) == "crb-6r6cxv6dwg"
    assert rbac.role_binding_name("team-a", "project-member-aggregator", user) == "rb-rx2ixsxuya"


def crtb(**fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": "crtb-abcde", "namespace": "c-x"}, "clusterName": "c-x", **fields}


def test_crtb_binds_the_aggregator_with_rancher_labels() -> None:
    binding = rbac.cluster_role_binding_for(
        crtb(roleTemplateName="cluster-member", userName="u-abcde"), external=False
    )
    assert binding["metadata"] == {
        "name": "crb-ij2l6y6oi4",
        "labels": {
            "authz.cluster.cattle.io/crtb-owner-crtb-abcde": "true",
            "management.cattle.io/roletemplate-aggregation": "true",
        },
    }
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-member-aggregator",
    }
    assert binding["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u-abcde"}
    ]


def test_external_template_is_bound_directly() -> None:
    binding = rbac.cluster_role_binding_for(
        crtb(roleTemplateName="cluster-admin", groupPrincipalName="local://g"), external=True
    )
    assert binding["roleRef"]["name"] == "cluster-admin"
    # A local group is bound by the name the proxy impersonates it with, and by its principal name,
    # which ACE's identity carries.
    assert binding["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"},
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "local://g"},
    ]
    other = rbac.subject_of(crtb(roleTemplateName="x", groupPrincipalName="github_org://42"))
    assert other["name"] == "github_org://42"
    external = rbac.cluster_role_binding_for(
        crtb(roleTemplateName="x", groupPrincipalName="github_org://42"), external=True
    )
    assert [s["name"] for s in external["subjects"]] == ["github_org://42"]


@pytest.mark.parametrize(
    "fields",
    [
        {"roleTemplateName": "cluster-member"},
        {"roleTemplateName": "cluster-member", "userName": "u-a", "groupName": "g"},
        {"roleTemplateName": "cluster-member", "serviceAccount": "no-colon"},
    ],
)
def test_bad_subjects_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="crtb-abcde"):
        rbac.subject_of(crtb(**fields))


def test_service_account_subject() -> None:
    subject = rbac.subject_of(crtb(roleTemplateName="x", serviceAccount="ns1:robot"))
    assert subject == {"kind": "ServiceAccount", "name": "robot", "namespace": "ns1"}


def test_roles_of_a_cluster_template() -> None:
    roles = rbac.cluster_roles_for(role_template(by_name("cluster-member")))
    assert [r["metadata"]["name"] for r in roles] == ["cluster-member", "cluster-member-aggregator"]
    own, aggregator = roles
    assert own["rules"] == role_template(by_name("cluster-member"))["rules"]
    assert own["metadata"]["labels"]["management.cattle.io/aggregates"] == "cluster-member"
    assert aggregator["aggregationRule"] == {
        "clusterRoleSelectors": [{"matchLabels": {"management.cattle.io/aggregates": "cluster-member"}}]
    }
    assert aggregator["metadata"]["labels"]["authz.cluster.cattle.io/clusterrole-owner"] == "cluster-member"


def test_project_template_inherits_and_promotes() -> None:
    roles = {r["metadata"]["name"]: r for r in rbac.cluster_roles_for(role_template(by_name("read-only")))}
    assert set(roles) == {
        "read-only-promoted",
        "read-only-promoted-aggregator",
        "read-only",
        "read-only-aggregator",
    }
    selectors = roles["read-only-aggregator"]["aggregationRule"]["clusterRoleSelectors"]
    assert selectors == [
        {"matchLabels": {"management.cattle.io/aggregates": "read-only"}},
        {"matchLabels": {"management.cattle.io/aggregates": "view-aggregator"}},
    ]
    promoted = roles["read-only-promoted"]["rules"]
    assert {"verbs": ["get"], "apiGroups": ["management.cattle.io"], "resources": ["clusters"],
            "resourceNames": ["local"]} in promoted  # fmt: skip
    assert all(rule["resources"][0] != "persistentvolumeclaims" for rule in promoted)


def test_external_templates_get_only_an_aggregator() -> None:
    for spec in BUILTIN:
        if spec.external:
            names = [r["metadata"]["name"] for r in rbac.cluster_roles_for(role_template(spec))]
            assert names == [f"{spec.name}-aggregator"]


def test_prtb_role_binding_in_a_project_namespace() -> None:
    prtb = {
        "metadata": {"name": "prtb-x", "namespace": "p-abc"},
        "projectName": "c-x:p-abc",
        "roleTemplateName": "project-member",
        "userName": "u-abcde",
    }
    binding = rbac.role_binding_for(prtb, "team-a", external=False)
    assert binding["metadata"]["name"] == "rb-rx2ixsxuya"
    assert binding["metadata"]["namespace"] == "team-a"
    assert "authz.cluster.cattle.io/prtb-owner-prtb-x" in binding["metadata"]["labels"]
    assert rbac.project_of(prtb) == ("c-x", "p-abc")
    promoted = rbac.promoted_binding_for(prtb)
    assert promoted["roleRef"]["name"] == "project-member-promoted-aggregator"


def test_binding_key_ignores_metadata() -> None:
    a = rbac.cluster_role_binding_for(crtb(roleTemplateName="cluster-member", userName="u-a"), external=False)
    b = {**a, "metadata": {"name": "other"}}
    c = rbac.cluster_role_binding_for(crtb(roleTemplateName="cluster-member", userName="u-b"), external=False)
    assert rbac.binding_key(a) == rbac.binding_key(b)
    assert rbac.binding_key(a) != rbac.binding_key(c)

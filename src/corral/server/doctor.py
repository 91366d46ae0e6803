"""``corral doctor impersonation``: the checks Rancher's troubleshooting docs make by hand, automated.

For one user in one downstream cluster: the ``cattle-impersonation-system`` namespace, the user's
ClusterRole (label, rule order, the user's name, the authenticated groups), ServiceAccount and
ClusterRoleBinding (labels, owner references to the role, subject and roleRef), the token Secret
(the ServiceAccount's reference, type, owner, a token), and what the token may do (impersonate the
user, nothing else). Each problem is one `Finding` naming the object and what is missing or wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.auth.identity import AUTHENTICATED_GROUPS
from corral.errors import ConfigError, NotFoundError
from corral.k8s import KubeClient
from corral.server import impersonation as imp

logger = logging.getLogger(__name__)

__all__ = ["Checklist", "Finding", "Report", "check_impersonation"]

RBAC = "/apis/rbac.authorization.k8s.io/v1"
NS = imp.IMPERSONATION_NAMESPACE


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: ``missing`` (an object or field is absent) or ``wrong`` (not as Rancher makes it)."""

    kind: Literal["missing", "wrong"]
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind.upper()}: {self.subject}: {self.message}"


@dataclass(slots=True)
class Checklist:
    """What was checked (``passed``) and what was found wrong; each doctor's report is one."""

    passed: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def ok(self, what: str) -> None:
        self.passed.append(what)

    def missing(self, subject: str, message: str) -> None:
        self.findings.append(Finding("missing", subject, message))

    def wrong(self, subject: str, message: str) -> None:
        self.findings.append(Finding("wrong", subject, message))

    def lines_under(self, head: str) -> list[str]:
        """``head: verdict``, then a line per check passed and per finding."""
        verdict = "healthy" if self.healthy else f"{len(self.findings)} finding(s)"
        return [f"{head}: {verdict}", *(f"ok: {p}" for p in self.passed), *(str(f) for f in self.findings)]


@dataclass(slots=True, kw_only=True)
class Report(Checklist):
    """The impersonation checks of one user in one cluster."""

    cluster: str
    user: str

    def lines(self) -> list[str]:
        return self.lines_under(f"impersonation account of {self.user} in {self.cluster}")


def _get(client: KubeClient, path: str) -> dict[str, Any] | None:
    try:
        return client.get(path)
    except NotFoundError:
        return None


def _labelled(report: Report, subject: str, obj: Mapping[str, Any]) -> None:
    labels = obj.get("metadata", {}).get("labels") or {}
    if labels.get(imp.IMPERSONATOR_LABEL) != "true":
        report.wrong(subject, f"label {imp.IMPERSONATOR_LABEL}=true is missing")


def _owned_by(report: Report, subject: str, obj: Mapping[str, Any], owner: Mapping[str, Any] | None) -> None:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    if owner is None:
        return
    meta = owner["metadata"]
    wanted = (owner.get("kind"), meta["name"], meta["uid"])
    if not any((r.get("kind"), r.get("name"), r.get("uid")) == wanted for r in refs):
        report.wrong(
            subject,
            f"no ownerReference to {owner.get('kind')} {meta['name']} (uid {meta['uid']}); "
            "Kubernetes' garbage collector will not remove it with the account",
        )


def _check_rules(report: Report, subject: str, rules: Sequence[Mapping[str, Any]], user: str,
                 groups: Sequence[str] | None) -> None:  # fmt: skip
    found_before = len(report.findings)
    auth = "authentication.k8s.io"
    expected_heads = [
        ("", "users"),
        (auth, f"userextras/{imp.EXTRA_REQUEST_TOKEN_ID}"),
        (auth, f"userextras/{imp.EXTRA_REQUEST_HOST}"),
        ("", "groups"),
    ]
    heads = [((r.get("apiGroups") or [""])[0], (r.get("resources") or [""])[0]) for r in rules]
    if heads[:4] != expected_heads:
        report.wrong(
            subject, f"rules are not users, requesttokenid, requesthost, groups (in this order): {heads}"
        )
        return
    if any(r.get("verbs") != ["impersonate"] for r in rules):
        report.wrong(subject, "a rule grants more than the verb impersonate")
    if rules[0].get("resourceNames") != [user]:
        report.wrong(subject, f"rule 1 lets it impersonate {rules[0].get('resourceNames')}, not [{user!r}]")
    if rules[1].get("resourceNames") or rules[2].get("resourceNames"):
        report.wrong(subject, "the requesttokenid and requesthost rules must not restrict resourceNames")
    have = list(rules[3].get("resourceNames") or ())
    lacking = [g for g in AUTHENTICATED_GROUPS if g not in have]
    if lacking:
        report.wrong(subject, f"the groups rule lacks {', '.join(lacking)}")
    if groups is not None:
        wanted = sorted({*AUTHENTICATED_GROUPS, *groups})
        if have != wanted:
            report.wrong(subject, f"the groups rule names {have}, expected {wanted} (the role drifted)")
    tail = heads[4:]
    allowed = [(auth, f"userextras/{imp.EXTRA_PRINCIPAL_ID}"), (auth, f"userextras/{imp.EXTRA_USERNAME}")]
    if any(h not in allowed for h in tail) or tail != sorted(tail, key=allowed.index):
        report.wrong(subject, f"unexpected rules after groups: {tail}")
    if len(report.findings) == found_before:
        report.ok(f"{subject}: {len(rules)} rules in Rancher's order")


def check_impersonation(
    admin: KubeClient, *, cluster: str, user: str, groups: Sequence[str] | None = None
) -> Report:
    """Check the five objects of ``user`` (a user id, ``u-xxxxx``) in the cluster ``admin`` reaches.

    ``groups``, when known, are the user's groups: the role's groups rule must name exactly them.
    """
    if not user or "/" in user:
        raise ConfigError(f"not a user id: {user!r}")
    report = Report(cluster=cluster, user=user)
    name = f"{imp.IMPERSONATION_PREFIX}{user}"
    namespace = _get(admin, f"/api/v1/namespaces/{NS}")
    if namespace is None:
        report.missing(f"Namespace {NS}", "does not exist (no account was ever made in this cluster)")
    else:
        _labelled(report, f"Namespace {NS}", namespace)
        report.ok(f"Namespace {NS} exists")
    role = _get(admin, f"{RBAC}/clusterroles/{name}")
    if role is None:
        report.missing(f"ClusterRole {name}", "does not exist")
    else:
        _labelled(report, f"ClusterRole {name}", role)
        _check_rules(report, f"ClusterRole {name}", role.get("rules") or [], user, groups)
    account = _get(admin, f"/api/v1/namespaces/{NS}/serviceaccounts/{name}")
    if account is None:
        report.missing(f"ServiceAccount {NS}/{name}", "does not exist")
    else:
        _labelled(report, f"ServiceAccount {NS}/{name}", account)
        _owned_by(report, f"ServiceAccount {NS}/{name}", account, role)
        report.ok(f"ServiceAccount {NS}/{name} exists")
    binding = _check_binding(report, admin, name, role)
    token = _check_secret(report, admin, name, account) if account is not None else None
    if token is not None and binding is not None:
        _check_powers(report, admin, name, user)
    return report


def _check_binding(
    report: Report, admin: KubeClient, name: str, role: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    binding = _get(admin, f"{RBAC}/clusterrolebindings/{name}")
    subject = f"ClusterRoleBinding {name}"
    if binding is None:
        report.missing(subject, "does not exist: the account's token can impersonate no one")
        return None
    _labelled(report, subject, binding)
    _owned_by(report, subject, binding, role)
    if binding.get("subjects") != [{"kind": "ServiceAccount", "name": name, "namespace": NS}]:
        report.wrong(subject, f"subjects are {binding.get('subjects')}, not the ServiceAccount {NS}/{name}")
    ref = binding.get("roleRef") or {}
    if (ref.get("kind"), ref.get("name")) != ("ClusterRole", name):
        report.wrong(subject, f"roleRef is {ref.get('kind')} {ref.get('name')}, not ClusterRole {name}")
    report.ok(f"{subject} exists")
    return binding


def _check_powers(report: Report, admin: KubeClient, name: str, user: str) -> None:
    sa_user = f"system:serviceaccount:{NS}:{name}"
    if admin.allows(sa_user, [], "impersonate", "users", name=user):
        report.ok(f"the token may impersonate {user}")
    else:
        report.wrong(f"ServiceAccount {NS}/{name}", f"is not allowed to impersonate {user}")
    if admin.allows(sa_user, [], "impersonate", "users", name="system:admin") or admin.allows(
        sa_user, [], "list", "secrets"
    ):
        report.wrong(f"ServiceAccount {NS}/{name}", "may do more than impersonate its user")


def _check_secret(report: Report, admin: KubeClient, name: str, account: Mapping[str, Any]) -> str | None:
    subject = f"ServiceAccount {NS}/{name}"
    ref = (account["metadata"].get("annotations") or {}).get(imp.SECRET_REF_ANNOTATION)
    if not ref:
        report.missing(subject, f"annotation {imp.SECRET_REF_ANNOTATION} (its token Secret) is absent")
        return None
    try:
        namespace, secret_name = imp.parse_secret_ref(ref)
    except ConfigError as e:
        report.wrong(subject, str(e))
        return None
    secret = _get(admin, f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
    if secret is None:
        report.missing(f"Secret {namespace}/{secret_name}", f"does not exist but {subject} refers to it")
        return None
    subject = f"Secret {namespace}/{secret_name}"
    if not imp.is_token_secret_for(secret, name):
        report.wrong(subject, f"is not a service-account-token Secret of {name}")
    _owned_by(report, subject, secret, account)
    token = (secret.get("data") or {}).get("token")
    if not token:
        report.missing(subject, "has no token: the token controller did not fill it")
        return None
    report.ok(f"{subject} holds the token")
    return str(token)

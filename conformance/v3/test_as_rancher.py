"""The ``rancher`` target's adapter against corral's own server, which speaks the same API.

The reference topology is handed to a second pytest run as a Rancher (`conformance.targets.as_rancher`):
once read-only (nothing may be made: the server's users, tokens, projects and bindings are counted
before and after) and once making users and bindings, with the quick RBAC profile. Every test selected
for the target must pass; every other one must be deselected with its reason printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.targets import Capability, Target
from conformance.targets.as_rancher import rancher_options

SUITES = ("conformance/v3", "conformance/isolation")
COLLECTIONS = (
    "/v3/users",
    "/v3/tokens",
    "/v3/projects",
    "/v3/clusterroletemplatebindings",
    "/v3/projectroletemplatebindings",
)


def _inner(
    root: Path, results: Path, *options: str, suites: tuple[str, ...] = SUITES
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *suites, "--with-clusters", "-p", "no:cacheprovider", "-q",
         f"--corral-results={results}", *options],
        cwd=root, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    outcomes = {t["nodeid"].split("::")[-1]: t for t in json.loads(results.read_text())["tests"]}
    return done, outcomes


def _counts(target: Target) -> dict[str, list[str]]:
    api = target.v3()
    return {path: sorted(str(item["id"]) for item in api.collection(path)) for path in COLLECTIONS}


@pytest.mark.target_needs(Capability.CORRAL, Capability.WRITE)
@pytest.mark.requirement("SRV-027")
def test_the_suites_for_a_rancher_pass_against_corral_s_server(
    target: Target, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    assert target.run_dir is not None
    root = request.config.rootpath
    options = rancher_options(target.run_dir)

    before = _counts(target)
    # Read-only: the isolation suite needs to make worlds, so only the v3 suite has tests to run.
    done, outcomes = _inner(
        root, tmp_path / "read-only.json", *options, "--corral-read-only", suites=SUITES[:1]
    )
    assert _counts(target) == before, "the read-only run made or removed something on the server"
    assert "corral target: rancher" in done.stdout
    assert "deselected: target rancher lacks write" in done.stdout
    for name in (
        "test_collections_have_data_pagination_links_and_actions",
        "test_the_proxy_alias_serves_what_the_cluster_path_serves",
        "test_no_token_or_a_wrong_one_is_refused_with_a_4xx",
        "test_an_unknown_cluster_is_not_found",
    ):
        assert outcomes[name]["outcome"] == "passed", outcomes[name]
    for name in (
        "test_a_disabled_user_s_tokens_are_refused",
        "test_a_cluster_scoped_token_is_refused_for_another_cluster",
    ):
        assert outcomes[name]["outcome"] == "deselected"
        assert outcomes[name]["reason"] == "target rancher lacks write"

    done, outcomes = _inner(root, tmp_path / "write.json", *options, "--corral-rbac-profile=quick")
    assert "deselected: not on target rancher: SRV-027 is corral's own behaviour" in done.stdout
    ran = {name: t for name, t in outcomes.items() if t["outcome"] != "deselected"}
    assert {t["outcome"] for t in ran.values()} == {"passed"}, ran
    assert {"test_a_disabled_user_s_tokens_are_refused", "test_proxy_decisions_are_kubernetes_own"} <= set(
        ran
    )
    assert ran["test_proxy_decisions_are_kubernetes_own"]["facts"]["rbac_decisions"] > 0
    for name, entry in outcomes.items():
        if entry["outcome"] == "deselected":
            assert entry["reason"], f"{name} was deselected without a reason"
    assert _counts(target) == before, "the suites left users, tokens, projects or bindings behind"

"""corral's pytest plugin as another suite sees it: loaded from its entry point, nothing else.

Each test writes a small suite into a fresh folder outside this project (no conftest; an ini
only to quiet pytest-asyncio) and runs pytest on it in-process with pytester.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SUITE = """
import pytest


def test_fast():
    pass


@pytest.mark.cluster
def test_marked_cluster():
    raise AssertionError("a cluster test ran without --with-clusters")


def test_uses_cluster_set(cluster_set):
    raise AssertionError("a test using cluster_set ran without --with-clusters")


def test_smoke_scenario_is_the_default(corral_scenario):
    assert corral_scenario.name == "smoke"
    assert [cluster.name for cluster in corral_scenario.clusters] == ["c-us", "c-au"]


@pytest.mark.local_only
def test_local_only():
    pass
"""

ONE_CLUSTER = """
name: tiny
regions: [eu]
clusters:
  - name: c-eu
    region: eu
    nodes: [{name: c-eu-cp, roles: [controlplane]}]
"""


@pytest.fixture
def outside(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An empty project folder, with none of corral's settings in the environment."""
    for name in ("CORRAL_PROVIDER", "CORRAL_BIN_DIR", "CORRAL_GO_MODULES", "CORRAL_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


@pytest.fixture
def suite(outside: pytest.Pytester) -> pytest.Pytester:
    outside.makepyfile(test_suite=SUITE)
    return outside


def test_the_options_are_in_the_help(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*corral: real Kubernetes control planes:*",
            "*--with-clusters*",
            "*--corral-provider=NAME*",
            "*--corral-scenario=PATH*",
            "*--keep-clusters*",
        ]
    )


def test_the_markers_are_registered(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.cluster: *--with-clusters", "@pytest.mark.local_only: *"])


def test_without_with_clusters_cluster_tests_are_deselected_with_one_line_saying_why(
    suite: pytest.Pytester,
) -> None:
    result = suite.runpytest("--strict-markers")
    result.assert_outcomes(passed=3, deselected=2)
    result.stdout.fnmatch_lines(["2 tests need real clusters: run with --with-clusters"])
    assert "local provider" not in result.stdout.str()


def test_a_cluster_fixture_reached_without_with_clusters_fails_instead_of_building(
    outside: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path / "cache"))
    outside.makepyfile("def test_sneaky(request):\n    request.getfixturevalue('corral_binaries')\n")
    result = outside.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*corral_binaries needs real clusters: run with --with-clusters*"])
    assert not (tmp_path / "cache").exists()


def test_local_only_tests_are_deselected_on_another_provider(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--corral-provider", "kind")
    result.assert_outcomes(passed=2, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "2 tests need real clusters: run with --with-clusters",
            "1 test holds only on the local provider: deselected on provider kind",
        ]
    )


def test_the_provider_may_come_from_the_environment(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_PROVIDER", "kubeconfig")
    result = suite.runpytest("-k", "local_only or fast")
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.fnmatch_lines(["*deselected on provider kubeconfig"])


def test_corral_scenario_loads_the_file_given_by_option(suite: pytest.Pytester) -> None:
    suite.makefile(".yaml", tiny=ONE_CLUSTER)
    suite.makepyfile(
        test_tiny="def test_tiny(corral_scenario):\n"
        "    assert corral_scenario.name == 'tiny'\n"
        "    assert [c.name for c in corral_scenario.clusters] == ['c-eu']\n"
    )
    result = suite.runpytest("--corral-scenario", "tiny.yaml", "test_tiny.py")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--corral-provider", "nope"],
            "unknown provider 'nope'; choose one of: local, kind, kubeconfig",
        ),
        (["--corral-scenario", "missing.yaml"], "--corral-scenario missing.yaml: no such file"),
    ],
)
def test_a_bad_option_is_a_usage_error(suite: pytest.Pytester, args: list[str], message: str) -> None:
    result = suite.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_with_clusters_a_missing_go_is_an_error_of_the_test_never_a_skip(
    outside: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path / "cache"))
    outside.makepyfile("def test_needs_binaries(corral_binaries):\n    pass\n")
    result = outside.runpytest("--with-clusters")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the Go toolchain is not on PATH: install Go 1.26 or newer*"])
    assert "need real clusters" not in result.stdout.str()

"""Linking tests to requirements, as pytest runs a small suite: refusals at collection, deselection by
target with reasons, allure labels and links, JUnit properties, and the results file the report reads."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "token-abcde:" + ("bcdfghjklmnpqrstvwxz2456789" * 2)[:54]

CONFTEST = """
from pathlib import Path

import pytest

from conformance import linking
from conformance.targets import Capability
from corral.report.catalogue import Catalogue


def pytest_configure(config):
    config.addinivalue_line("markers", "requirement(*ids): requirements")
    config.addinivalue_line("markers", "target_needs(*capabilities): capabilities")
    plan = linking.TargetPlan(
        name={name!r},
        capabilities=frozenset(Capability(c) for c in {capabilities!r}),
        rancher_version={version!r},
        is_rancher={is_rancher!r},
        unavailable={unavailable!r},
        target_only={target_only!r},
    )
    catalogue = Catalogue.load({catalogue!r})
    here = Path(__file__).parent
    config.pluginmanager.register(
        linking.Linker(catalogue, plan, here / "results.json", root=here), "linker"
    )


@pytest.fixture
def target():
    return object()
"""

SUITE = f"""
import pytest


@pytest.mark.requirement("PROXY-001", "PROXY-004")
def test_proxy():
    pass


@pytest.mark.requirement("NODE-002")
def test_node_fallback():
    pass


@pytest.mark.requirement("CP-001")
def test_corral_tooling():
    pass


@pytest.mark.requirement("ACE-019")
@pytest.mark.target_needs("ace", "stop-server")
def test_ace_with_the_server_down():
    pass


@pytest.mark.requirement("PROXY-023")
def test_uses_the_target(target):
    pass


@pytest.mark.requirement("TOK-007")
def test_skips():
    pytest.skip("the server has no disable yet")


@pytest.mark.requirement("PROXY-021")
def test_records(record_property):
    record_property("rbac_decisions", 41)
    record_property("rbac_minimal_failing_world", "cluster c-us")


@pytest.mark.requirement("TOK-008")
def test_fails():
    raise AssertionError("refused {TOKEN}")
"""


def suite(pytester: pytest.Pytester, **plan: Any) -> pytest.Pytester:
    settings = {
        "name": "reference",
        "capabilities": ["write", "corral", "stop-server"],
        "version": None,
        "is_rancher": False,
        "unavailable": "",
        "target_only": False,
        "catalogue": str(ROOT / "conformance" / "requirements.yaml"),
    } | plan
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(CONFTEST.format(**settings))
    return pytester


def results(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    document = json.loads((pytester.path / "results.json").read_text())
    return {t["nodeid"].split("::")[-1]: t for t in document["tests"]}


def test_an_unknown_requirement_stops_the_session_at_collection(pytester: pytest.Pytester) -> None:
    suite(pytester).makepyfile(
        test_x="import pytest\n\n@pytest.mark.requirement('PROXY-999')\ndef test_a():\n    pass\n"
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*requirements not in conformance/requirements.yaml:*", "*test_a: PROXY-999*"]
    )


def test_a_test_naming_no_requirement_stops_the_session(pytester: pytest.Pytester) -> None:
    suite(pytester).makepyfile(test_x="def test_unlinked():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*name no requirement*", "*test_x.py::test_unlinked*"])


def test_outcomes_and_reasons_on_the_reference_target(pytester: pytest.Pytester) -> None:
    suite(pytester).makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, skipped=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*1 test deselected: target reference lacks ace*",
            "RBAC decisions checked against Kubernetes' own: 41",
        ]
    )
    found = results(pytester)
    assert found["test_records"]["facts"] == {
        "rbac_decisions": 41,
        "rbac_minimal_failing_world": "cluster c-us",
    }
    assert "facts" not in found["test_proxy"]
    assert found["test_proxy"] == found["test_proxy"] | {
        "outcome": "passed",
        "requirements": ["PROXY-001", "PROXY-004"],
    }
    assert found["test_ace_with_the_server_down"]["outcome"] == "deselected"
    assert found["test_ace_with_the_server_down"]["reason"] == "target reference lacks ace"
    assert found["test_skips"]["outcome"] == "skipped"
    assert found["test_skips"]["reason"] == "the server has no disable yet"
    assert found["test_fails"]["outcome"] == "failed"
    assert found["test_fails"]["reason"] == "AssertionError: refused token-abcde:<redacted>"
    assert TOKEN not in (pytester.path / "results.json").read_text()


def test_on_rancher_2_15_corral_only_and_older_requirements_are_deselected(pytester: pytest.Pytester) -> None:
    suite(pytester, name="rancher", capabilities=["write", "ace"], version="v2.15.0", is_rancher=True)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=7)
    result.stdout.fnmatch_lines(
        [
            "corral target: rancher (Rancher v2.15.0)",
            "*1 test deselected: not on target rancher: CP-001 is corral's own behaviour, not Rancher's*",
            "*1 test deselected: not on target rancher: NODE-002 holds for Rancher <2.12.0, not for v2.15.0*",
            "*4 tests deselected: not on target rancher: the test brings up corral's own clusters instead*",
            "*1 test deselected: target rancher lacks stop-server*",
        ]
    )
    assert results(pytester)["test_node_fallback"]["outcome"] == "deselected"


def test_an_unavailable_target_deselects_what_uses_it(pytester: pytest.Pytester) -> None:
    suite(pytester, name="kind", unavailable="no container engine")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*2 tests deselected: target kind unavailable: no container engine*"])
    assert (
        results(pytester)["test_uses_the_target"]["reason"] == "target kind unavailable: no container engine"
    )


def test_a_run_on_the_target_only_deselects_tests_on_their_own_clusters(pytester: pytest.Pytester) -> None:
    suite(pytester, target_only=True)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=7)
    result.stdout.fnmatch_lines(
        ["*6 tests deselected: --corral-target-only: the test brings up corral's own clusters instead*"]
    )
    assert results(pytester)["test_uses_the_target"]["outcome"] == "passed"


def test_allure_labels_links_and_junit_properties(pytester: pytest.Pytester) -> None:
    suite(pytester).makepyfile(test_suite=SUITE)
    pytester.runpytest(
        "-p", "no:cacheprovider", "--alluredir=allure", "--junitxml=junit.xml", "-k", "test_proxy"
    )
    [result_file] = (pytester.path / "allure").glob("*-result.json")
    allure_result = json.loads(result_file.read_text())
    labels = {(label["name"], label["value"]) for label in allure_result["labels"]}
    assert {
        ("epic", "authentication proxy"),
        ("feature", "routing"),
        ("feature", "downstream identity"),
        ("story", "PROXY-001 prefix stripped"),
        ("story", "PROXY-004 Impersonate-User is the user id"),
        ("requirement", "PROXY-001"),
        ("requirement", "PROXY-004"),
    } <= labels
    links = {(link["name"], link["url"], link["type"]) for link in allure_result["links"]}
    assert ("PROXY-001", "../conformance/index.html#PROXY-001", "tms") in links
    case = ET.parse(pytester.path / "junit.xml").find(".//testcase[@name='test_proxy']")
    assert case is not None
    properties = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    assert properties == [("requirement", "PROXY-001"), ("requirement", "PROXY-004")]


def test_the_linker_is_a_plugin_pytest_can_hash(pytester: pytest.Pytester) -> None:
    """Sibling folders with conftests of their own make pytest build hook subsets, hashing every plugin."""
    suite(pytester)
    pytester.mkpydir("a").joinpath("conftest.py").write_text("")
    pytester.mkpydir("b").joinpath("test_b.py").write_text(
        "import pytest\n\n@pytest.mark.requirement('PROXY-001')\ndef test_b():\n    pass\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_recorded_exchange_is_an_allure_step_with_a_redacted_attachment(pytester: pytest.Pytester) -> None:
    suite(pytester).makepyfile(
        test_x=f"""
import pytest

from conformance.recording import attach_exchange
from conformance.targets import Exchange


@pytest.mark.requirement("TOK-002")
def test_records():
    attach_exchange(
        Exchange(
            method="POST", url="https://srv/v3/tokens?password=pw",
            request_headers={{"Authorization": "Bearer {TOKEN}"}}, request_body={{"ttl": 0}},
            status=201, response_body={{"token": "{TOKEN}"}}, seconds=0.01,
        )
    )
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--alluredir=allure")
    result.assert_outcomes(passed=1)
    [result_file] = (pytester.path / "allure").glob("*-result.json")
    [step] = json.loads(result_file.read_text())["steps"]
    assert step["name"] == "POST https://srv/v3/tokens?password=<redacted> -> 201"
    [attachment] = step["attachments"]
    body = json.loads((pytester.path / "allure" / attachment["source"]).read_text())
    assert body["request"]["headers"]["Authorization"] == "Bearer token-abcde:<redacted>"
    assert body["response"]["body"] == {"token": "token-abcde:<redacted>"}
    secret = TOKEN.split(":")[1]
    assert not [p for p in (pytester.path / "allure").iterdir() if secret in p.read_text()]


def test_every_conformance_test_names_known_requirements() -> None:
    """The real suites collect (links are checked at collection), and every id they cite exists."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "--with-clusters",
            "-p",
            "no:cacheprovider",
            "conformance",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "corral target: reference" in done.stdout

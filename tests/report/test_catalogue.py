"""The requirements catalogue: valid against its schema, its sources real, and the loader's refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from corral.errors import ConfigError
from corral.report.catalogue import PARTS, Catalogue, VersionRange, parse_version
from tests.test_docs import anchors

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "conformance" / "requirements.yaml"
SCHEMA = ROOT / "conformance" / "requirements.schema.json"


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CATALOGUE.read_text())
    return loaded


def test_the_catalogue_is_valid_against_its_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(document(), schema())


def test_the_catalogue_loads_with_every_part_and_unique_ids() -> None:
    catalogue = Catalogue.load(CATALOGUE)
    assert len(catalogue) == len(document()["requirements"])
    assert {r.part for r in catalogue} == set(PARTS)
    assert len({r.id for r in catalogue}) == len(catalogue)
    assert all(r.id.startswith(PARTS[r.part] + "-") for r in catalogue)


def test_every_source_is_a_section_that_exists() -> None:
    for item in Catalogue.load(CATALOGUE):
        page, _, section = item.source.partition("#")
        assert (ROOT / page).is_file(), item.id
        if section:
            assert section in anchors(ROOT / page), f"{item.id}: {item.source}"


def test_the_schema_parts_and_prefixes_match_the_loader() -> None:
    requirement = schema()["$defs"]["requirement"]["properties"]
    assert set(requirement["part"]["enum"]) == set(PARTS)
    prefixes = re.search(r"\^\((.*)\)-", requirement["id"]["pattern"])
    assert prefixes is not None
    assert set(prefixes.group(1).split("|")) == set(PARTS.values())


def test_node_agent_fallback_holds_only_before_2_12() -> None:
    item = Catalogue.load(CATALOGUE)["NODE-002"]
    assert item.holds_for_rancher("2.11.3")
    assert not item.holds_for_rancher("v2.12.0")
    assert item.why_not_for_rancher("2.12.0") == "NODE-002 holds for Rancher <2.12.0, not for 2.12.0"


def test_corral_only_requirements_never_hold_for_rancher() -> None:
    item = Catalogue.load(CATALOGUE)["CP-001"]
    assert item.corral_only
    assert not item.holds_for_rancher(None)
    assert "corral's own behaviour" in item.why_not_for_rancher("2.15.0")


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (">=2.10.0,<2.15.0", ["2.10.0", "2.14.9", "v2.12.1-rc2"], ["2.9.9", "2.15.0"]),
        ("==2.11.0", ["2.11.0"], ["2.11.1"]),
        (">2.6.0,<=2.8.0", ["2.6.1", "2.8.0"], ["2.6.0", "2.8.1"]),
    ],
)
def test_version_ranges(spec: str, inside: list[str], outside: list[str]) -> None:
    versions = VersionRange.parse(spec)
    assert str(versions) == spec
    assert all(v in versions for v in inside)
    assert not any(v in versions for v in outside)


@pytest.mark.parametrize("bad", ["2.11", "latest", ""])
def test_a_bad_version_is_refused_precisely(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a Rancher version"):
        parse_version(bad)


def _with(**changes: Any) -> dict[str, Any]:
    entry = {
        "id": "PROXY-900",
        "part": "authentication proxy",
        "feature": "f",
        "title": "t",
        "level": "MUST",
        "text": "The proxy MUST do it.",
        "source": "docs/rancher.md#tokens",
        "rancher": ">=2.6.0",
    }
    entry.update(changes)
    return {"requirements": [entry]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_with(id="PRX-1"), r"requirements/0/id: 'PRX-1' does not match"),
        (_with(part="ui"), r"requirements/0/part: 'ui' is not one of"),
        (_with(id="TOK-900"), r"id TOK-900 belongs to part 'authentication proxy', whose ids start PROXY-"),
        (_with(level="SHOULD"), r"PROXY-900 is SHOULD but its text says MUST"),
        (_with(rancher="2.6"), r"requirements/0/rancher"),
        (_with(source="rancher.md"), r"requirements/0/source"),
        (_with(owner="me"), r"Additional properties are not allowed \('owner'"),
        ({"requirements": [_with()["requirements"][0]] * 2}, r"id PROXY-900 is used twice"),
    ],
)
def test_the_loader_refuses_a_bad_entry_precisely(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Catalogue.from_document(doc, schema=schema(), source="cat.yaml")


def test_a_missing_catalogue_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the requirements catalogue"):
        Catalogue.load(tmp_path / "requirements.yaml")

"""Citations of the project's documentation in code point at pages and sections that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
CITING = ("src", "tests", "conformance", "fixtures", "sim", "benchmarks", "fuzz", "loadtests", "reports")


def anchor(title: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {
        anchor(line.lstrip("#"))
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def citations() -> list[tuple[str, str, str]]:
    found = []
    for top in CITING:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in {".py", ".yaml", ".md", ".go"} or not path.is_file():
                continue
            for match in CITATION.finditer(path.read_text(encoding="utf-8")):
                found.append((str(path.relative_to(ROOT)), match.group(1), match.group(2) or ""))
    return found


def test_the_code_cites_the_documentation() -> None:
    assert {page for _, page, _ in citations()} >= {"rancher.md", "scenario.md", "architecture.md"}


def test_every_cited_page_and_section_exists() -> None:
    missing = []
    for where, page, section in citations():
        target = ROOT / "docs" / page
        if not target.is_file():
            missing.append(f"{where}: docs/{page}")
        elif section and section not in anchors(target):
            missing.append(f"{where}: docs/{page}#{section}")
    assert missing == []


def test_anchors_follow_the_heading_text() -> None:
    assert anchor(" Health and the Connected condition") == "health-and-the-connected-condition"
    assert anchor("Where corral's tunnel chooses for itself") == "where-corrals-tunnel-chooses-for-itself"

"""The requirements catalogue (``conformance/requirements.yaml``) as typed, validated data.

Tests cite requirement ids, the pytest side turns them into allure labels, and the report lists every
requirement with its outcome; all of them read the catalogue through `Catalogue.load`, which checks
it against its JSON Schema and the rules a schema cannot say (unique ids, an id's prefix matching its
part, the level word in the text). A requirement's Rancher versions are a small range language.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema
import yaml

from corral.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["PARTS", "Catalogue", "Requirement", "VersionRange", "parse_version"]

PARTS: Final[Mapping[str, str]] = {
    "authentication proxy": "PROXY",
    "impersonation accounts": "IMP",
    "tokens": "TOK",
    "server": "SRV",
    "tunnel": "TUN",
    "node-agent fallback": "NODE",
    "health": "HEALTH",
    "ACE": "ACE",
    "kubeconfig": "KCFG",
    "trace": "TRACE",
    "control plane": "CP",
    "load": "LOAD",
}
"""Each part of the architecture and the id prefix of its requirements, in the report's order."""

SCHEMA_FILE: Final = "requirements.schema.json"
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_CLAUSE = re.compile(r"(>=|<=|==|>|<)(\d+\.\d+\.\d+)")

Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    """``"2.11.0"``, ``"v2.11.0"`` or ``"v2.11.0-rc1"`` as a comparable triple; `ConfigError` otherwise."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ConfigError(f"not a Rancher version: {text!r} (expected MAJOR.MINOR.PATCH such as 2.11.0)")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch)


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRange:
    """Comma-separated comparisons that all must hold, such as ``>=2.10.0,<2.15.0``."""

    clauses: tuple[tuple[str, Version], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        clauses = []
        for part in text.split(","):
            match = _CLAUSE.fullmatch(part.strip())
            if not match:
                raise ConfigError(f"bad version range {text!r}: {part.strip()!r} is not like >=2.6.0")
            clauses.append((match.group(1), parse_version(match.group(2))))
        return cls(clauses=tuple(clauses))

    def __contains__(self, version: object) -> bool:
        if isinstance(version, str):
            version = parse_version(version)
        if not isinstance(version, tuple):
            return False
        for op, bound in self.clauses:
            ok = {
                ">=": version >= bound,
                ">": version > bound,
                "<=": version <= bound,
                "<": version < bound,
                "==": version == bound,
            }[op]
            if not ok:
                return False
        return True

    def __str__(self) -> str:
        return ",".join(f"{op}{'.'.join(map(str, bound))}" for op, bound in self.clauses)


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """One entry of the catalogue."""

    id: str
    part: str
    feature: str
    title: str
    level: str  # "MUST" or "SHOULD"
    text: str
    source: str  # docs/<page>.md#<section>
    rancher: VersionRange | None
    """The Rancher versions it holds for; None for corral's own behaviour."""
    notes: str = ""

    @property
    def corral_only(self) -> bool:
        return self.rancher is None

    def holds_for_rancher(self, version: str | None) -> bool:
        """Whether a Rancher of ``version`` must meet it (unknown version: every Rancher requirement)."""
        if self.rancher is None:
            return False
        return version is None or version in self.rancher

    def why_not_for_rancher(self, version: str | None) -> str:
        """The reason a test of this requirement cannot hold on a Rancher of ``version`` ("" if it can)."""
        if self.rancher is None:
            return f"{self.id} is corral's own behaviour, not Rancher's"
        if version is not None and version not in self.rancher:
            return f"{self.id} holds for Rancher {self.rancher}, not for {version}"
        return ""


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every requirement, in the file's order, with lookup by id."""

    requirements: tuple[Requirement, ...]
    source: str = "<catalogue>"

    @classmethod
    def load(cls, path: str | Path, *, schema: str | Path | None = None) -> Catalogue:
        """Read and validate a catalogue; the schema defaults to ``requirements.schema.json`` beside it."""
        path = Path(path)
        schema_path = Path(schema) if schema else path.with_name(SCHEMA_FILE)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            schema_doc = json.loads(schema_path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read the requirements catalogue: {e.filename}: {e.strerror}") from e
        except (yaml.YAMLError, ValueError) as e:
            raise ConfigError(f"{path}: not valid YAML or JSON: {e}") from e
        return cls.from_document(document, schema=schema_doc, source=str(path))

    @classmethod
    def from_document(cls, document: Any, *, schema: Mapping[str, Any], source: str) -> Catalogue:
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(top)"
            raise ConfigError(f"{source}: {where}: {first.message}")
        found: dict[str, Requirement] = {}
        for index, entry in enumerate(document["requirements"]):
            item = _requirement(entry, where=f"{source}: requirements/{index}")
            if item.id in found:
                raise ConfigError(f"{source}: requirements/{index}: id {item.id} is used twice")
            found[item.id] = item
        return cls(tuple(found.values()), source)

    def __iter__(self) -> Iterator[Requirement]:
        return iter(self.requirements)

    def __len__(self) -> int:
        return len(self.requirements)

    def __contains__(self, ident: object) -> bool:
        return any(r.id == ident for r in self.requirements)

    def __getitem__(self, ident: str) -> Requirement:
        for item in self.requirements:
            if item.id == ident:
                return item
        raise KeyError(ident)

    def unknown(self, idents: Iterator[str] | list[str] | tuple[str, ...]) -> list[str]:
        """The ids among ``idents`` that the catalogue does not have, in the order given."""
        known = {r.id for r in self.requirements}
        return [i for i in idents if i not in known]


def _requirement(entry: Mapping[str, Any], *, where: str) -> Requirement:
    ident, part, level, text = entry["id"], entry["part"], entry["level"], entry["text"]
    prefix = ident.rsplit("-", 1)[0]
    if PARTS[part] != prefix:
        raise ConfigError(f"{where}: id {ident} belongs to part {part!r}, whose ids start {PARTS[part]}-")
    other = "SHOULD" if level == "MUST" else "MUST"
    if not re.search(rf"\b{level}\b", text) or re.search(rf"\b{other}\b", text):
        raise ConfigError(f"{where}: {ident} is {level} but its text says {other} (or not {level})")
    rancher = entry["rancher"]
    return Requirement(
        id=ident,
        part=part,
        feature=entry["feature"],
        title=entry["title"],
        level=level,
        text=text,
        source=entry["source"],
        rancher=None if rancher is None else VersionRange.parse(rancher),
        notes=entry.get("notes", ""),
    )

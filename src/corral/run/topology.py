"""``RUN/topology.json``: where a brought-up reference topology is and how to reach it.

Written by ``corral up`` and read by scripts, ``corral doctor`` and the conformance suite. The file
follows ``corral/schemas/topology.schema.json`` (shipped in the package) and is validated against it
when written and when read; paths in it are absolute and secrets live in 0600 files it names.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jsonschema

from corral.errors import ConfigError
from corral.k8s.kubeconfig import write_private

logger = logging.getLogger(__name__)

__all__ = ["TOPOLOGY_FILE", "read_topology", "resolve", "schema", "validate", "write_topology"]

TOPOLOGY_FILE: Final = "topology.json"


@cache
def schema() -> dict[str, Any]:
    """The topology file's JSON Schema, as shipped in the package."""
    text = resources.files("corral.schemas").joinpath("topology.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(document: Any, *, source: str = TOPOLOGY_FILE) -> None:
    """`ConfigError` naming the first place where ``document`` breaks the schema."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top)"
        raise ConfigError(f"{source}: {where}: {first.message}")


def write_topology(run_dir: Path, document: dict[str, Any]) -> Path:
    """Validate and write ``RUN/topology.json`` (0600: it names secret files, other users need not)."""
    validate(document)
    return write_private(run_dir / TOPOLOGY_FILE, (json.dumps(document, indent=2) + "\n").encode())


def read_topology(run_dir: Path) -> dict[str, Any]:
    path = run_dir / TOPOLOGY_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the topology (did `corral up` run there?): {e.strerror}"
        ) from e
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from e
    validate(document, source=str(path))
    return dict(document)


def resolve(topology: dict[str, Any], *, cluster: str, user: str) -> tuple[Path, str]:
    """A cluster's admin kubeconfig and a user's id, each named as in the scenario or by id."""
    clusters = topology["clusters"]
    entry = clusters.get(cluster) or next((c for c in clusters.values() if c["id"] == cluster), None)
    if entry is None:
        raise ConfigError(f"no cluster {cluster!r} in the topology (known: {', '.join(clusters) or 'none'})")
    users = topology["users"]
    found = users.get(user) or next((u for u in users.values() if user in (u["id"], u["username"])), None)
    return Path(entry["admin_kubeconfig"]), str(found["id"]) if found else user

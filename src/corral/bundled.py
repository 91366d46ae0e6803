"""Files that ship with corral: the example scenarios, found the same way from a wheel or a checkout.

A wheel carries the checkout's ``fixtures/scenarios/`` as package data (``corral/scenarios/``); an
editable install runs from ``src/corral`` of a checkout, where they stay in ``fixtures/scenarios/``
at a fixed place beside ``src/``. Nothing searches parent folders or the working directory.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from corral.errors import ConfigError

logger = logging.getLogger(__name__)

#: The scenario the pytest plugin and the README's main job use by default.
SMOKE = "smoke"


def scenarios_dir() -> Path:
    """The folder of corral's bundled scenario files."""
    packaged = resources.files("corral") / "scenarios"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    package_dir = Path(__file__).resolve().parent
    if package_dir.parent.name == "src":  # an editable install runs from a checkout's src/ layout
        checkout = package_dir.parent.parent / "fixtures" / "scenarios"
        if checkout.is_dir():
            return checkout
    raise ConfigError(
        f"corral's bundled scenarios are missing: neither {packaged} (installed package) nor "
        "fixtures/scenarios beside src/ (checkout) exists; reinstall corral"
    )


def scenario_path(name: str = SMOKE) -> Path:
    """The file of the bundled scenario ``name`` (``smoke``, ``alice-au``, ...)."""
    folder = scenarios_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ConfigError(f"no bundled scenario named {name!r} (known: {known})")
    return path

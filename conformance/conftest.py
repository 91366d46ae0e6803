"""Every test under conformance/ runs against real clusters: mark it `cluster` (see corral.pytest_plugin).

Tests that use the plugin's cluster fixtures are marked anyway; this also covers any that reach
clusters another way, so none of them runs without ``--with-clusters``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)

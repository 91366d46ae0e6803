"""corral.auth's public surface: everything in __all__ resolves, and nothing else is exported by accident."""

from __future__ import annotations

import corral.auth
from tests._public_api import NO_PROBLEMS, all_problems


def test_the_package_exports_exactly_what_its_all_lists() -> None:
    assert all_problems(corral.auth) == NO_PROBLEMS

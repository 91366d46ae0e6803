"""Fixtures of the provider tests: one real slapd for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.providers.slapd import Slapd, running_slapd


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server

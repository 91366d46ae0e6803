"""corral.auth's public surface: everything in __all__ resolves, and nothing else is exported by accident."""

from __future__ import annotations

import corral.auth


def test_all_names_resolve() -> None:
    for name in corral.auth.__all__:
        assert getattr(corral.auth, name) is not None


def test_public_names() -> None:
    public = {n for n in vars(corral.auth) if not n.startswith("_")}
    submodules = {"hashers", "identity", "passwords", "tokens"}
    assert public - submodules - {"annotations"} == set(corral.auth.__all__)

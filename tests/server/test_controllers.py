"""The identity the cluster controllers ensure impersonation accounts for, from User and UserAttribute."""

from __future__ import annotations

from corral.auth.identity import AUTHENTICATED_GROUPS
from corral.server.controllers import user_info_from


def test_user_info_strips_local_groups_and_merges_extras() -> None:
    user = {"metadata": {"name": "u-x"}, "displayName": "X", "principalIds": ["local://u-x"]}
    attributes = {
        "GroupPrincipals": {"local": {"items": [{"metadata": {"name": "local://devs"}}]}, "github": None},
        "ExtraByProvider": {"local": {"principalid": ["local://u-x"], "username": ["x"]}},
    }
    info = user_info_from(user, attributes)
    assert info.groups == (*AUTHENTICATED_GROUPS, "devs")
    assert info.extras == {"username": ("x",), "principalid": ("local://u-x",)}
    system = user_info_from(user, None)
    assert system.extras == {"username": ("X",), "principalid": ("local://u-x",)}

"""RUN/topology.json: the shipped schema accepts a complete document and locates what is wrong."""

from __future__ import annotations

import copy
import stat
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ConfigError
from corral.run.topology import read_topology, resolve, schema, write_topology

DOCUMENT: dict[str, Any] = {
    "server": {
        "url": "https://127.0.0.1:8443",
        "ca_file": "/run/server/ca.crt",
        "admin": {
            "id": "user-abcde",
            "username": "admin",
            "password_file": "/run/a.pw",
            "token_file": "/run/a.tk",
        },
    },
    "clusters": {
        "c-us": {
            "id": "c-x1y2z",
            "api_server": "https://127.0.0.1:6443",
            "admin_kubeconfig": "/run/kube_config_c-us.yml",
        }
    },
    "users": {
        "alice": {
            "id": "u-q1w2e",
            "username": "alice",
            "password_file": "/run/al.pw",
            "kubeconfig": "/run/al",
        }
    },
    "processes": [{"role": "server", "cluster": None, "node": None, "pid": 42}],
}


def test_the_schema_is_the_contract_s() -> None:
    assert schema()["required"] == ["server", "clusters", "users", "processes"]


def test_a_document_round_trips_with_owner_only_permissions(tmp_path: Path) -> None:
    path = write_topology(tmp_path, DOCUMENT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_topology(tmp_path) == DOCUMENT
    assert resolve(DOCUMENT, cluster="c-x1y2z", user="alice") == (
        Path("/run/kube_config_c-us.yml"),
        "u-q1w2e",
    )
    assert resolve(DOCUMENT, cluster="c-us", user="u-q1w2e")[1] == "u-q1w2e"
    with pytest.raises(ConfigError, match="no cluster 'c-eu'"):
        resolve(DOCUMENT, cluster="c-eu", user="alice")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("server", "admin", "token_file"), None, r"server\.admin: 'token_file' is a required property"),
        (("clusters", "c-us", "id"), 7, r"clusters\.c-us\.id: 7 is not of type 'string'"),
        (("processes",), [{"role": "server"}], r"processes\.0: 'pid' is a required property"),
    ],
)
def test_a_broken_document_is_refused_where_it_breaks(
    tmp_path: Path, path: tuple[str, ...], value: Any, message: str
) -> None:
    document = copy.deepcopy(DOCUMENT)
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        write_topology(tmp_path, document)
    assert not (tmp_path / "topology.json").exists()

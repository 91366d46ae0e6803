"""The image recipe's inputs: the Debian release and mirror read from this machine's apt files."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.controlplane import images
from corral.errors import ControlPlaneError

DEB822 = """Types: deb
# a comment line
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def _etc(tmp_path: Path, *, sources: str = "", lists: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir()
    if sources:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    if lists:
        (tmp_path / "sources.list").write_text(lists)
    return tmp_path


def test_the_mirror_comes_from_a_deb822_file(tmp_path: Path) -> None:
    assert (
        images.apt_mirror("bookworm", etc_apt=_etc(tmp_path, sources=DEB822))
        == "http://mirror.example/debian"
    )


def test_the_mirror_comes_from_a_one_line_list_with_options(tmp_path: Path) -> None:
    lists = (
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64] http://list.example/debian/ bookworm main\n"
    )
    assert images.apt_mirror("bookworm", etc_apt=_etc(tmp_path, lists=lists)) == "http://list.example/debian"


def test_a_release_without_a_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneError, match="no apt source for Debian 'trixie'"):
        images.apt_mirror("trixie", etc_apt=_etc(tmp_path, sources=DEB822))


def test_the_release_comes_from_os_release(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n')
    assert images.debian_release(path) == "bookworm"
    path.write_text('NAME="Something"\n')
    with pytest.raises(ControlPlaneError, match="VERSION_CODENAME"):
        images.debian_release(path)


def test_image_names_are_local_and_carry_a_tag() -> None:
    for reference in (images.PAUSE_IMAGE, images.CORRAL_IMAGE):
        assert reference.startswith("corral.local/")
        assert ":" in reference.rsplit("/", 1)[1]

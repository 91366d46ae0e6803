"""The ledger of host objects: written before each object is made, read back exactly, and cleanup
removes only what it lists (here with the system calls replaced by recorders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.controlplane import hostnet
from corral.errors import ControlPlaneError


@pytest.fixture(autouse=True)
def private_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ledger copies of these tests go to a folder of their own, never the machine's."""
    mirror = tmp_path / "mirror"
    monkeypatch.setattr(hostnet, "MIRROR_DIR", mirror)
    return mirror


def test_an_empty_run_folder_has_an_empty_ledger_and_cleanup_does_nothing(tmp_path: Path) -> None:
    assert hostnet.Ledger.load(tmp_path).is_empty()
    assert hostnet.cleanup(tmp_path) == []


def test_the_ledger_round_trips_and_a_corrupt_one_is_an_error(tmp_path: Path) -> None:
    ledger = hostnet.Ledger(netns=["a"], links=["b"], cgroups=["/c"], mount_roots=["/m"], folders=["/f"])
    ledger.save(tmp_path)
    assert hostnet.Ledger.load(tmp_path) == ledger
    (tmp_path / hostnet.LEDGER_FILE).write_text("{not json")
    with pytest.raises(ControlPlaneError, match="cannot read"):
        hostnet.Ledger.load(tmp_path)


def test_an_object_is_recorded_before_it_is_made_so_a_failure_still_leaves_it_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []

    def failing_ip(*args: str, **_: object) -> str:
        calls.append(args)
        raise ControlPlaneError("ip failed")

    monkeypatch.setattr(hostnet, "ip", failing_ip)
    state = hostnet.HostState(tmp_path)
    with pytest.raises(ControlPlaneError):
        state.add_netns("corral-x-0")
    with pytest.raises(ControlPlaneError):
        state.add_veth("crlx00", peer="uplink", netns="corral-x-0")
    assert calls == [
        ("netns", "add", "corral-x-0"),
        ("link", "add", "crlx00", "type", "veth", "peer", "name", "uplink", "netns", "corral-x-0"),
    ]
    ledger = hostnet.Ledger.load(tmp_path)
    assert ledger.netns == ["corral-x-0"]
    assert ledger.links == ["crlx00"]


def test_cleanup_removes_what_the_ledger_lists_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "short"
    (folder / "sub").mkdir(parents=True)
    hostnet.Ledger(
        netns=["corral-x-0"],
        links=["crlx00"],
        cgroups=["/corral-x"],
        mount_roots=[str(tmp_path)],
        folders=[str(folder)],
    ).save(tmp_path)
    killed: list[str] = []
    removed_cgroups: list[str] = []
    ip_calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(hostnet, "kill_cgroup", lambda top, **_: killed.append(top) or 0)
    monkeypatch.setattr(hostnet, "remove_cgroup_tree", removed_cgroups.append)
    monkeypatch.setattr(hostnet, "mounts_below", lambda _root: [])
    monkeypatch.setattr(hostnet, "ip", lambda *args, **_: ip_calls.append(args) or "")
    real_exists = Path.exists

    def exists(path: Path) -> bool:
        if str(path) in {"/run/netns/corral-x-0", "/sys/class/net/crlx00"}:
            return True
        return real_exists(path)

    monkeypatch.setattr(Path, "exists", exists)
    done = hostnet.cleanup(tmp_path, log_links=tmp_path / "no-links")
    assert killed == ["/corral-x"]
    assert removed_cgroups == ["/corral-x"]
    assert ip_calls == [("netns", "del", "corral-x-0"), ("link", "del", "crlx00")]
    assert not folder.exists()
    assert f"folder {folder}" in done
    assert not (tmp_path / hostnet.LEDGER_FILE).exists()


def test_only_log_links_into_the_run_are_removed(tmp_path: Path) -> None:
    links, run, other = tmp_path / "links", tmp_path / "run", tmp_path / "other"
    for folder in (links, run, other):
        folder.mkdir()
    os.symlink(run / "pod.log", links / "ours.log")
    os.symlink(other / "pod.log", links / "theirs.log")
    os.symlink(tmp_path / "run-2" / "pod.log", links / "prefix-only.log")
    removed = hostnet.remove_links_into(links, run)
    assert removed == [links / "ours.log"]
    assert sorted(p.name for p in links.iterdir()) == ["prefix-only.log", "theirs.log"]


def test_host_routes_reads_destinations_and_skips_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    table = (
        "default via 192.0.2.1 dev eth0\n"
        "10.200.0.0/16 via 10.200.255.2 dev crl1 \n"
        "local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1\n"
        "broadcast 10.1.2.255 dev eth0 table local\n"
    )
    monkeypatch.setattr(hostnet, "ip", lambda *args, **_: table)
    assert hostnet.host_routes() == ["10.200.0.0/16", "127.0.0.0/8", "10.1.2.255"]


def test_a_ledger_is_mirrored_and_an_orphan_is_swept_once_its_run_folder_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_mirror: Path
) -> None:
    live, gone = tmp_path / "live", tmp_path / "gone"
    live.mkdir()
    gone.mkdir()
    hostnet.Ledger(netns=["ns-live"]).save(live)
    hostnet.Ledger(netns=["ns-gone"]).save(gone)
    assert len(list(private_mirror.glob("*.json"))) == 2
    (gone / hostnet.LEDGER_FILE).unlink()
    gone.rmdir()
    removed: list[list[str]] = []
    monkeypatch.setattr(hostnet, "_remove", lambda ledger, **_: removed.append(ledger.netns) or ["x"])
    assert hostnet.sweep_orphans() == ["x"]
    assert removed == [["ns-gone"]]  # the live run is left alone
    assert [p.name for p in private_mirror.glob("*.json")] == [hostnet.mirror_path(live).name]

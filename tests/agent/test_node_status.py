"""What a node agent reports for a virtual node, as a kubelet would: capacity, allocatable, node info."""

from __future__ import annotations

from pathlib import Path

from corral.agent.node import MAX_PODS, host_node_status


def test_the_hosts_memory_os_and_ids_become_the_nodes_status(tmp_path: Path) -> None:
    proc, etc = tmp_path / "proc", tmp_path / "etc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    etc.mkdir()
    (proc / "meminfo").write_text("MemTotal:       2048000 kB\nMemFree:  10 kB\n")
    (proc / "sys/kernel/random/boot_id").write_text("boot-1\n")
    (etc / "machine-id").write_text("machine-1\n")
    (etc / "os-release").write_text('NAME="X"\nPRETTY_NAME="Example Linux 1"\n')
    status = host_node_status(kubelet_version="v1.31.2", proc=proc, etc=etc)
    assert status["capacity"]["memory"] == "2048000Ki"
    assert status["capacity"]["pods"] == MAX_PODS
    assert int(status["capacity"]["cpu"]) >= 1
    assert status["allocatable"] == status["capacity"]
    info = status["nodeInfo"]
    assert info["kubeletVersion"] == "v1.31.2"
    assert info["osImage"] == "Example Linux 1"
    assert (info["machineID"], info["bootID"], info["operatingSystem"]) == ("machine-1", "boot-1", "linux")


def test_a_host_without_those_files_still_gives_a_status(tmp_path: Path) -> None:
    status = host_node_status(kubelet_version="v1", proc=tmp_path, etc=tmp_path)
    assert status["capacity"]["memory"] == "0Ki"
    assert status["nodeInfo"]["osImage"] == "Linux"

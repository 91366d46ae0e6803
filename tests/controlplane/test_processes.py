"""Process records: a later run reaps what an earlier one left, and never a stranger's process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.controlplane.processes import (
    ProcessGroup,
    ProcessRecord,
    free_port,
    inotify_hint,
    is_same_process,
    read_state,
    reap_stale,
    start_ticks,
    write_state,
)
from corral.errors import ControlPlaneError

SLEEP = shutil.which("sleep") or "/bin/sleep"
SH = shutil.which("sh") or "/bin/sh"


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process this test did not start through corral; it must survive every reap."""
    proc = subprocess.Popen([SLEEP, "60"])
    yield proc
    proc.kill()
    proc.wait()


def wait_gone(pid: int, ticks: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if start_ticks(pid) != ticks:
            return True
        time.sleep(0.02)
    return False


def test_a_new_group_reaps_the_sleep_a_crashed_run_left_in_the_same_folder(tmp_path: Path) -> None:
    crashed = ProcessGroup(tmp_path, detached=True)  # detached: nothing stops it but the reaper
    proc = crashed.start("sleeper", [SLEEP, "60"])
    record = read_state(tmp_path)[0]
    assert (record.pid, record.name) == (proc.pid, "sleeper")
    assert is_same_process(record)

    reaped = reap_stale(tmp_path)
    proc.wait(timeout=5)
    assert [r.pid for r in reaped] == [proc.pid]
    assert not is_same_process(record)
    assert read_state(tmp_path) == []


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    ticks = start_ticks(bystander.pid)
    assert ticks is not None
    reused = ProcessRecord(
        name="old", pid=bystander.pid, start_ticks=ticks - 1, executable=SLEEP, log="/dev/null"
    )
    write_state(tmp_path, [reused])
    assert reap_stale(tmp_path) == []
    assert bystander.poll() is None


def test_stop_ends_the_whole_process_group_including_grandchildren(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    group.start("shell", [SH, "-c", f"{SLEEP} 60 & echo $! > child.pid; wait"])
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 5
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(pid_file.read_text())
    ticks = start_ticks(grandchild)
    assert ticks is not None
    group.stop(timeout_seconds=5)
    assert wait_gone(grandchild, ticks)
    assert read_state(tmp_path) == []


def test_a_process_that_exits_early_is_reported_with_the_tail_of_its_log(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    proc = group.start("failing", [SH, "-c", "echo 'flag provided but not defined: -nope'; exit 3"])
    proc.wait(timeout=5)
    with pytest.raises(ControlPlaneError) as error:
        group.check_alive("failing")
    group.stop()
    assert "failing exited with status 3" in str(error.value)
    assert "flag provided but not defined: -nope" in str(error.value)


def test_a_process_out_of_inotify_instances_is_reported_with_the_kernel_limit(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    line = 'E1129 "Failed to start cAdvisor" err="inotify_init: too many open files"'
    proc = group.start("kubelet-x", [SH, "-c", f"echo '{line}'; exit 1"])
    proc.wait(timeout=5)
    with pytest.raises(ControlPlaneError) as error:
        group.check_alive("kubelet-x")
    group.stop()
    assert "fs.inotify.max_user_instances is " in str(error.value)


def test_only_an_inotify_failure_gets_the_inotify_hint() -> None:
    assert inotify_hint("open /etc/x: too many open files") == ""
    assert inotify_hint("inotify watcher started") == ""
    assert "max_user_instances" in inotify_hint("error creating fsnotify watcher: too many open files")


def test_starting_a_missing_binary_is_a_control_plane_error_naming_it(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    with pytest.raises(ControlPlaneError, match="no-such-binary"):
        group.start("ghost", [str(tmp_path / "no-such-binary")])
    group.stop()


def test_free_port_returns_a_port_that_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


def test_free_port_never_hands_out_a_port_twice_and_stays_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < low for port in ports)


def test_start_ticks_of_this_process_is_stable_and_absent_for_a_dead_pid() -> None:
    assert start_ticks(os.getpid()) == start_ticks(os.getpid())
    proc = subprocess.Popen([SLEEP, "0"])
    proc.wait()
    assert start_ticks(proc.pid) is None


def kernel_start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, read directly (the command name may hold spaces and parentheses)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[19])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_start_ticks_are_the_kernels_own_start_time_of_the_pid(
    bystander: subprocess.Popen[bytes],
) -> None:
    assert start_ticks(bystander.pid) == kernel_start_ticks(bystander.pid)
    assert start_ticks(os.getpid()) == kernel_start_ticks(os.getpid())


def test_an_exited_child_not_yet_collected_counts_as_gone() -> None:
    proc = subprocess.Popen([SH, "-c", "cat >/dev/null"], stdin=subprocess.PIPE)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    record = ProcessRecord(name="z", pid=proc.pid, start_ticks=ticks, executable=SH, log="/dev/null")
    assert is_same_process(record)
    assert proc.stdin is not None
    proc.stdin.close()  # cat sees end of input and the shell exits; nobody collects it yet
    deadline = time.monotonic() + 5
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    assert start_ticks(proc.pid) is None
    assert not is_same_process(record)
    assert proc.wait(timeout=5) == 0


PARENT = """
import sys, time
from pathlib import Path
from corral.controlplane.processes import ProcessGroup
ProcessGroup(Path(sys.argv[1])).start("sleeper", [sys.argv[2], "60"])
print("started", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_an_attached_group_dies_with_its_interpreter_however_it_ends(
    tmp_path: Path, how: signal.Signals
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), SLEEP], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "started"
    record = read_state(tmp_path)[0]
    assert is_same_process(record)
    parent.send_signal(how)
    parent.wait(timeout=10)
    parent.stdout.close()
    assert wait_gone(record.pid, record.start_ticks)

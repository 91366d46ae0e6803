"""Child processes of a run folder: start, record, stop, and reap what a crashed run left behind.

Every component runs in its own process group (``start_new_session``) with one log file in the
run folder. Each start is recorded at once in ``processes.json`` with the pid, the kernel's start
time of that pid and the executable, so a later `reap_stale` on the same folder kills exactly the
processes of the earlier run and never an unrelated process that reused a pid. Attached groups
(tests) are also stopped at interpreter exit and die with their parent (``PR_SET_PDEATHSIG``);
detached ones (``corral cluster up``) outlive the command until ``corral cluster down``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from corral.errors import ControlPlaneError

logger = logging.getLogger(__name__)

STATE_FILE = "processes.json"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessRecord:
    """What identifies one started process across interpreter lifetimes."""

    name: str
    pid: int
    start_ticks: int
    executable: str
    log: str
    role: str = ""
    """Processes of one role stop together; roles stop in reverse order of their first start."""
    node: str = ""
    """The real node a kubelet or containerd serves (empty for control-plane processes)."""


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks since boot; None when it is gone or a zombie.

    psutil reports the start time in seconds since the epoch: the kernel's ticks since boot plus the
    boot time, which moves when the wall clock is stepped. Subtracting a boot time read on both
    sides of the start time gives back the kernel's ticks, which no clock change alters.
    """
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            for _ in range(3):
                booted = psutil.boot_time()
                created = proc.create_time()
                if psutil.boot_time() == booted:
                    break
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return round((created - booted) * _CLOCK_TICKS)


def is_same_process(record: ProcessRecord) -> bool:
    """True while the recorded process (same pid, same start time) is alive."""
    return start_ticks(record.pid) == record.start_ticks


_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_LISTEN_PORT = 10000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
_port_random = random.Random()  # noqa: S311 -- spreads ports, guards nothing


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out before.

    The port is chosen below the kernel's ephemeral range where that range is known (Linux), so the
    outgoing connections of the processes already started (an apiserver's to etcd, say) cannot take it
    between this check and the listener's bind. Elsewhere the kernel picks.
    """
    ephemeral_low = _ephemeral_low()
    with _handed_out_lock:
        if ephemeral_low is not None and ephemeral_low - _LOWEST_LISTEN_PORT > 1000:
            for _ in range(200):
                port = _port_random.randrange(_LOWEST_LISTEN_PORT, ephemeral_low)
                if port not in _handed_out and _bindable(port):
                    _handed_out.add(port)
                    return port
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _ephemeral_low() -> int | None:
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 16384))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


def inotify_hint(log_tail: str) -> str:
    """Why a Go process could not watch files, when its log says so ("" otherwise).

    kubelets and kube-apiservers hold several inotify instances each; many topologies on one
    machine use up the kernel's per-user limit (often 128), and the process exits with "too many
    open files" while the file-descriptor limit is far from reached.
    """
    if "inotify" not in log_tail and "fsnotify" not in log_tail:
        return ""
    if "too many open files" not in log_tail:
        return ""
    try:
        limit = INOTIFY_INSTANCES.read_text(encoding="ascii").strip()
    except OSError:
        limit = "unknown"
    return (
        f"\n(the kernel's inotify instances per user are used up: fs.inotify.max_user_instances is {limit};"
        " stop other topologies or raise it, e.g. `sysctl -w fs.inotify.max_user_instances=512`)"
    )


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessGroup:
    """The processes of one run folder, recorded in its state file."""

    def __init__(self, run_dir: Path, *, detached: bool = False) -> None:
        self.run_dir = run_dir
        self.detached = detached
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._records: list[ProcessRecord] = []
        self._lock = threading.Lock()
        self._die_with_parent = not detached
        if not detached:
            _ATTACHED.add(self)

    @property
    def records(self) -> tuple[ProcessRecord, ...]:
        return tuple(self._records)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        role: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        node: str = "",
    ) -> subprocess.Popen[bytes]:
        """Start one component with its output in ``<run_dir>/logs/<name>.log`` and record it."""
        if name in self._procs:
            raise ControlPlaneError(f"a process named {name!r} already runs in {self.run_dir}")
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else dict(os.environ),
                    cwd=cwd or self.run_dir,
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal if self._die_with_parent else None,  # noqa: PLW1509
                )
            except OSError as e:
                raise ControlPlaneError(f"cannot start {name} ({argv[0]!r}): {e}") from e
        ticks = start_ticks(proc.pid)
        record = ProcessRecord(
            name=name,
            pid=proc.pid,
            start_ticks=ticks or -1,
            executable=str(argv[0]),
            log=str(log_path),
            role=role or name,
            node=node,
        )
        with self._lock:
            self._procs[name] = proc
            self._records.append(record)
            if self.detached:
                # Keep the Popen alive with the interpreter: a collected Popen of a running child
                # warns, and a detached child is meant to keep running.
                _DETACHED_PROCS.append(proc)
            write_state(self.run_dir, self._records)
        logger.info("started %s (pid %d), log %s", name, proc.pid, log_path)
        return proc

    @classmethod
    def resume(cls, run_dir: Path, *, detached: bool = True) -> ProcessGroup:
        """A group that carries on the records of ``run_dir``'s state file (another interpreter's run).

        It never stops anything on its own at exit; with ``detached=False`` what it starts still
        dies with this interpreter, as in the group that started the run.
        """
        group = cls(run_dir, detached=True)
        group._die_with_parent = not detached
        group._records = read_state(run_dir)
        return group

    def forget(self, names: Sequence[str]) -> None:
        """Drop the records of processes that are gone (a stopped node), so their names can start again."""
        with self._lock:
            self._records = [r for r in self._records if r.name not in names]
            for name in names:
                self._procs.pop(name, None)
            write_state(self.run_dir, self._records)

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def check_alive(self, name: str) -> None:
        """Raise `ControlPlaneError` with the log tail when the named process has exited."""
        proc = self._procs.get(name)
        if proc is None:
            raise ControlPlaneError(f"no process named {name!r} was started by this group")
        code = proc.poll()
        if code is not None:
            last = tail(self.log_path(name))
            raise ControlPlaneError(
                f"{name} exited with status {code}; last lines of {self.log_path(name)}:\n"
                + last
                + inotify_hint(last)
            )

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        """Stop every process, newest first: SIGTERM to its group, a bounded wait, then SIGKILL."""
        with self._lock:
            records = list(reversed(self._records))
            procs = dict(self._procs)
            self._records.clear()
            self._procs.clear()
        stop_records(records, timeout_seconds=timeout_seconds)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            with contextlib.suppress(ValueError):
                _DETACHED_PROCS.remove(proc)
        clear_state(self.run_dir)
        _ATTACHED.discard(self)


# -- state file and reaping ----------------------------------------------------------------------


def write_state(
    run_dir: Path, records: Sequence[ProcessRecord], extra: Mapping[str, Any] | None = None
) -> None:
    path = run_dir / STATE_FILE
    current = read_state_document(run_dir)
    document = {**current, **(extra or {}), "processes": [asdict(r) for r in records]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.replace(path)


def read_state_document(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning("ignoring unreadable state file %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def read_state(run_dir: Path) -> list[ProcessRecord]:
    records = []
    for item in read_state_document(run_dir).get("processes", []):
        try:
            records.append(ProcessRecord(**item))
        except TypeError:
            logger.warning("ignoring a malformed process record in %s: %r", run_dir / STATE_FILE, item)
    return records


def clear_state(run_dir: Path) -> None:
    path = run_dir / STATE_FILE
    if path.exists():
        with contextlib.suppress(OSError):  # the folder may be gone already (a test's tmp_path)
            write_state(run_dir, [])


def reap_stale(run_dir: Path, *, timeout_seconds: float = 10.0) -> list[ProcessRecord]:
    """Stop the still-running processes a previous run recorded in ``run_dir``; return them."""
    alive = [record for record in read_state(run_dir) if is_same_process(record)]
    if alive:
        logger.info("reaping %d process(es) left in %s", len(alive), run_dir)
        stop_records(list(reversed(alive)), timeout_seconds=timeout_seconds)
    clear_state(run_dir)
    return alive


def stop_records(records: Sequence[ProcessRecord], *, timeout_seconds: float) -> None:
    """Stop recorded processes in waves of one role each, in the given order.

    Dependants go first (controller managers, then apiservers, then etcd), so no apiserver
    hangs in shutdown on a store that is already gone.
    """
    waves: dict[str, list[ProcessRecord]] = {}
    for record in records:
        waves.setdefault(record.role or record.name, []).append(record)
    for wave in waves.values():
        _stop_wave(wave, timeout_seconds=timeout_seconds)


def _stop_wave(records: Sequence[ProcessRecord], *, timeout_seconds: float) -> None:
    """SIGTERM each process group, wait up to the timeout for all, SIGKILL the rest."""
    live = [r for r in records if is_same_process(r)]
    for record in live:
        _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while live and time.monotonic() < deadline:
        live = [r for r in live if is_same_process(r)]
        if live:
            time.sleep(0.05)
    for record in live:
        logger.warning(
            "%s (pid %d) ignored SIGTERM for %gs; killing it", record.name, record.pid, timeout_seconds
        )
        _signal_group(record, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5.0
    while live and time.monotonic() < kill_deadline:
        live = [r for r in live if is_same_process(r)]
        if live:
            time.sleep(0.05)


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    # The process leads its own session, so its pgid equals its pid; signal the whole group.
    # (A zombie child counts as gone: `start_ticks` skips zombies, and Popen.wait collects it.)
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)


# -- safety net ----------------------------------------------------------------------------------

_ATTACHED: set[ProcessGroup] = set()
_DETACHED_PROCS: list[subprocess.Popen[bytes]] = []


def stop_attached(run_dir: Path) -> None:
    """Stop the groups this interpreter started in ``run_dir`` (and forget them)."""
    for group in list(_ATTACHED):
        if group.run_dir == run_dir:
            group.stop()


@atexit.register
def _stop_attached() -> None:
    for group in list(_ATTACHED):
        try:
            group.stop(timeout_seconds=5.0)
        except Exception as e:  # exiting anyway: report and go on
            print(f"corral: could not stop processes of {group.run_dir}: {e}", file=sys.stderr)

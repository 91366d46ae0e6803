"""What real nodes add to the host, recorded before it is made, and removed exactly by `cleanup`.

The ledger (``host.json`` in the run folder) lists each network namespace, host interface and
cgroup of the run the moment before it is created, and the folders under which the nodes mount
(the run folder itself); `cleanup` kills every process left in those cgroups, unmounts what is
mounted below those folders, deletes the namespaces (which takes their veth pairs, routes and
iptables chains with them), deletes interfaces still present, removes the cgroups deepest first
and the kubelet's log links that point into the run. It is idempotent, so ``down`` and the reaper
of a crashed run share it; nothing outside the ledger is ever touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corral.controlplane.nodeconf import run_id
from corral.errors import ControlPlaneError

logger = logging.getLogger(__name__)

LEDGER_FILE = "host.json"
#: A copy of every run's ledger, so that a run folder deleted before ``down`` (a test's temporary
#: folder pruned after a crash) still has its host objects removed by the next run's `sweep_orphans`.
MIRROR_DIR = Path("/run/corral/ledgers")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Where kubelets link container logs; the path is fixed in the kubelet.
CONTAINER_LOG_LINKS = Path("/var/log/containers")


_KINDS = ("netns", "links", "cgroups", "mount_roots", "folders")


@dataclass(slots=True, kw_only=True)
class Ledger:
    """What one run folder's real nodes added to the host."""

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    mount_roots: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    """Folders outside the run folder that the run created (removed after unmounting)."""

    @classmethod
    def load(cls, run_dir: Path) -> Ledger:
        path = run_dir / LEDGER_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise ControlPlaneError(f"cannot read {path}; remove what it recorded by hand: {e}") from e
        return cls(**{key: [str(v) for v in data.get(key, [])] for key in _KINDS})

    def save(self, run_dir: Path) -> None:
        text = json.dumps({**asdict(self), "run_dir": str(run_dir)}, indent=2)
        for path in (run_dir / LEDGER_FILE, mirror_path(run_dir)):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def is_empty(self) -> bool:
        return not (self.netns or self.links or self.cgroups or self.mount_roots or self.folders)


class HostState:
    """Adds host objects for one run folder, each recorded in its ledger first."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.ledger = Ledger.load(run_dir)

    def _record(self, kind: str, value: str) -> None:
        items: list[str] = getattr(self.ledger, kind)
        if value not in items:
            items.append(value)
            self.ledger.save(self.run_dir)

    def add_mount_root(self, folder: Path) -> None:
        self._record("mount_roots", str(folder))

    def add_folder(self, folder: Path) -> None:
        """Create a folder outside the run folder, which is also a root of mounts."""
        self._record("folders", str(folder))
        self._record("mount_roots", str(folder))
        folder.mkdir(parents=True, exist_ok=True)

    def add_netns(self, name: str) -> None:
        self._record("netns", name)
        ip("netns", "add", name)

    def add_veth(self, host_if: str, *, peer: str, netns: str) -> None:
        self._record("links", host_if)
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer, "netns", netns)

    def add_cgroup(self, path: str) -> None:
        """Create ``path`` (absolute, like ``/corral-ab12cd34/node``) in every cgroup v1 hierarchy."""
        top = "/" + path.strip("/").split("/")[0]
        self._record("cgroups", top)
        for hierarchy in v1_hierarchies():
            parts = path.strip("/").split("/")
            current = hierarchy
            for part in parts:
                parent, current = current, current / part
                if not current.is_dir():
                    current.mkdir()
                    if hierarchy.name == "cpuset":  # a cpuset takes no task before it has cpus and mems
                        for knob in ("cpuset.cpus", "cpuset.mems"):
                            (current / knob).write_text((parent / knob).read_text())

    def procs_files(self, path: str) -> list[Path]:
        return [hierarchy / path.strip("/") / "cgroup.procs" for hierarchy in v1_hierarchies()]


def mirror_path(run_dir: Path) -> Path:
    return MIRROR_DIR / f"{run_id(run_dir)}.json"


def v1_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (one folder each under /sys/fs/cgroup)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup" and parts[1].startswith(str(CGROUP_ROOT) + "/"):
                found.append(Path(parts[1]))
    return sorted(set(found))


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ControlPlaneError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def in_netns(netns: str, *argv: str) -> str:
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", "--", *argv], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"{' '.join(argv)} in {netns} failed: {result.stderr.strip()}")
    return result.stdout


def host_routes() -> list[str]:
    """Destinations of the host's IPv4 routes, for choosing networks nobody uses."""
    out = ip("-4", "route", "show", "table", "all", check=False)
    routes = []
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        first = (
            words[1]
            if words[0] in {"local", "broadcast", "unicast", "blackhole", "unreachable"}
            else words[0]
        )
        if first != "default" and first[:1].isdigit():
            routes.append(first)
    return routes


# -- cleanup -------------------------------------------------------------------------------------


def cgroup_pids(top: str) -> set[int]:
    """Every pid in ``top`` or below it, in any v1 hierarchy."""
    pids: set[int] = set()
    for hierarchy in v1_hierarchies():
        base = hierarchy / top.strip("/")
        if not base.is_dir():
            continue
        for folder, _dirs, _files in os.walk(base):  # os.walk skips folders that vanish meanwhile
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
    return pids


def kill_cgroup(top: str, *, sig: signal.Signals = signal.SIGKILL, timeout_seconds: float = 10.0) -> int:
    """Send ``sig`` to every process in ``top`` until none is left (or the time is up); return how many."""
    deadline = time.monotonic() + timeout_seconds
    killed: set[int] = set()
    while True:
        pids = cgroup_pids(top) - {os.getpid()}
        live = {pid for pid in pids if _alive(pid)}
        if not live or time.monotonic() > deadline:
            return len(killed)
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
            killed.add(pid)
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def mounts_below(folder: str) -> list[str]:
    """Mount points at or below ``folder``, deepest first."""
    prefix = folder.rstrip("/") + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == folder:
                points.append(point)
    return sorted(set(points), key=lambda p: (p.count("/"), p), reverse=True)


def remove_cgroup_tree(top: str) -> None:
    for hierarchy in v1_hierarchies():
        base = hierarchy / top.strip("/")
        if not base.is_dir():
            continue
        folders = [Path(folder) for folder, _dirs, _files in os.walk(base, topdown=False)]
        for folder in folders:  # deepest first; base comes last
            for _ in range(20):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)  # a dying process can hold its cgroup a moment


def stop_processes(run_dir: Path, *, timeout_seconds: float = 5.0) -> int:
    """Stop every process in the run's cgroups (kubelets, containerd, shims, Pods): SIGTERM, then SIGKILL.

    Run before the control plane stops, so no kubelet keeps an apiserver waiting on its requests.
    """
    count = 0
    for top in Ledger.load(run_dir).cgroups:
        count += kill_cgroup(top, sig=signal.SIGTERM, timeout_seconds=timeout_seconds)
        count += kill_cgroup(top, sig=signal.SIGKILL, timeout_seconds=timeout_seconds)
    return count


def cleanup(run_dir: Path, *, log_links: Path = CONTAINER_LOG_LINKS) -> list[str]:
    """Remove everything the ledger of ``run_dir`` records; return what was removed."""
    ledger = Ledger.load(run_dir)
    if ledger.is_empty() and mirror_path(run_dir).is_file():
        ledger = _load_file(mirror_path(run_dir))
    done = _remove(ledger, log_links=log_links)
    (run_dir / LEDGER_FILE).unlink(missing_ok=True)
    mirror_path(run_dir).unlink(missing_ok=True)
    return done


def sweep_orphans(*, log_links: Path = CONTAINER_LOG_LINKS) -> list[str]:
    """Remove the host objects of runs whose folder is gone (never ``down``ed); return what was removed."""
    done: list[str] = []
    for path in sorted(MIRROR_DIR.glob("*.json")) if MIRROR_DIR.is_dir() else []:
        try:
            run_dir = Path(json.loads(path.read_text())["run_dir"])
        except (OSError, ValueError, KeyError):
            continue
        if not run_dir.exists():
            done += _remove(_load_file(path), log_links=log_links)
            path.unlink(missing_ok=True)
    return done


def _load_file(path: Path) -> Ledger:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return Ledger()
    return Ledger(**{key: [str(v) for v in data.get(key, [])] for key in _KINDS})


def _remove(ledger: Ledger, *, log_links: Path) -> list[str]:
    if ledger.is_empty():
        return []
    done = [f"processes in {top}" for top in ledger.cgroups if kill_cgroup(top)]
    done += _unmount(ledger.mount_roots)
    done += _remove_network(ledger)
    for top in ledger.cgroups:
        remove_cgroup_tree(top)
        done.append(f"cgroup {top}")
    for folder in ledger.folders:
        if Path(folder).is_dir() and not mounts_below(folder):
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"folder {folder}")
    for root in ledger.mount_roots:
        done += [f"log link {p}" for p in remove_links_into(log_links, Path(root))]
    logger.info("removed from the host: %s", ", ".join(done))
    return done


def _unmount(roots: Iterable[str]) -> list[str]:
    done = []
    for root in roots:
        for point in mounts_below(root):
            if subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode == 0:
                done.append(f"mount {point}")
    return done


def _remove_network(ledger: Ledger) -> list[str]:
    """Namespaces first (their veth pairs, routes and iptables chains go with them), then stray links."""
    done = []
    for name in ledger.netns:
        if Path(f"/run/netns/{name}").exists():
            ip("netns", "del", name, check=False)
            done.append(f"netns {name}")
    for link in ledger.links:
        if Path(f"/sys/class/net/{link}").exists():
            ip("link", "del", link, check=False)
            done.append(f"link {link}")
    return done


def remove_links_into(folder: Path, target_root: Path) -> list[Path]:
    """Remove the symbolic links in ``folder`` that point below ``target_root``."""
    removed = []
    prefix = str(target_root).rstrip("/") + "/"
    with contextlib.suppress(OSError):
        for link in folder.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(prefix):
                    link.unlink()
                    removed.append(link)
    return removed


def leftovers(run_dir: Path, names: Iterable[str]) -> list[str]:
    """Which of the named host objects (netns, links) still exist: for tests of cleanup."""
    return [n for n in names if Path(f"/run/netns/{n}").exists() or Path(f"/sys/class/net/{n}").exists()]

"""Debian packages that real nodes use from the distribution, installed by corral when missing.

runc runs the containers, the CNI plugins wire Pods to their node's bridge, iptables and conntrack
serve kube-proxy, umoci and debootstrap build the images, gcc links ``pause`` statically; HAProxy is
the load balancer in front of an ACE cluster's apiservers (`corral.controlplane.loadbalancer`). They come
from the machine's own apt sources: `ensure_packages` asks dpkg which are missing and, as root,
runs ``apt-get update`` and ``apt-get install`` for those only, one progress line per step, so a
fresh machine or CI needs nothing done by hand.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import filelock

from corral.controlplane.build import cache_root
from corral.errors import ControlPlaneError

logger = logging.getLogger(__name__)

#: What real nodes and their images take from Debian.
NODE_PACKAGES = (
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "iproute2",
    "util-linux",
    "umoci",
    "debootstrap",
    "gcc",
    "libc6-dev",
)

Report = Callable[[str], None]


def missing_packages(names: Iterable[str]) -> list[str]:
    """The named packages dpkg does not report as installed (all of them where dpkg is absent)."""
    names = list(names)
    if shutil.which("dpkg-query") is None:
        return names
    missing = []
    for name in names:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not result.stdout.strip().endswith(" installed"):
            missing.append(name)
    return missing


def ensure_packages(
    names: Iterable[str] = NODE_PACKAGES,
    *,
    report: Report | None = None,
    log_dir: Path | None = None,
    purpose: str = "real nodes",
) -> list[str]:
    """Install the missing ones of ``names`` with apt-get; return what was installed.

    Raises `ControlPlaneError` in one sentence when they are missing and cannot be installed
    (not root, no apt-get, or apt-get failed: the sentence names its log).
    """
    say = report or (lambda line: logger.info("%s", line))
    missing = missing_packages(names)
    if not missing:
        return []
    listed = ", ".join(missing)
    if shutil.which("apt-get") is None:
        raise ControlPlaneError(
            f"{purpose}: the Debian packages {listed} are missing, and this machine has no apt-get"
        )
    if os.geteuid() != 0:
        raise ControlPlaneError(
            f"{purpose}: the Debian packages {listed} are missing: run as root to install them"
        )
    log_dir = log_dir or cache_root() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "corral-apt.log"
    with filelock.FileLock(str(log_dir / ".corral-apt.lock")):
        missing = missing_packages(missing)  # another process may have installed them meanwhile
        if not missing:
            return []
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        say("apt-get update ...")
        _apt(["apt-get", "update"], env=env, log=log)
        say(f"apt-get install {' '.join(missing)} ...")
        _apt(
            ["apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0", *missing],
            env=env,
            log=log,
        )
    still = missing_packages(missing)
    if still:
        raise ControlPlaneError(f"apt-get did not install {', '.join(still)}; see {log}")
    say(f"installed {len(missing)} Debian package(s)")
    return missing


def _apt(argv: list[str], *, env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        try:
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
        except OSError as e:
            raise ControlPlaneError(f"cannot run {argv[0]}: {e}") from e
    if code != 0:
        raise ControlPlaneError(f"{' '.join(argv[:2])} failed with status {code}; see {log}")

"""Headless Chromium for checking that a generated report renders: found on PATH, or installed from
Debian's ``chromium`` package when missing (as root, with apt), and run with a fresh profile.

The flags keep a run hermetic and quiet: no sandbox (containers), no GPU, no QUIC, no first-run
screens, no background networking, component updates or sync, and a throw-away user data folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from corral.errors import CorralError

logger = logging.getLogger(__name__)

PACKAGE: Final = "chromium"
NAMES: Final = ("chromium", "chromium-browser")
FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_SECONDS = 120.0


class BrowserError(CorralError):
    """No Chromium could be found or installed, or it failed to render a page."""


def find_chromium() -> Path | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def ensure_chromium() -> Path:
    """Chromium's path, installing Debian's package first when it is missing."""
    found = find_chromium()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise BrowserError(
            f"no Chromium on PATH and cannot install it here (needs root and apt-get): "
            f"install Debian's {PACKAGE} package"
        )
    logger.info("installing Debian's %s package", PACKAGE)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", PACKAGE]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise BrowserError(f"`{' '.join(argv[1:])}` failed: {' / '.join(tail) or 'no output'}")
    found = find_chromium()
    if found is None:
        raise BrowserError(f"installed {PACKAGE} but found none of {', '.join(NAMES)} on PATH")
    return found


def _run(chromium: Path, *args: str, what: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="corral-chromium-") as profile:
        argv = [str(chromium), *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish {what} within {TIMEOUT_SECONDS:g}s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise BrowserError(f"chromium failed {what} (exit {done.returncode}): {' / '.join(tail)}")
    return done


def dump_dom(page: Path, *, chromium: Path | None = None, budget_ms: int = 5000) -> str:
    """The page's DOM after it loaded and its scripts ran (``--dump-dom``)."""
    browser = chromium or ensure_chromium()
    done = _run(
        browser,
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        page.resolve().as_uri(),
        what=f"rendering {page}",
    )
    return done.stdout


def screenshot(page: Path, out: Path, *, chromium: Path | None = None, size: str = "1280,2000") -> Path:
    """A PNG of the page as Chromium draws it."""
    browser = chromium or ensure_chromium()
    _run(
        browser,
        f"--window-size={size}",
        f"--screenshot={out.resolve()}",
        page.resolve().as_uri(),
        what=f"drawing {page}",
    )
    if not out.is_file():
        raise BrowserError(f"chromium wrote no screenshot at {out}")
    return out

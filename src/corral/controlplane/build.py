"""Build the Go binaries corral runs (Kubernetes, etcd, toxiproxy, Go peers) from pinned modules.

Each wrapper Go module under ``corral/controlplane/go/<module>/`` (package data, so an installed
wheel carries them too) pins one upstream release; this module builds its commands into a cache
keyed by the module and its version (``~/.cache/corral/bin/<module>/<version>/``), reuses what is
there, holds a file lock so two processes never build at once, and reports progress as packages
compiled out of the total. Builds only read the module folders: outputs go to the cache.
Go's own module and build caches make a rebuild after a cache wipe take seconds, not minutes.

Set ``CORRAL_BIN_DIR`` to use binaries from a folder instead of building them, and
``CORRAL_CACHE_DIR`` to move the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import filelock

from corral.errors import BuildError

logger = logging.getLogger(__name__)

#: The Go release line every wrapper module declares (``go 1.26.0``); older toolchains cannot build.
MIN_GO = (1, 26)

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
TOXIPROXY_VERSION = "v2.12.0"
CONTAINERD_VERSION = "v2.2.4"

_K8S_LDFLAGS = (
    "-X k8s.io/component-base/version.gitVersion={version} "
    "-X k8s.io/component-base/version.gitMajor=1 "
    "-X k8s.io/component-base/version.gitMinor={minor} "
    "-X k8s.io/component-base/version.gitTreeState=clean"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One binary: which wrapper module builds it, from which package, under which name."""

    name: str
    module: str  # folder under go_modules_dir()
    package: str
    version: str
    ldflags: str = ""
    tags: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()


def _k8s(name: str) -> Component:
    minor = KUBERNETES_VERSION.split(".")[1]
    return Component(
        name=name,
        module="kubernetes",
        package=f"k8s.io/kubernetes/cmd/{name}",
        version=KUBERNETES_VERSION,
        ldflags=_K8S_LDFLAGS.format(version=KUBERNETES_VERSION, minor=minor),
        tags=("notest", "grpcnotrace"),
        extra_args=("-pgo=off",),
    )


def _containerd(name: str) -> Component:
    return Component(
        name=name,
        module="containerd",
        package=f"github.com/containerd/containerd/v2/cmd/{name}",
        version=CONTAINERD_VERSION,
        ldflags=f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",
        tags=("no_btrfs",),
    )


#: Every binary corral knows how to build, in build order (the big shared graph first).
COMPONENTS: tuple[Component, ...] = (
    _k8s("kube-apiserver"),
    _k8s("kube-controller-manager"),
    _k8s("kubectl"),
    Component(name="etcd", module="etcd", package="go.etcd.io/etcd/server/v3", version=ETCD_VERSION),
    _k8s("kubelet"),
    _k8s("kube-scheduler"),
    _k8s("kube-proxy"),
    _containerd("containerd"),
    _containerd("containerd-shim-runc-v2"),
    _containerd("ctr"),
    Component(
        name="toxiproxy-server",
        module="toxiproxy",
        package="github.com/Shopify/toxiproxy/v2/cmd/server",
        version=TOXIPROXY_VERSION,
    ),
    Component(
        name="toxiproxy-cli",
        module="toxiproxy",
        package="github.com/Shopify/toxiproxy/v2/cmd/cli",
        version=TOXIPROXY_VERSION,
    ),
    Component(
        name="remotedialer-server",
        module="remotedialer",
        package="corral.local/remotedialer-harness/cmd/rd-server",
        version="v0.6.1",
    ),
    Component(
        name="remotedialer-client",
        module="remotedialer",
        package="corral.local/remotedialer-harness/cmd/rd-client",
        version="v0.6.1",
    ),
)

#: Components a local control plane needs; `ensure_built()` builds these by default.
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kubectl", "etcd")
#: What real nodes add: the scheduler and kube-proxy beside the control plane, and per node a
#: kubelet and a containerd with its runc shim (``ctr`` imports the locally built images).
NODES = ("kube-scheduler", "kube-proxy", "kubelet", "containerd", "containerd-shim-runc-v2", "ctr")


def component(name: str) -> Component:
    for item in COMPONENTS:
        if item.name == name:
            return item
    known = ", ".join(c.name for c in COMPONENTS)
    raise BuildError(f"unknown component {name!r}; known: {known}")


# -- locations --------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where built binaries live: ``$CORRAL_CACHE_DIR`` or ``~/.cache/corral``."""
    explicit = os.environ.get("CORRAL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "corral"


def go_modules_dir() -> Path:
    """The folder of wrapper Go modules: ``$CORRAL_GO_MODULES`` or the ``go/`` folder of this package."""
    explicit = os.environ.get("CORRAL_GO_MODULES")
    if explicit:
        if not Path(explicit).is_dir():
            raise BuildError(f"CORRAL_GO_MODULES={explicit!r} is not a folder")
        return Path(explicit)
    folder = resources.files("corral.controlplane") / "go"
    if not isinstance(folder, Path) or not (folder / "kubernetes" / "go.mod").is_file():
        raise BuildError(
            f"corral's wrapper Go modules are missing from its package ({folder}/*/go.mod): "
            "reinstall corral, or set CORRAL_GO_MODULES to a folder of wrapper modules"
        )
    return folder


def _module_digest(module_dir: Path) -> str:
    """A digest of what a wrapper module builds from: go.mod, go.sum and its own Go sources."""
    digest = hashlib.sha256()
    sources = [module_dir / "go.mod", module_dir / "go.sum", *sorted(module_dir.rglob("*.go"))]
    for path in sources:
        if path.is_file():
            digest.update(str(path.relative_to(module_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def output_dir(item: Component) -> Path:
    """Cache folder of one component's module and version."""
    return cache_root() / "bin" / item.module / item.version


# -- the toolchain ----------------------------------------------------------------------------


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"the Go toolchain is not on PATH: install Go {MIN_GO[0]}.{MIN_GO[1]} or newer "
            "(or set CORRAL_BIN_DIR to a folder with the binaries already built)"
        )
    return go


def go_version(go: str) -> tuple[int, int]:
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"cannot run {go!r} to ask its version: {e}") from e
    match = re.match(r"go(\d+)\.(\d+)", out)
    if not match:
        raise BuildError(f"cannot read the Go version from {out!r}")
    return int(match.group(1)), int(match.group(2))


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries as upstream builds them; never let `go` fetch another toolchain, and never
    # let it touch go.mod or go.sum (the modules may sit in a read-only installed package).
    env.update(CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false -mod=readonly")
    return env


# -- building ---------------------------------------------------------------------------------


Progress = Callable[[str, int, int], None]
"""Called as progress(component, packages_done, packages_total) while a build runs."""


@dataclass(frozen=True, slots=True)
class Built:
    """The result of `ensure_built`: binary paths by component name."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise BuildError(f"{name!r} was not built; call ensure_built([{name!r}])") from None


def ensure_built(
    names: Iterable[str] = CONTROL_PLANE,
    *,
    progress: Progress | None = None,
    force: bool = False,
) -> Built:
    """Return the paths of the named binaries, building whatever the cache lacks.

    With ``CORRAL_BIN_DIR`` set, binaries are taken from that folder and nothing is built.
    """
    items = [component(name) for name in names]
    bin_dir = os.environ.get("CORRAL_BIN_DIR")
    if bin_dir:
        return Built({item.name: _prebuilt(Path(bin_dir), item) for item in items})

    paths: dict[str, Path] = {}
    pending = [item for item in items if force or not _is_fresh(item)]
    if pending:
        go = go_binary()
        version = go_version(go)
        if version < MIN_GO:
            raise BuildError(
                f"Go {version[0]}.{version[1]} is too old: corral's pinned modules need Go "
                f"{MIN_GO[0]}.{MIN_GO[1]} or newer"
            )
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        with _build_lock(root):
            for item in pending:
                if force or not _is_fresh(item):  # another process may have built it meanwhile
                    _build(go, item, progress=progress)
    for item in items:
        paths[item.name] = output_dir(item) / item.name
    return Built(paths)


def _prebuilt(folder: Path, item: Component) -> Path:
    path = folder / item.name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BuildError(f"CORRAL_BIN_DIR={str(folder)!r} has no executable {item.name!r}")
    return path


def _stamp_path(item: Component) -> Path:
    return output_dir(item) / f".{item.name}.stamp"


def _is_fresh(item: Component) -> bool:
    binary = output_dir(item) / item.name
    stamp = _stamp_path(item)
    if not (binary.is_file() and stamp.is_file()):
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded.get("digest") == _module_digest(go_modules_dir() / item.module))


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    lock = filelock.FileLock(str(root / "build.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.info("another corral build holds %s; waiting for it", lock.lock_file)
        print("waiting for another corral build to finish ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _count_packages(go: str, module_dir: Path, item: Component) -> int:
    args = [go, "list", "-deps"]
    if item.tags:
        args.append("-tags=" + ",".join(item.tags))
    try:
        result = subprocess.run(
            [*args, item.package],
            check=False,
            cwd=module_dir,
            env=_go_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    if result.returncode != 0:
        raise BuildError(_explain_failure(item, module_dir, result.stderr))
    return len(result.stdout.split())


def _build(go: str, item: Component, *, progress: Progress | None) -> None:
    module_dir = go_modules_dir() / item.module
    if not (module_dir / "go.mod").is_file():
        raise BuildError(f"{module_dir}/go.mod is missing; cannot build {item.name}")
    target_dir = output_dir(item)
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp_target = target_dir / f".{item.name}.partial"
    total = _count_packages(go, module_dir, item)
    args = [go, "build", "-v", "-trimpath", *item.extra_args]
    if item.tags:
        args.append("-tags=" + ",".join(item.tags))
    args += ["-ldflags", f"-s -w {item.ldflags}".strip(), "-o", str(tmp_target), item.package]
    logger.info("building %s %s from %s", item.name, item.version, module_dir)
    started = time.monotonic()
    done = 0
    stderr_tail: list[str] = []
    report = progress or (lambda *_: None)
    report(item.name, 0, total)
    try:
        proc = subprocess.Popen(
            args,
            cwd=module_dir,
            env=_go_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as e:
        raise BuildError(f"cannot start {go!r}: {e}") from e
    ticker = _Ticker(lambda: report(item.name, done, total))
    with proc:  # closes the pipe and reaps the process, also on an exception
        try:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.rstrip("\n")
                if re.match(r"^[\w./-]+$", line):  # `go build -v` names each package it compiles
                    done += 1
                    report(item.name, done, max(total, done))
                else:
                    stderr_tail = [*stderr_tail[-40:], line]
            code = proc.wait()
        finally:
            ticker.stop()
            if proc.poll() is None:
                proc.kill()
    if code != 0:
        tmp_target.unlink(missing_ok=True)
        raise BuildError(_explain_failure(item, module_dir, "\n".join(stderr_tail)))
    tmp_target.replace(target_dir / item.name)
    _stamp_path(item).write_text(
        json.dumps(
            {
                "digest": _module_digest(module_dir),
                "version": item.version,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    report(item.name, max(total, done), max(total, done))


def _explain_failure(item: Component, module_dir: Path, stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no output from go"
    module_problem = re.search(
        r"(unknown revision|no matching versions|invalid version|verifying module|"
        r"dial tcp|connection refused|404 Not Found|410 Gone|missing go.sum entry|GOPROXY=off)",
        stderr,
    )
    if module_problem:
        return (
            f"cannot build {item.name}: a Go module could not be resolved ({last}). Check that GOPROXY "
            f"reaches the Go module proxy and that {module_dir.name}/go.mod pins published versions"
        )
    return f"cannot build {item.name} {item.version}: go build failed: {last}"


class _Ticker:
    """Calls `tick` every few seconds from a thread, so a quiet link step still shows life."""

    def __init__(self, tick: Callable[[], None], interval_seconds: float = 5.0) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(tick, interval_seconds), daemon=True)
        self._thread.start()

    def _run(self, tick: Callable[[], None], interval: float) -> None:
        while not self._stop.wait(interval):
            tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

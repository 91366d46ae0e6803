"""Container images for real nodes, built on this machine: no registry is ever contacted.

Two images, each an OCI layout made with umoci and saved as a tar that ``ctr images import``
loads into every node's containerd:

* ``pause``: Kubernetes' own ``build/pause/linux/pause.c``, from the pinned Kubernetes module in
  Go's module cache, linked statically with gcc: the sandbox image of every Pod.
* ``corral``: a Debian minbase root file system (debootstrap, from the mirror and release of this
  machine's apt configuration) with python3, plus corral and its dependencies installed from a
  wheel of this checkout (or the installed package), so corral's own code runs in Pods.

Each is cached under ``<cache>/images/<name>/<digest>/`` where the digest covers its inputs (the
source file and compiler; the release, mirror and packages; corral's sources), so it is rebuilt
only when they change. The Debian root file system is a layer of its own, cached apart, so a
change to corral's code rebuilds only the small top layer. Steps report progress lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import filelock

from corral.controlplane import build
from corral.errors import ControlPlaneError

logger = logging.getLogger(__name__)

Report = Callable[[str], None]

#: Image names are local names only; no registry serves them (Pods use ``imagePullPolicy: Never``).
PAUSE_IMAGE = "corral.local/pause:3.10"
CORRAL_IMAGE = "corral.local/corral:dev"
#: What the corral image adds to Debian's minbase.
BASE_PACKAGES = ("python3", "ca-certificates")
_RECIPE = "3"  # bump when the way an image is made changes


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageArchive:
    """An OCI layout tar and the name it gets when imported."""

    reference: str
    archive: Path
    digest: str

    @property
    def base_name(self) -> str:
        return self.reference.rsplit(":", 1)[0]


def images_root() -> Path:
    return build.cache_root() / "images"


# -- apt configuration --------------------------------------------------------------------------


def debian_release(os_release: Path = Path("/etc/os-release")) -> str:
    """The release code name of this machine (``bookworm``), which the image's root file system uses."""
    try:
        text = os_release.read_text()
    except OSError as e:
        raise ControlPlaneError(f"cannot read {os_release} to learn the Debian release: {e}") from e
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if not match:
        raise ControlPlaneError(f"{os_release} names no VERSION_CODENAME; the corral image needs Debian")
    return match.group(1)


def apt_mirror(release: str, *, etc_apt: Path = Path("/etc/apt")) -> str:
    """The archive URI this machine's apt uses for ``release`` (one-line ``.list`` or deb822 ``.sources``)."""
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    files += sorted((etc_apt / "sources.list.d").glob("*.sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites in _apt_entries(text, deb822=path.suffix == ".sources"):
            if release in suites:
                return uri.rstrip("/")
    raise ControlPlaneError(f"no apt source for Debian {release!r} in {etc_apt}; debootstrap needs one")


def _apt_entries(text: str, *, deb822: bool) -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            suites = fields.get("suites", "").split()
            entries += [(uri, suites) for uri in fields.get("uris", "").split()]
        return entries
    for raw in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", raw.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


# -- digests --------------------------------------------------------------------------------------


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]


def _tree_digest(root: Path, *, exclude: tuple[str, ...] = ("__pycache__",)) -> bytes:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part in exclude for part in path.parts) and path.suffix != ".pyc":
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.digest()


def corral_source() -> tuple[Path, Path | None]:
    """corral's package folder, and the checkout it comes from (None for an installed wheel)."""
    package = Path(__file__).resolve().parents[1]
    root = package.parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name = "corral"$', pyproject.read_text(), re.MULTILINE):
        return package, root
    return package, None


# -- building -------------------------------------------------------------------------------------


def ensure_images(*, report: Report | None = None) -> tuple[ImageArchive, ...]:
    """The pause and corral images as OCI archives, built when their inputs changed."""
    say = report or (lambda line: logger.info("%s", line))
    root = images_root()
    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root / "images.lock")):
        return (_pause_image(say), _corral_image(say))


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise ControlPlaneError(f"building images needs {name!r} on PATH (corral installs it from Debian)")
    return path


def _run(argv: list[str], *, what: str, cwd: Path | None = None, timeout: float = 1800) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ControlPlaneError(f"cannot {what}: {e}") from e
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise ControlPlaneError(f"cannot {what}: {argv[0]} exited with {result.returncode}: {last}")
    return result.stdout


def kubernetes_source_dir() -> Path:
    """The pinned Kubernetes module's folder in Go's module cache (downloaded when missing)."""
    module_dir = build.go_modules_dir() / "kubernetes"
    out = _run(
        [build.go_binary(), "mod", "download", "-json", f"k8s.io/kubernetes@{build.KUBERNETES_VERSION}"],
        what="locate the Kubernetes source in Go's module cache",
        cwd=module_dir,
    )
    try:
        return Path(json.loads(out)["Dir"])
    except (ValueError, KeyError) as e:
        raise ControlPlaneError(f"go mod download gave no folder for Kubernetes: {e}") from e


def _pause_image(say: Report) -> ImageArchive:
    source = kubernetes_source_dir() / "build" / "pause" / "linux" / "pause.c"
    gcc = _tool("gcc")
    compiler = _run([gcc, "--version"], what="ask gcc its version").splitlines()[0]
    digest = _digest([_RECIPE.encode(), source.read_bytes(), compiler.encode()])
    image = ImageArchive(
        reference=PAUSE_IMAGE, archive=images_root() / "pause" / digest / "image.tar", digest=digest
    )
    if image.archive.is_file():
        return image
    say("building image pause: gcc -static pause.c")
    with tempfile.TemporaryDirectory(prefix="corral-pause-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        _run([gcc, "-Os", "-static", "-o", str(rootfs / "pause"), str(source)], what="compile pause.c")
        _run(["strip", str(rootfs / "pause")], what="strip pause")
        layout = work / "layout"
        tag = PAUSE_IMAGE.rsplit(":", 1)[1]
        _new_layout(layout, tag)
        _insert(layout, tag, rootfs, "/")
        _run(
            [
                _tool("umoci"),
                "config",
                "--image",
                f"{layout}:{tag}",
                "--config.entrypoint",
                "/pause",
                "--config.user",
                "65535:65535",
            ],
            what="configure the pause image",
        )
        _save(layout, image.archive)
    say(f"image pause ready ({image.archive.stat().st_size // 1024} KiB)")
    return image


def _new_layout(layout: Path, tag: str) -> None:
    umoci = _tool("umoci")
    _run([umoci, "init", "--layout", str(layout)], what="create an OCI layout")
    _run([umoci, "new", "--image", f"{layout}:{tag}"], what="create an empty image")


def _insert(layout: Path, tag: str, source: Path, target: str) -> None:
    _run(
        [_tool("umoci"), "insert", "--image", f"{layout}:{tag}", str(source), target],
        what=f"add {source} as a layer",
    )


def _save(layout: Path, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    _run(["tar", "-C", str(layout), "-cf", str(partial), "."], what="archive the OCI layout")
    partial.replace(archive)


def _base_layout(say: Report) -> tuple[Path, str]:
    """The Debian layer as an OCI layout (tag ``base``), cached by release, mirror and packages."""
    release = debian_release()
    mirror = apt_mirror(release)
    digest = _digest([_RECIPE.encode(), release.encode(), mirror.encode(), " ".join(BASE_PACKAGES).encode()])
    folder = images_root() / "debian" / digest
    layout = folder / "layout"
    if (folder / "done").is_file():
        return layout, digest
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rootfs = folder / "rootfs"
    say(f"building the Debian {release} root file system (debootstrap --variant=minbase), about a minute")
    started = time.monotonic()
    _debootstrap(release, mirror, rootfs, say)
    for junk in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ):
        target = rootfs / junk
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    say(f"root file system ready in {time.monotonic() - started:.0f}s; packing it as a layer")
    _new_layout(layout, "base")
    _insert(layout, "base", rootfs, "/")
    shutil.rmtree(rootfs)
    (folder / "done").write_text("")
    return layout, digest


def _debootstrap(release: str, mirror: str, rootfs: Path, say: Report) -> None:
    argv = [
        _tool("debootstrap"),
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        release,
        str(rootfs),
        mirror,
    ]
    log = rootfs.parent / "debootstrap.log"
    counts = {"Retrieving": 0, "Unpacking": 0, "Configuring": 0}
    last = time.monotonic()
    with log.open("w") as out:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as e:
            raise ControlPlaneError(f"cannot run debootstrap: {e}") from e
        with proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                word = line[3:].split(" ", 1)[0] if line.startswith("I: ") else ""
                if word in counts:
                    counts[word] += 1
                    if time.monotonic() - last > 10:
                        last = time.monotonic()
                        say("debootstrap: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items()))
            code = proc.wait()
    if code != 0:
        raise ControlPlaneError(f"debootstrap of Debian {release} failed with status {code}; see {log}")


#: The python3 of each Debian release the corral image can start from.
_PYTHON_OF_RELEASE = {"bookworm": "3.11", "trixie": "3.13"}


def _python_version() -> str:
    release = debian_release()
    try:
        return _PYTHON_OF_RELEASE[release]
    except KeyError:
        known = ", ".join(_PYTHON_OF_RELEASE)
        raise ControlPlaneError(
            f"the corral image knows the Python of Debian {known}, not {release}"
        ) from None


def _corral_image(say: Report) -> ImageArchive:
    base, base_digest = _base_layout(say)
    package, checkout = corral_source()
    source_digest = _tree_digest(package)
    if checkout is not None:
        source_digest += (checkout / "pyproject.toml").read_bytes()
    digest = _digest([_RECIPE.encode(), base_digest.encode(), source_digest])
    image = ImageArchive(
        reference=CORRAL_IMAGE, archive=images_root() / "corral" / digest / "image.tar", digest=digest
    )
    if image.archive.is_file():
        return image
    say("building image corral: corral and its dependencies on the Debian layer")
    with tempfile.TemporaryDirectory(prefix="corral-image-") as tmp:
        work = Path(tmp)
        site = work / "site"
        _install_corral(package, checkout, site, work)
        layout = work / "layout"
        shutil.copytree(base, layout, symlinks=True)
        tag = CORRAL_IMAGE.rsplit(":", 1)[1]
        umoci = _tool("umoci")
        _run([umoci, "tag", "--image", f"{layout}:base", tag], what="tag the corral image")
        _run([umoci, "rm", "--image", f"{layout}:base"], what="drop the base tag")
        _insert(layout, tag, site, f"/usr/local/lib/python{_python_version()}/dist-packages")
        _run(
            [
                umoci,
                "config",
                "--image",
                f"{layout}:{tag}",
                "--config.cmd",
                "python3",
                "--config.env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--config.env",
                "PYTHONDONTWRITEBYTECODE=1",
            ],
            what="configure the corral image",
        )
        _save(layout, image.archive)
    say(f"image corral ready ({image.archive.stat().st_size // (1024 * 1024)} MiB)")
    return image


def _install_corral(package: Path, checkout: Path | None, site: Path, work: Path) -> None:
    """corral and its runtime dependencies into ``site``, for the image's Python (3.11, x86-64 glibc)."""
    uv = shutil.which("uv")
    if checkout is not None:
        wheels = work / "wheels"
        if uv is not None:
            _run(
                [uv, "build", "--wheel", "--out-dir", str(wheels), str(checkout)], what="build corral's wheel"
            )
        else:
            _run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(checkout)],
                what="build corral's wheel",
            )
        targets = [str(path) for path in sorted(wheels.glob("corral-*.whl"))]
    else:
        requires = [r for r in (metadata.requires("corral") or []) if "extra ==" not in r]
        targets = requires
        shutil.copytree(package, site / "corral", ignore=shutil.ignore_patterns("__pycache__"))
    if uv is not None:
        argv = [
            uv,
            "pip",
            "install",
            "--quiet",
            "--target",
            str(site),
            "--python-version",
            _python_version(),
            "--python-platform",
            "x86_64-unknown-linux-gnu",
            *targets,
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(site),
            "--only-binary=:all:",
            "--python-version",
            _python_version(),
            "--platform",
            "manylinux2014_x86_64",
            *targets,
        ]
    _run(argv, what="install corral and its dependencies for the image")

"""corral as a wheel, installed in a fresh virtualenv outside the checkout, run from elsewhere.

The wheel must carry the wrapper Go modules (same content, so the same build cache keys as a
checkout), the bundled scenarios and the pytest plugin's entry point; the installed `corral`
builds a Go module and the installed plugin serves its fixtures to a suite of another project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from uv import find_uv_bin

from corral.controlplane import build

ROOT = Path(__file__).parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

PLUGIN_SUITE = """
import pytest


def test_the_default_scenario_ships_with_corral(corral_scenario):
    assert corral_scenario.name == "smoke"
    assert len(corral_scenario.clusters) == 2


@pytest.mark.cluster
def test_needs_clusters():
    raise AssertionError("ran without --with-clusters")
"""

# A stand-in for the remotedialer harness with no dependencies (no module downloads), under the
# module path and package of the real component, so `corral build remotedialer-server` builds it.
HARNESS_GO_MOD = "module corral.local/remotedialer-harness\n\ngo 1.26.0\n"
HARNESS_MAIN = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("built from a wheel") }\n'


@dataclass(frozen=True)
class Installed:
    """A virtualenv with the wheel installed, a working folder outside the checkout, its env."""

    venv: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    check(
        subprocess.run(
            [find_uv_bin(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    )
    (found,) = out.glob("corral-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("installed")
    assert ROOT not in base.parents
    venv, cwd = base / "venv", base / "elsewhere"
    cwd.mkdir()
    uv = find_uv_bin()
    check(
        subprocess.run(
            [uv, "venv", "--quiet", "-p", sys.executable, str(venv)],
            capture_output=True,
            text=True,
            check=False,
        )
    )
    extras = "[sim]" if "sim" in PYPROJECT["project"].get("optional-dependencies", {}) else ""
    check(
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "-p",
                str(venv / "bin" / "python"),
                f"{wheel}{extras}",
                "pytest",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CORRAL_", "PYTEST_", "PYTHON", "VIRTUAL_ENV"))
    }
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "CORRAL_CACHE_DIR": str(base / "cache"),
    }
    return Installed(venv=venv, cwd=cwd, env=env)


def test_the_wheel_carries_the_go_modules_the_scenarios_and_the_plugin_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entries = archive.read(entry_points).decode()
    packaged = ROOT / "src" / "corral" / "controlplane" / "go"
    sources = [p for p in packaged.rglob("*") if p.name in {"go.mod", "go.sum"} or p.suffix == ".go"]
    assert {p.parent.name for p in sources if p.name == "go.sum"} == {c.module for c in build.COMPONENTS}
    assert any(p.suffix == ".go" for p in sources)
    for path in sources:
        assert f"corral/controlplane/go/{path.relative_to(packaged)}" in names
    for path in (ROOT / "fixtures" / "scenarios").glob("*.yaml"):
        assert f"corral/scenarios/{path.name}" in names
    assert "[pytest11]\ncorral = corral.pytest_plugin" in entries


def test_the_installed_package_finds_its_go_modules_with_the_checkout_cache_keys(
    installed: Installed,
) -> None:
    script = (
        "import json, corral\n"
        "from corral.controlplane import build\n"
        "folder = build.go_modules_dir()\n"
        "print(json.dumps({'package': corral.__file__, 'go': str(folder),"
        " 'digests': {c.module: build._module_digest(folder / c.module) for c in build.COMPONENTS}}))\n"
    )
    found = json.loads(check(installed.run(installed.bin("python"), "-c", script)))
    assert Path(found["package"]).is_relative_to(installed.venv)
    assert Path(found["go"]).is_relative_to(installed.venv)
    checkout = build.go_modules_dir()
    assert found["digests"] == {c.module: build._module_digest(checkout / c.module) for c in build.COMPONENTS}


def test_the_installed_cli_builds_a_go_module_into_its_cache(installed: Installed, tmp_path: Path) -> None:
    modules = tmp_path / "go"
    harness = modules / "remotedialer"
    (harness / "cmd" / "rd-server").mkdir(parents=True)
    (harness / "go.mod").write_text(HARNESS_GO_MOD)
    (harness / "cmd" / "rd-server" / "main.go").write_text(HARNESS_MAIN)
    env = {**installed.env, "CORRAL_GO_MODULES": str(modules)}
    result = subprocess.run(
        [installed.bin("corral"), "build", "remotedialer-server"],
        cwd=installed.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    check(result)
    binary = Path(env["CORRAL_CACHE_DIR"]) / "bin" / "remotedialer" / "v0.6.1" / "remotedialer-server"
    assert str(binary) in result.stdout
    assert check(installed.run(str(binary))).strip() == "built from a wheel"
    assert sorted(p.name for p in harness.rglob("*")) == ["cmd", "go.mod", "main.go", "rd-server"]


def test_the_installed_plugin_serves_a_suite_outside_the_checkout(installed: Installed) -> None:
    (installed.cwd / "test_outside.py").write_text(PLUGIN_SUITE)
    result = installed.run(installed.bin("pytest"), "-p", "no:cacheprovider", "test_outside.py")
    check(result)
    assert "1 passed, 1 deselected" in result.stdout
    assert "1 test needs real clusters: run with --with-clusters" in result.stdout


def test_the_installed_cli_runs_the_model_on_the_bundled_smoke_scenario(installed: Installed) -> None:
    smoke = check(
        installed.run(
            installed.bin("python"), "-c", "from corral.bundled import scenario_path; print(scenario_path())"
        )
    ).strip()
    assert Path(smoke).is_relative_to(installed.venv)
    out = installed.cwd / "sim-smoke"
    check(installed.run(installed.bin("corral"), "sim", "run", smoke, "--seed", "1", "--out", str(out)))
    assert (out / "summary.json").is_file()

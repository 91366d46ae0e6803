"""corral build: a tiny wrapper module is built once, reused, rebuilt when its sources change, and
every way it can fail ends in one sentence that says what to do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from corral.controlplane import build
from corral.errors import BuildError

HELLO = "hello-corral"
MAIN = 'package main\n\nimport "fmt"\n\nfunc main() {{ fmt.Println("{text}") }}\n'


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A modules folder with one wrapper module, `hello`, and an empty cache; only it is known."""
    folder = tmp_path / "go"
    module = folder / "hello"
    module.mkdir(parents=True)
    (module / "go.mod").write_text("module corral.test/hello\n\ngo 1.26.0\n")
    (module / "main.go").write_text(MAIN.format(text="one"))
    monkeypatch.setenv("CORRAL_GO_MODULES", str(folder))
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CORRAL_BIN_DIR", raising=False)
    monkeypatch.setattr(
        build,
        "COMPONENTS",
        (build.Component(name=HELLO, module="hello", package="corral.test/hello", version="v0.0.1"),),
    )
    return module


def run(binary: Path) -> str:
    return subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.strip()


def test_a_component_is_built_into_the_versioned_cache_and_reused(modules: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    built = build.ensure_built([HELLO], progress=lambda *args: calls.append(args))
    binary = built[HELLO]
    assert binary == tmp_path / "cache" / "bin" / "hello" / "v0.0.1" / HELLO
    assert run(binary) == "one"
    assert calls[-1][1] == calls[-1][2] > 0  # the last report says every package is done
    first_mtime = binary.stat().st_mtime_ns

    calls.clear()
    assert build.ensure_built([HELLO], progress=lambda *args: calls.append(args))[HELLO] == binary
    assert calls == []  # nothing was built the second time
    assert binary.stat().st_mtime_ns == first_mtime


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_build_writes_nothing_into_the_module_folder(modules: Path) -> None:
    """The modules may sit in an installed, read-only package: outputs go to the cache only."""
    before = snapshot(modules)
    build.ensure_built([HELLO])
    assert snapshot(modules) == before


def test_the_packaged_modules_are_found_without_a_checkout_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CORRAL_GO_MODULES", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = build.go_modules_dir()
    assert folder == Path(build.__file__).parent / "go"
    for item in build.COMPONENTS:
        assert (folder / item.module / "go.mod").is_file(), item.module
        assert (folder / item.module / "go.sum").is_file(), item.module


def test_changing_a_go_source_of_the_module_rebuilds_it(modules: Path) -> None:
    binary = build.ensure_built([HELLO])[HELLO]
    (modules / "main.go").write_text(MAIN.format(text="two"))
    assert run(build.ensure_built([HELLO])[HELLO]) == "two"
    assert run(binary) == "two"


def test_without_go_on_path_the_error_says_what_to_install(
    modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(modules))
    with pytest.raises(BuildError, match=r"^the Go toolchain is not on PATH: install Go 1\.26 or newer"):
        build.ensure_built([HELLO])


def test_a_too_old_go_is_refused_before_building(modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "go_version", lambda go: (1, 22))
    with pytest.raises(BuildError, match=r"^Go 1\.22 is too old: corral's pinned modules need Go 1\.26"):
        build.ensure_built([HELLO])


def test_an_unresolvable_module_names_the_module_proxy_and_the_wrapper(
    modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (modules / "go.mod").write_text(
        "module corral.test/hello\n\ngo 1.26.0\n\nrequire corral.invalid/nothing v1.0.0\n"
    )
    (modules / "main.go").write_text('package main\n\nimport _ "corral.invalid/nothing"\n\nfunc main() {}\n')
    monkeypatch.setenv("GOPROXY", "off")
    with pytest.raises(BuildError) as info:
        build.ensure_built([HELLO])
    message = str(info.value)
    assert message.startswith(f"cannot build {HELLO}: a Go module could not be resolved")
    assert "hello/go.mod pins published versions" in message


def test_a_compile_error_is_reported_with_its_last_line_and_leaves_no_binary(modules: Path) -> None:
    (modules / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    with pytest.raises(BuildError, match=r"go build failed: .*undefined: undefinedThing"):
        build.ensure_built([HELLO])
    assert not build.output_dir(build.component(HELLO)).joinpath(HELLO).exists()


def test_unknown_components_are_listed_with_the_known_ones(modules: Path) -> None:
    with pytest.raises(BuildError, match=rf"^unknown component 'kubelet'; known: {HELLO}$"):
        build.ensure_built(["kubelet"])


def test_prebuilt_binaries_are_taken_from_corral_bin_dir_without_building(
    modules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prebuilt"
    folder.mkdir()
    monkeypatch.setenv("CORRAL_BIN_DIR", str(folder))
    with pytest.raises(BuildError, match=rf"has no executable '{HELLO}'"):
        build.ensure_built([HELLO])
    (folder / HELLO).write_text("#!/bin/sh\necho prebuilt\n")
    (folder / HELLO).chmod(0o755)
    assert run(build.ensure_built([HELLO])[HELLO]) == "prebuilt"
    assert not (tmp_path / "cache").exists()


def test_a_missing_modules_folder_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_GO_MODULES", str(tmp_path / "nowhere"))
    with pytest.raises(BuildError, match="is not a folder"):
        build.go_modules_dir()

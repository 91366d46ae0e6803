"""Provider selection, the kubeconfig provider's lookup, and the kind provider's commands and errors."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from corral.cli import main
from corral.controlplane.adopt import KubeconfigProvider
from corral.controlplane.kind import KindProvider, create_command, delete_command, find_engine, kind_config
from corral.controlplane.local import LocalProvider
from corral.controlplane.providers import DEFAULT_PROVIDER, provider_name, select_provider
from corral.errors import ConfigError, ControlPlaneError
from corral.model import Scenario

SMOKE = Scenario.load(Path(__file__).parents[2] / "fixtures" / "scenarios" / "smoke.yaml")


def test_the_local_provider_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_PROVIDER", raising=False)
    assert isinstance(select_provider(), LocalProvider)


def test_the_environment_chooses_the_provider_and_an_explicit_name_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_PROVIDER", "kubeconfig")
    assert isinstance(select_provider(), KubeconfigProvider)
    assert isinstance(select_provider("kind"), KindProvider)


def test_an_unknown_provider_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown provider 'k3d'; choose one of: local, kind, kubeconfig"):
        select_provider("k3d")


def test_provider_name_prefers_the_explicit_name_then_the_environment_then_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CORRAL_PROVIDER", raising=False)
    assert provider_name(None) == DEFAULT_PROVIDER == "local"
    assert provider_name(None, recorded="kind") == "kind"
    monkeypatch.setenv("CORRAL_PROVIDER", "kubeconfig")
    assert provider_name(None, recorded="kind") == "kubeconfig"
    assert provider_name("kind") == "kind"


def test_an_unknown_provider_in_the_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_PROVIDER", "k3d")
    with pytest.raises(ConfigError, match=r"unknown provider 'k3d' \(from CORRAL_PROVIDER\); choose one of"):
        provider_name(None)
    assert provider_name("local") == "local"


def test_local_settings_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="etcd mode"):
        LocalProvider(etcd_mode="many")  # type: ignore[arg-type]
    provider = LocalProvider(webhooks={"c-nowhere": tmp_path / "w.yml"})
    with pytest.raises(ConfigError, match="c-nowhere"):
        provider.up(SMOKE, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_kubeconfig_provider_finds_files_by_rancher_name_and_explicit_mapping_wins(
    tmp_path: Path,
) -> None:
    provider = KubeconfigProvider(source=tmp_path, kubeconfigs={"c-au": Path("/elsewhere/au.yml")})
    assert provider.locate("c-us", tmp_path / "run") == tmp_path / "kube_config_c-us.yml"
    assert provider.locate("c-au", tmp_path / "run") == Path("/elsewhere/au.yml")


def test_the_kubeconfig_provider_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no kubeconfig for cluster 'c-us' at .*kube_config_c-us\.yml"):
        KubeconfigProvider(source=tmp_path).up(SMOKE, tmp_path)


def test_a_kind_config_has_one_control_plane_and_one_worker_per_worker_node() -> None:
    config = kind_config(SMOKE.cluster("c-au"))
    assert config["name"] == "c-au"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert yaml.safe_load(yaml.safe_dump(config)) == config


def test_kind_commands_name_the_cluster_config_and_kubeconfig() -> None:
    assert create_command("kind", "c-us", config=Path("/r/kind-c-us.yaml"), kubeconfig=Path("/r/kc.yml")) == [
        "kind",
        "create",
        "cluster",
        "--name=c-us",
        "--config=/r/kind-c-us.yaml",
        "--kubeconfig=/r/kc.yml",
        "--wait=180s",
    ]
    assert delete_command("kind", "c-us", kubeconfig=Path("/r/kc.yml"))[:4] == [
        "kind",
        "delete",
        "cluster",
        "--name=c-us",
    ]


def fake_run(code: int, stderr: str = ""):  # type: ignore[no-untyped-def]
    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), code, "", stderr)

    return run


def test_without_any_container_engine_kind_fails_clearly_and_suggests_the_local_provider() -> None:
    with pytest.raises(ControlPlaneError) as error:
        find_engine(which=lambda _name: None, run=fake_run(0))
    message = str(error.value)
    assert "neither docker nor podman is on PATH" in message
    assert "local provider" in message


def test_an_engine_whose_daemon_does_not_answer_is_reported_with_its_error() -> None:
    daemon_down = fake_run(1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
    with pytest.raises(
        ControlPlaneError, match=r"docker at /usr/bin/docker: `docker info` failed: Cannot connect"
    ):
        find_engine(which=lambda name: "/usr/bin/docker" if name == "docker" else None, run=daemon_down)


def test_a_working_podman_is_chosen_when_docker_is_absent() -> None:
    assert (
        find_engine(which=lambda name: f"/usr/bin/{name}" if name == "podman" else None, run=fake_run(0))
        == "podman"
    )


def test_cluster_up_refuses_a_missing_scenario_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["cluster", "up", "--scenario", str(tmp_path / "nope.yaml"), "--dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def test_cluster_commands_refuse_an_unknown_provider_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_PROVIDER", "k3d")
    result = CliRunner().invoke(main, ["cluster", "down", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown provider 'k3d' (from CORRAL_PROVIDER)" in result.output


def test_cluster_down_of_a_folder_without_state_succeeds_and_stops_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["cluster", "down", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output

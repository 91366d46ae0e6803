"""The ``kind`` provider: one kind cluster per scenario cluster, where a container engine exists.

kind runs Kubernetes nodes as containers, so it needs docker or podman with a running engine;
without one, ``up`` fails at once with a message that says so and suggests the ``local``
provider. The kind CLI is taken from PATH, or installed with ``go install`` into corral's cache.
Each cluster gets a generated kind config (one control-plane node, one worker per worker-only
node of the scenario) and its admin kubeconfig at ``<run_dir>/kube_config_<cluster>.yml``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from corral.controlplane import build
from corral.controlplane.clusters import ClusterHandle, ClusterSet, Progress, kubeconfig_name
from corral.errors import ControlPlaneError
from corral.k8s import KubeConfig
from corral.model import Scenario
from corral.model.scenario import Cluster

KIND_VERSION = "v0.33.0"
KIND_PACKAGE = f"sigs.k8s.io/kind@{KIND_VERSION}"
ENGINES = ("docker", "podman")
STATE_FILE = "kind.json"

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=600, env=env)


def kind_config(cluster: Cluster) -> dict[str, Any]:
    """A kind cluster config: one control-plane node, one worker per worker-only scenario node."""
    workers = [node for node in cluster.nodes if not node.is_control_plane]
    nodes = [{"role": "control-plane"}] + [{"role": "worker"} for _ in workers]
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": cluster.name, "nodes": nodes}


def create_command(kind: str, cluster: str, *, config: Path, kubeconfig: Path) -> list[str]:
    return [
        kind,
        "create",
        "cluster",
        f"--name={cluster}",
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        "--wait=180s",
    ]


def delete_command(kind: str, cluster: str, *, kubeconfig: Path) -> list[str]:
    return [kind, "delete", "cluster", f"--name={cluster}", f"--kubeconfig={kubeconfig}"]


def find_engine(which: Callable[[str], str | None] = shutil.which, run: Runner = _run) -> str:
    """The first container engine whose daemon answers; `ControlPlaneError` when there is none."""
    found = [(engine, path) for engine in ENGINES if (path := which(engine))]
    problems = []
    for engine, path in found:
        result = run([path, "info"])
        if result.returncode == 0:
            return engine
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        problems.append(f"{engine} at {path}: `{engine} info` failed: {last[0]}")
    detail = "; ".join(problems) if problems else "neither docker nor podman is on PATH"
    raise ControlPlaneError(
        f"the kind provider needs a running container engine ({detail}); "
        "use the local provider (--provider local or CORRAL_PROVIDER=local) instead"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KindProvider:
    """kind clusters for a scenario."""

    kind_binary: str | None = None
    name: str = "kind"

    def ensure_kind(self) -> str:
        """Path of the kind CLI: the configured one, one on PATH, or one installed into the cache."""
        if self.kind_binary:
            return self.kind_binary
        on_path = shutil.which("kind")
        if on_path:
            return on_path
        gobin = build.cache_root() / "bin" / "kind" / KIND_VERSION
        target = gobin / "kind"
        if not target.is_file():
            go = build.go_binary()
            env = {**os.environ, "GOBIN": str(gobin), "CGO_ENABLED": "0"}
            result = _run([go, "install", KIND_PACKAGE], env=env)
            if result.returncode != 0:
                last = result.stderr.strip().splitlines()[-1:] or ["no output"]
                raise ControlPlaneError(f"cannot install kind with `go install {KIND_PACKAGE}`: {last[0]}")
        return str(target)

    def up(self, scenario: Scenario, run_dir: Path, *, progress: Progress | None = None) -> ClusterSet:
        report = progress or (lambda _line: None)
        engine = find_engine()
        kind = self.ensure_kind()
        env = {**os.environ, **({"KIND_EXPERIMENTAL_PROVIDER": "podman"} if engine == "podman" else {})}
        run_dir = run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        handles: dict[str, ClusterHandle] = {}
        created: list[str] = []
        for cluster in scenario.clusters:
            config_path = run_dir / f"kind-{cluster.name}.yaml"
            config_path.write_text(yaml.safe_dump(kind_config(cluster), sort_keys=False))
            kubeconfig = run_dir / kubeconfig_name(cluster.name)
            result = _run(
                create_command(kind, cluster.name, config=config_path, kubeconfig=kubeconfig), env=env
            )
            if result.returncode != 0:
                self._delete(kind, created, run_dir, env)
                last = result.stderr.strip().splitlines()[-1:] or ["no output"]
                raise ControlPlaneError(f"kind could not create cluster {cluster.name!r}: {last[0]}")
            created.append(cluster.name)
            (run_dir / STATE_FILE).write_text(json.dumps({"clusters": created}))
            kubeconfig.chmod(0o600)
            config = KubeConfig.load(kubeconfig)
            handles[cluster.name] = ClusterHandle(
                name=cluster.name, server=config.server, ca_pem=config.ca_pem, kubeconfig=kubeconfig
            )
            report(f"kind cluster {cluster.name} ready at {config.server}")
        return ClusterSet(provider=self.name, run_dir=run_dir, clusters=handles)

    def down(self, run_dir: Path) -> None:
        state = run_dir / STATE_FILE
        if not state.is_file():
            return
        names = list(json.loads(state.read_text()).get("clusters", []))
        self._delete(self.ensure_kind(), names, run_dir, dict(os.environ))
        state.unlink()

    def _delete(self, kind: str, names: list[str], run_dir: Path, env: dict[str, str]) -> None:
        for name in names:
            _run(delete_command(kind, name, kubeconfig=run_dir / kubeconfig_name(name)), env=env)

"""A local bring-up that fails stops what it started and says which process failed and why.

Stand-in binaries (small scripts) play etcd and a kube-apiserver that rejects its flags, so this
runs without the real control plane.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from corral.controlplane import build
from corral.controlplane.local import LocalProvider
from corral.controlplane.processes import ProcessRecord, is_same_process, read_state
from corral.errors import ControlPlaneError
from corral.model import Scenario

FAKE_ETCD = f"""#!{sys.executable}
import http.server, sys
url = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--listen-client-urls="))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{{"health":"true"}}'
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(url.rsplit(":", 1)[1])), H).serve_forever()
"""

FAKE_APISERVER = """#!/bin/sh
echo "I1129 starting kube-apiserver"
echo "Error: unknown flag: --endpoint-reconciler-type"
exit 1
"""

SCENARIO = Scenario.from_dict(
    {
        "name": "f",
        "regions": ["us"],
        "clusters": [{"name": "c1", "region": "us", "nodes": [{"name": "n", "roles": ["controlplane"]}]}],
    }
)


def fake_binaries(folder: Path) -> build.Built:
    folder.mkdir()
    scripts = {
        "etcd": FAKE_ETCD,
        "kube-apiserver": FAKE_APISERVER,
        "kube-controller-manager": "#!/bin/sh\nsleep 60\n",
    }
    paths = {}
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        paths[name] = path
    return build.Built(paths)


def test_an_apiserver_that_exits_fails_the_bring_up_with_its_log_and_nothing_is_left_running(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    provider = LocalProvider(binaries=fake_binaries(tmp_path / "bin"), ready_timeout_seconds=20)
    started: list[str] = []
    with pytest.raises(ControlPlaneError) as error:
        provider.up(SCENARIO, run_dir, progress=started.append)
    message = str(error.value)
    assert "kube-apiserver-c1 exited with status 1" in message
    assert "unknown flag: --endpoint-reconciler-type" in message
    assert started[-1] == "etcd ready (shared: 1 process(es))"
    assert read_state(run_dir) == []
    assert (run_dir / "logs" / "etcd-shared.log").exists()


def test_processes_of_a_failed_bring_up_are_gone_not_just_forgotten(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    provider = LocalProvider(binaries=fake_binaries(tmp_path / "bin"), ready_timeout_seconds=20)
    seen: list[ProcessRecord] = []

    def spy(line: str) -> None:
        seen.extend(r for r in read_state(run_dir) if r not in seen)

    with pytest.raises(ControlPlaneError):
        provider.up(SCENARIO, run_dir, progress=spy)
    assert [r.role for r in seen] == ["etcd"]
    assert not any(is_same_process(r) for r in seen)

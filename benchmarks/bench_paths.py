"""Access paths side by side, each against a baseline measured in the same run on the same apiserver.

Brings up a topology of N downstream clusters with their agents (``corral up``, N = ``--clusters``),
and one more cluster whose kube-apiserver asks a ``corral kube-api-auth`` about bearer tokens (ACE:
``corral up`` does not start one in this bench, so the bench wires it as Rancher does). Then, at a
fixed concurrency, GETs ``/api/v1/namespaces/default``:

* ``upstream-direct`` (client certificate) and ``proxy-direct-dial`` (the server's
  ``/k8s/clusters/local``: the proxy dials the upstream's apiserver itself);
* ``downstream-direct``, ``kubectl-proxy`` and ``proxy-tunnel`` (``/k8s/clusters/<id>``: through
  the cluster agent's tunnel) on the first downstream cluster;
* ``ace-direct`` (certificate) and ``ace`` (a cluster-scoped token the apiserver's webhook checks);
  and ``token-review``: one TokenReview POSTed straight to kube-api-auth (the webhook's own cost).

Per target p50/p99 of every request, the request rate and, for what sits between the client and
the apiserver (the server, plus the cluster's agents for ``proxy-tunnel``; ``kubectl proxy``;
kube-api-auth), the CPU time per request, which a shared machine disturbs far less than rates;
rounds alternate the targets' order and the best round per figure is kept. Every figure is
reported as a ratio against its baseline. Before the traffic, the idle topology's memory and CPU
per cluster (``--clusters N`` gives the largest topology this machine holds); during
``proxy-tunnel``, py-spy samples the server (where the proxy spends its time). Output:
``reports/bench/paths.{json,md,png}`` and the profile's flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import ssl
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from _procs import cpu_seconds

from corral.agent.fleet import list_agents
from corral.auth import hashers
from corral.controlplane import build
from corral.controlplane.local import LocalProvider
from corral.controlplane.processes import free_port
from corral.k8s import KubeConfig
from corral.k8s.aio import AsyncKubeClient
from corral.kubeapiauth import sync, testing
from corral.model import Scenario
from corral.model.stats import quantile
from corral.run.up import down, up

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports" / "bench"
OBJECT_PATH = "/api/v1/namespaces/default"
ACE_CLUSTER = "c-ace"
ACE_USER = "u-bench"
BASELINES = {
    "proxy-direct-dial": "upstream-direct",
    "kubectl-proxy": "downstream-direct",
    "proxy-tunnel": "downstream-direct",
    "ace": "ace-direct",
    "token-review": "ace-direct",
}
ORDER = (
    "upstream-direct",
    "proxy-direct-dial",
    "downstream-direct",
    "kubectl-proxy",
    "proxy-tunnel",
    "ace-direct",
    "ace",
    "token-review",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None
    body: bytes | None = None
    pids: tuple[int, ...] = ()
    """What sits between the client and the apiserver, whose CPU time per request is reported."""


def scenario(clusters: int) -> dict[str, Any]:
    return {
        "name": f"bench-paths-{clusters}",
        "regions": ["us"],
        "server": {"region": "us", "replicas": 1, "workers": 16},
        "clusters": [
            {
                "name": "c-bench-{i:02d}",
                "count": clusters,
                "region": "us",
                "agent": "rke2",
                "agent_replicas": 1,
                "nodes": [{"name": "{cluster}-cp", "roles": ["controlplane", "etcd"]}],
            }
        ],
    }


def cert_target(name: str, kubeconfig: Path, folder: Path) -> Target:
    config = KubeConfig.load(kubeconfig)
    if not (config.ca_pem and config.cert_pem and config.key_pem):
        raise RuntimeError(f"{kubeconfig}: an admin kubeconfig needs a CA and a client certificate")
    tls = ssl.create_default_context(cadata=config.ca_pem.decode())
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(config.cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(config.key_pem)
    tls.load_cert_chain(str(cert), str(key))
    return Target(name=name, url=config.server.rstrip("/") + OBJECT_PATH, tls=tls)


# -- processes the bench starts ----------------------------------------------------------------------


def wait_for_line(process: subprocess.Popen[bytes], log: Path, pattern: str, what: str) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class AceCluster:
    provider: LocalProvider
    run_dir: Path
    auth_url: str
    webhook: Path
    kubeconfig: Path | None = None
    server: str = ""


def ace_cluster(binaries: build.Built, folder: Path) -> AceCluster:
    """A cluster whose apiserver asks kube-api-auth (as Rancher's ACE wires it: a v1beta1 webhook)."""
    hook = testing.webhook(folder, port=free_port())
    provider = LocalProvider(binaries=binaries, webhooks={ACE_CLUSTER: hook.config}, webhook_version=None)
    return AceCluster(provider=provider, run_dir=folder / "ace", auth_url=hook.url, webhook=hook.config)


async def ace_token(kubeconfig: KubeConfig) -> str:
    """A cluster-scoped token of ACE_USER synced as the server's sync would, allowed to read namespaces."""
    alphabet = string.ascii_lowercase + string.digits
    secret = "".join(secrets.choice(alphabet) for _ in range(54))
    name = f"kubeconfig-{ACE_USER}-{secrets.token_hex(3)}"
    token = sync.TokenCopy(
        name=name,
        user_id=ACE_USER,
        cluster=ACE_CLUSTER,
        enabled=True,
        expires_at="",
        hashed=hashers.hash_secret(secret),
    )
    async with AsyncKubeClient(kubeconfig) as client:
        await sync.ensure_crds(client)
        await sync.upsert_user_attribute(client, sync.UserCopy(user_id=ACE_USER, groups=(), enabled=True))
        await sync.upsert_token(client, token, cluster=ACE_CLUSTER)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": ACE_USER}],
        }
        await client.apply("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    return f"{name}:{secret}"


# -- measuring -----------------------------------------------------------------------------------------


async def request(session: aiohttp.ClientSession, target: Target) -> None:
    method = "POST" if target.body is not None else "GET"
    async with session.request(
        method, target.url, headers=target.headers, ssl=target.tls or False, data=target.body
    ) as response:
        data = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: {method} answered {response.status}: {data[:200]!r}")
        if target.body is not None and b'"authenticated":true' not in data.replace(b" ", b""):
            raise RuntimeError(f"{target.name}: the token was not authenticated: {data[:200]!r}")


async def at_concurrency(target: Target, *, clients: int, requests: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(request(session, target) for _ in range(clients)))  # connections, caches
        left = requests
        latencies: list[float] = []

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                begun = time.perf_counter()
                await request(session, target)
                latencies.append(time.perf_counter() - begun)

        begun = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - begun
    return {
        "p50_ms": quantile(latencies, 50) * 1000,
        "p99_ms": quantile(latencies, 99) * 1000,
        "requests_per_second": requests / elapsed,
    }


def measure(
    targets: list[Target], *, rounds: int, clients: int, requests: int
) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {t.name: {} for t in targets}
    for index in range(rounds):
        for target in targets if index % 2 == 0 else list(reversed(targets)):
            cpu_before = cpu_seconds(target.pids)
            figures = asyncio.run(at_concurrency(target, clients=clients, requests=requests))
            if target.pids:  # the warm-up requests (one per client) are counted too
                spent = cpu_seconds(target.pids) - cpu_before
                figures["cpu_us_per_request"] = spent / (requests + clients) * 1e6
            print(
                f"round {index + 1} {target.name}: p50 {figures['p50_ms']:.2f} ms, "
                f"p99 {figures['p99_ms']:.2f} ms, "
                f"{figures['requests_per_second']:.0f} req/s"
                + (f", {figures['cpu_us_per_request']:.0f} us CPU/request" if target.pids else ""),
                file=sys.stderr,
                flush=True,
            )
            kept = best[target.name]
            for key, value in figures.items():
                better = max if key == "requests_per_second" else min
                kept[key] = round(better(kept.get(key, value), value), 3)
    return best


def ratios(best: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, base in BASELINES.items():
        if name in best and base in best:
            out[f"{name}/{base}"] = {
                k: round(best[name][k] / best[base][k], 2)
                for k in best[name]
                if best[base].get(k) and k != "cpu_us_per_request"
            }
    return out


# -- where the proxy spends its time ---------------------------------------------------------------------


def profile(server_pid: int, target: Target, *, clients: int, requests: int, out: Path) -> dict[str, Any]:
    """py-spy samples the server while `target` is driven; the hottest functions, self and total."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (the bench dependency group has it)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".txt")
    argv = [
        spy,
        "record",
        "--pid",
        str(server_pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--nonblocking",
    ]
    with started(argv, out.with_suffix(".log")) as spy_process:
        time.sleep(1.0)
        if spy_process.poll() is not None:
            return {"skipped": f"py-spy could not attach: {out.with_suffix('.log').read_text()[-500:]}"}
        figures = asyncio.run(at_concurrency(target, clients=clients, requests=requests))
        spy_process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy_process.wait(timeout=30)
    if not raw.exists():
        return {"skipped": "py-spy wrote no samples"}
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if f]
        n = int(count)
        samples += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return {
        "samples": samples,
        "during": figures,
        "self": [(f, round(n / samples, 3)) for f, n in own.most_common(15)] if samples else [],
        "total_corral": [
            (f, round(n / samples, 3)) for f, n in total.most_common(200) if "corral/" in f or "corral." in f
        ][:15]
        if samples
        else [],
        "raw": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else raw.name,
    }


def _frame(text: str) -> str:
    """``function (path/to/file.py:line)`` -> ``function (file-from-package.py)``, line dropped."""
    found = re.match(r"(.*) \((.*?):\d+\)$", text.strip())
    if not found:
        return text.strip()
    function, path = found.groups()
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"


# -- memory and CPU per cluster -------------------------------------------------------------------------


def footprint(topology: dict[str, Any], run_dir: Path, *, seconds: float) -> dict[str, Any]:
    """RSS and CPU of the idle topology's processes over `seconds`, grouped per cluster and shared."""
    agents = (
        json.loads((run_dir / "agents.json").read_text()).get("agents", {})
        if (run_dir / "agents.json").exists()
        else {}
    )
    ids = {entry["id"]: name for name, entry in topology["clusters"].items()}
    agent_cluster = {a["pid"]: ids.get(a["cluster"], a["cluster"]) for a in agents.values()}
    procs: list[tuple[str, str | None, psutil.Process]] = []
    for item in topology["processes"]:
        with contextlib.suppress(psutil.Error):
            cluster = item.get("cluster") or agent_cluster.get(item["pid"])
            procs.append((item["role"], cluster, psutil.Process(item["pid"])))
    cpu_before = {}
    for _, _, p in procs:
        with contextlib.suppress(psutil.Error):
            cpu_before[p.pid] = sum(_tree_cpu(p))
    time.sleep(seconds)
    per_cluster: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"rss_mb": 0.0, "cpu_cores": 0.0}
    )
    shared: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"rss_mb": 0.0, "cpu_cores": 0.0})
    per_role: dict[str, list[float]] = collections.defaultdict(list)
    for role, cluster, p in procs:
        with contextlib.suppress(psutil.Error):
            rss = sum(_tree_rss(p)) / 1e6
            cpu = (sum(_tree_cpu(p)) - cpu_before.get(p.pid, 0.0)) / seconds
            bucket = per_cluster[cluster] if cluster else shared[role]
            bucket["rss_mb"] += rss
            bucket["cpu_cores"] += cpu
            per_role[role].append(rss)
    clusters = [v for k, v in per_cluster.items()]
    n = len(clusters) or 1
    mean_rss = sum(c["rss_mb"] for c in clusters) / n
    mean_cpu = sum(c["cpu_cores"] for c in clusters) / n
    shared_rss = sum(v["rss_mb"] for v in shared.values())
    available = psutil.virtual_memory().available / 1e6
    return {
        "clusters": len(clusters),
        "seconds": seconds,
        "per_cluster_mean": {"rss_mb": round(mean_rss, 1), "cpu_cores": round(mean_cpu, 4)},
        "shared": {
            k: {"rss_mb": round(v["rss_mb"], 1), "cpu_cores": round(v["cpu_cores"], 4)}
            for k, v in shared.items()
        },
        "shared_rss_mb": round(shared_rss, 1),
        "rss_mb_by_role_mean": {r: round(sum(v) / len(v), 1) for r, v in per_role.items()},
        "memory_available_mb": round(available),
        "more_clusters_by_memory": int(available // mean_rss) if mean_rss else None,
        "machine_cpus": os.cpu_count(),
    }


def _tree(p: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [p, *p.children(recursive=True)]
    return [p]


def _tree_rss(p: psutil.Process) -> Iterator[int]:
    for q in _tree(p):
        with contextlib.suppress(psutil.Error):
            yield q.memory_info().rss


def _tree_cpu(p: psutil.Process) -> Iterator[float]:
    for q in _tree(p):
        with contextlib.suppress(psutil.Error):
            times = q.cpu_times()
            yield times.user + times.system


# -- the run --------------------------------------------------------------------------------------------


def run(
    *,
    ready_timeout: float = 120.0,
    clusters: int,
    rounds: int,
    clients: int,
    requests: int,
    idle_seconds: float,
    capacity_only: bool,
) -> dict[str, Any]:
    binaries = build.ensure_built((*build.CONTROL_PLANE, "toxiproxy-server"))
    with tempfile.TemporaryDirectory(prefix="corral-bench-paths-") as scratch:
        folder = Path(scratch)
        scenario_file = folder / "scenario.yaml"
        scenario_file.write_text(yaml.safe_dump(scenario(clusters)))
        run_dir = folder / "run"
        begun = time.monotonic()
        topology = up(
            scenario_file,
            run_dir,
            binaries=binaries,
            detached=False,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            ready_timeout_seconds=ready_timeout,
        )
        up_seconds = time.monotonic() - begun
        try:
            capacity = footprint(topology, run_dir, seconds=idle_seconds)
            capacity["up_seconds"] = round(up_seconds, 1)
            print(f"footprint: {json.dumps(capacity)}", file=sys.stderr, flush=True)
            if capacity_only:
                return {"benchmark": "paths", "machine": _machine(), "capacity": capacity}
            paths = _paths(topology, binaries, folder, rounds=rounds, clients=clients, requests=requests)
        finally:
            down(run_dir)
    return {"benchmark": "paths", "machine": _machine(), "capacity": capacity, **paths}


def _paths(
    topology: dict[str, Any], binaries: build.Built, folder: Path, *, rounds: int, clients: int, requests: int
) -> dict[str, Any]:
    first = sorted(topology["clusters"])[0]
    entry = topology["clusters"][first]
    server = topology["server"]
    server_pid = next(p["pid"] for p in topology["processes"] if p["role"] == "server")
    agents = tuple(a.pid for a in list_agents(folder / "run") if a.cluster == entry["id"] and a.pid)
    token = Path(server["admin"]["token_file"]).read_text().strip()
    server_tls = ssl.create_default_context(cafile=server["ca_file"])
    bearer = {"Authorization": f"Bearer {token}"}
    targets = [
        cert_target("upstream-direct", Path(topology["upstream"]["admin_kubeconfig"]), folder),
        Target(
            name="proxy-direct-dial",
            url=f"{server['url']}/k8s/clusters/local{OBJECT_PATH}",
            headers=bearer,
            tls=server_tls,
            pids=(server_pid,),
        ),
        cert_target("downstream-direct", Path(entry["admin_kubeconfig"]), folder),
        Target(
            name="proxy-tunnel",
            url=f"{server['url']}/k8s/clusters/{entry['id']}{OBJECT_PATH}",
            headers=bearer,
            tls=server_tls,
            pids=(server_pid, *agents),
        ),
    ]
    ace = ace_cluster(binaries, folder)
    kubectl = str(topology.get("kubectl") or binaries["kubectl"])
    proxy_argv = [
        kubectl,
        "--kubeconfig",
        str(entry["admin_kubeconfig"]),
        "proxy",
        "--address=127.0.0.1",
        "--port=0",
    ]
    try:
        handle = ace.provider.up(Scenario.from_dict(_ace_scenario()), ace.run_dir)[ACE_CLUSTER]
        auth_port = ace.auth_url.rpartition(":")[2]
        auth_argv = [
            sys.executable,
            "-m",
            "corral",
            "kube-api-auth",
            f"--listen=127.0.0.1:{auth_port}",
            f"--kubeconfig={handle.kubeconfig}",
        ]
        bearer_token = asyncio.run(ace_token(handle.admin_config()))
        with (
            started(proxy_argv, folder / "kubectl-proxy.log") as kubectl_proxy,
            started(auth_argv, folder / "kube-api-auth.log") as auth,
        ):
            port = wait_for_line(
                kubectl_proxy,
                folder / "kubectl-proxy.log",
                r"Starting to serve on 127\.0\.0\.1:(\d+)",
                "kubectl proxy",
            ).group(1)
            wait_for_line(auth, folder / "kube-api-auth.log", r"kube-api-auth listening on", "kube-api-auth")
            review = {
                "apiVersion": "authentication.k8s.io/v1beta1",
                "kind": "TokenReview",
                "spec": {"token": bearer_token},
            }
            targets[3:3] = [
                Target(
                    name="kubectl-proxy",
                    url=f"http://127.0.0.1:{port}{OBJECT_PATH}",
                    pids=(kubectl_proxy.pid,),
                )
            ]
            targets += [
                cert_target("ace-direct", handle.kubeconfig, folder),
                Target(
                    name="ace",
                    url=handle.server.rstrip("/") + OBJECT_PATH,
                    headers={"Authorization": f"Bearer {bearer_token}"},
                    tls=ssl.create_default_context(cadata=(handle.ca_pem or b"").decode()),
                ),
                Target(
                    name="token-review",
                    url=f"{ace.auth_url}/v1/authenticate",
                    headers={"Content-Type": "application/json"},
                    body=json.dumps(review).encode(),
                    pids=(auth.pid,),
                ),
            ]
            rss_before = _rss(
                {"server": server_pid, "kubectl-proxy": kubectl_proxy.pid, "kube-api-auth": auth.pid}
            )
            best = measure(targets, rounds=rounds, clients=clients, requests=requests)
            tunnel = next(t for t in targets if t.name == "proxy-tunnel")
            spent = profile(
                server_pid, tunnel, clients=clients, requests=requests * 2, out=REPORTS / "paths-profile"
            )
            rss_after = _rss(
                {"server": server_pid, "kubectl-proxy": kubectl_proxy.pid, "kube-api-auth": auth.pid}
            )
    finally:
        ace.provider.down(ace.run_dir)
    return {
        "cluster": first,
        "path": OBJECT_PATH,
        "rounds": rounds,
        "clients": clients,
        "requests_per_round": requests,
        "best": best,
        "ratios": ratios(best),
        "added_p50_ms": {
            n: round(best[n]["p50_ms"] - best[b]["p50_ms"], 3)
            for n, b in BASELINES.items()
            if n in best and b in best
        },
        "rss_mb": {"before": rss_before, "after": rss_after},
        "profile": spent,
    }


def _ace_scenario() -> dict[str, Any]:
    return {
        "name": "bench-ace",
        "regions": ["us"],
        "clusters": [
            {"name": ACE_CLUSTER, "region": "us", "nodes": [{"name": "c-ace-cp", "roles": ["controlplane"]}]}
        ],
    }


def _rss(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            out[name] = round(psutil.Process(pid).memory_info().rss / 1e6, 1)
    return out


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load": os.getloadavg(),
        "memory_mb": round(psutil.virtual_memory().total / 1e6),
    }


# -- output ---------------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    cap = result["capacity"]
    lines = []
    if "best" in result:
        best, rat = result["best"], result["ratios"]
        lines += [
            f"GET {result['path']} as an admin (ACE: a cluster-scoped token), {result['clients']} concurrent "
            f"clients, {result['requests_per_round']} requests per round, best of {result['rounds']} rounds.",
            "",
            "| target | p50 ms | p99 ms | req/s | CPU µs/request between client and apiserver |",
            "|---|---|---|---|---|",
            *(
                f"| {n} | {best[n]['p50_ms']:.2f} | {best[n]['p99_ms']:.2f} | "
                f"{best[n]['requests_per_second']:.0f} | "
                + (f"{best[n]['cpu_us_per_request']:.0f} |" if "cpu_us_per_request" in best[n] else "- |")
                for n in ORDER
                if n in best
            ),
            "",
            "| ratio (path / its baseline) | p50 | p99 | req/s |",
            "|---|---|---|---|",
            *(
                f"| {n} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_second']:.2f} |"
                for n, r in rat.items()
            ),
            "",
        ]
        spent = result["profile"]
        if "skipped" in spent:
            lines += [f"Profile skipped: {spent['skipped']}", ""]
        else:
            lines += [
                "Where the server spends its time under proxy-tunnel load "
                f"({spent['samples']} py-spy samples); "
                "share of samples:",
                "",
                "| function (self) | share |",
                "|---|---|",
                *(f"| `{f}` | {s:.3f} |" for f, s in spent["self"][:12]),
                "",
                "| corral function (inclusive) | share |",
                "|---|---|",
                *(f"| `{f}` | {s:.3f} |" for f, s in spent["total_corral"][:12]),
                "",
            ]
    lines += [
        f"Idle footprint of {cap['clusters']} downstream cluster(s) with their agents, "
        f"over {cap['seconds']:g} s: {cap['per_cluster_mean']['rss_mb']} MB and "
        f"{cap['per_cluster_mean']['cpu_cores']} cores per cluster; "
        f"shared (upstream, server, toxiproxy if any): {cap['shared_rss_mb']} MB. With "
        f"{cap['memory_available_mb']} MB still available, memory allows about "
        f"{cap['more_clusters_by_memory']} more. `corral up` took {cap['up_seconds']} s.",
        "",
        "| role | mean RSS MB |",
        "|---|---|",
        *(f"| {r} | {v} |" for r, v in sorted(cap["rss_mb_by_role_mean"].items())),
        "",
        f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['memory_mb']} MB; "
        "load average at the end " + ", ".join(f"{x:.2f}" for x in result["machine"]["load"]) + ".",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rat = result["ratios"]
    names = list(rat)
    keys = ("p50_ms", "p99_ms", "requests_per_second")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.27
    for offset, key in enumerate(keys):
        ax.bar(
            [i + (offset - 1) * width for i in range(len(names))],
            [rat[n].get(key, 0) for n in names],
            width,
            label=key,
        )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), [n.replace("/", "\n/ ") for n in names], fontsize=8)
    ax.set_ylabel("ratio against the baseline")
    ax.set_title(f"Access paths, {result['clients']} concurrent clients (best of {result['rounds']} rounds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=3, help="downstream clusters with agents (default 3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients per target")
    parser.add_argument("--requests", type=int, default=800, help="requests per target and round")
    parser.add_argument("--idle-seconds", type=float, default=15.0, help="window of the footprint")
    parser.add_argument(
        "--capacity-only", action="store_true", help="only the footprint of --clusters clusters"
    )
    parser.add_argument("--name", default="", help="output name (default paths, or capacity-N)")
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds each step of corral up may take"
    )
    args = parser.parse_args()
    if args.clusters < 1:
        parser.error("--clusters must be at least 1")
    result = run(
        clusters=args.clusters,
        rounds=args.rounds,
        clients=args.clients,
        requests=args.requests,
        idle_seconds=args.idle_seconds,
        capacity_only=args.capacity_only,
        ready_timeout=args.ready_timeout,
    )
    REPORTS.mkdir(parents=True, exist_ok=True)
    name = args.name or (f"capacity-{args.clusters}" if args.capacity_only else "paths")
    (REPORTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (REPORTS / f"{name}.md").write_text(text)
    if "ratios" in result:
        plot(result, REPORTS / f"{name}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

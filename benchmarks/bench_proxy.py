"""Proxy benchmark: corral's authenticating proxy against a direct apiserver call and `kubectl proxy`.

Brings up the smoke scenario with ``corral up`` into a temporary run folder (``--dir RUN`` reuses a
folder where ``corral up`` already ran and leaves it running), then, in one run and with the same
load, GETs one object (``/api/v1/namespaces/default`` of one downstream cluster) as the admin:

* ``direct``: the downstream apiserver with the cluster's admin kubeconfig (client certificate);
* ``kubectl-proxy``: the built ``kubectl proxy`` on loopback, with the same kubeconfig;
* ``corral``: the server's ``/k8s/clusters/<id>/...`` with the admin's token from ``topology.json``.

Per target: p50/p99 latency of N sequential requests on one keep-alive connection, and the request
rate of 50 concurrent clients (aiohttp). Targets alternate within each round and the best round per
metric is kept, so a burst of load from elsewhere on the machine spoils one round, not the figure.
Ratios are against ``direct`` and against ``kubectl-proxy``; the RSS of the server process and of
``kubectl proxy`` are read before and after. The CPU time per request of what sits between the
client and the apiserver (``kubectl proxy``; the server and the cluster's agents) is read around
each throughput round: unlike rates, it changes little when other work shares the machine.
Output: ``reports/bench/proxy.json``, ``proxy.md`` and the Markdown on stdout. No timing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from _procs import cpu_seconds

from corral.agent.fleet import list_agents
from corral.k8s import KubeConfig
from corral.model.stats import quantile
from corral.run.topology import read_topology

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "bench" / "proxy.json"
SCENARIO = ROOT / "fixtures" / "scenarios" / "smoke.yaml"
OBJECT_PATH = "/api/v1/namespaces/default"
CONCURRENT_CLIENTS = 50
TARGETS = ("direct", "kubectl-proxy", "corral")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str
    url: str
    headers: dict[str, str]
    tls: ssl.SSLContext | None
    pids: tuple[int, ...] = ()
    """The processes between the client and the apiserver, whose CPU time per request is reported."""


def _rss_mb(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 1e6, 1)


def _corral(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "corral", *args], check=True, cwd=ROOT)


def _direct_target(kubeconfig: Path, folder: Path) -> Target:
    config = KubeConfig.load(kubeconfig)
    if not (config.ca_pem and config.cert_pem and config.key_pem):
        raise RuntimeError(f"{kubeconfig}: the admin kubeconfig needs a CA and a client certificate")
    tls = ssl.create_default_context(cadata=config.ca_pem.decode())
    cert, key = folder / "admin.crt", folder / "admin.key"
    cert.write_bytes(config.cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(config.key_pem)
    tls.load_cert_chain(str(cert), str(key))
    return Target(name="direct", url=config.server.rstrip("/") + OBJECT_PATH, headers={}, tls=tls)


def _start_kubectl_proxy(kubectl: str, kubeconfig: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    argv = [kubectl, "--kubeconfig", str(kubeconfig), "proxy", "--address=127.0.0.1", "--port=0"]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"Starting to serve on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"kubectl proxy did not start:\n{log.read_text(errors='replace')[-2000:]}")


async def _get(session: aiohttp.ClientSession, target: Target) -> None:
    async with session.get(target.url, headers=target.headers, ssl=target.tls or False) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: GET {OBJECT_PATH} answered {response.status}")


async def _sequential(target: Target, requests: int) -> list[float]:
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # the connection, TLS and the proxy's caches warm
            await _get(session, target)
        latencies = []
        for _ in range(requests):
            started = time.perf_counter()
            await _get(session, target)
            latencies.append(time.perf_counter() - started)
    return latencies


async def _throughput(target: Target, requests: int, clients: int) -> float:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(_get(session, target) for _ in range(clients)))  # open the connections
        left = requests

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await _get(session, target)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return requests / (time.perf_counter() - started)


async def _measure(targets: list[Target], *, rounds: int, requests: int, concurrent: int) -> dict[str, Any]:
    best: dict[str, dict[str, float]] = {t.name: {} for t in targets}
    for index in range(rounds):
        order = targets if index % 2 == 0 else list(reversed(targets))
        for target in order:
            latencies = await _sequential(target, requests)
            cpu_before = cpu_seconds(target.pids)
            rate = await _throughput(target, concurrent, CONCURRENT_CLIENTS)
            cpu_us = (cpu_seconds(target.pids) - cpu_before) / concurrent * 1e6
            figures = {
                "p50_ms": quantile(latencies, 50) * 1000,
                "p99_ms": quantile(latencies, 99) * 1000,
                "requests_per_second": rate,
                "proxy_cpu_us_per_request": cpu_us,
            }
            print(
                f"round {index + 1} {target.name}: p50 {figures['p50_ms']:.2f} ms, "
                f"p99 {figures['p99_ms']:.2f} ms, {rate:.0f} req/s, {cpu_us:.0f} us CPU/request",
                file=sys.stderr,
                flush=True,
            )
            kept = best[target.name]
            for key, value in figures.items():
                better = max if key == "requests_per_second" else min  # CPU: the least one round used
                kept[key] = round(better(kept.get(key, value), value), 3)
    return best


def _ratios(best: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for base in ("direct", "kubectl-proxy"):
        for name in TARGETS:
            if name == base:
                continue
            out[f"{name}/{base}"] = {
                key: round(best[name][key] / best[base][key], 2)
                for key in best[name]
                if key != "proxy_cpu_us_per_request" and best[base][key]
            }
    return out


def run(run_dir: Path | None, *, cluster: str, rounds: int, requests: int, concurrent: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-proxy-") as scratch:
        folder = Path(scratch)
        owned = run_dir is None
        run_dir = run_dir or folder / "run"
        if owned:
            started = time.monotonic()
            _corral("up", "--scenario", str(SCENARIO), "--dir", str(run_dir))
            print(f"corral up took {time.monotonic() - started:.1f}s", file=sys.stderr)
        proxy = None
        try:
            topology = read_topology(run_dir)
            entry = topology["clusters"][cluster]
            server = topology["server"]
            server_pid = next(p["pid"] for p in topology["processes"] if p["role"] == "server")
            admin_token = Path(server["admin"]["token_file"]).read_text().strip()
            agents = tuple(a.pid for a in list_agents(run_dir) if a.cluster == entry["id"] and a.pid)
            corral = Target(
                name="corral",
                url=f"{server['url'].rstrip('/')}/k8s/clusters/{entry['id']}{OBJECT_PATH}",
                headers={"Authorization": f"Bearer {admin_token}"},
                tls=ssl.create_default_context(cafile=server["ca_file"]),
                pids=(server_pid, *agents),
            )
            admin_kubeconfig = Path(entry["admin_kubeconfig"])
            direct = _direct_target(admin_kubeconfig, folder)
            kubectl = topology.get("kubectl") or "kubectl"
            proxy, port = _start_kubectl_proxy(kubectl, admin_kubeconfig, folder / "kubectl-proxy.log")
            via_kubectl = Target(
                name="kubectl-proxy",
                url=f"http://127.0.0.1:{port}{OBJECT_PATH}",
                headers={},
                tls=None,
                pids=(proxy.pid,),
            )
            rss_before = {"server": _rss_mb(server_pid), "kubectl-proxy": _rss_mb(proxy.pid)}
            best = asyncio.run(
                _measure(
                    [direct, via_kubectl, corral], rounds=rounds, requests=requests, concurrent=concurrent
                )
            )
            rss_after = {"server": _rss_mb(server_pid), "kubectl-proxy": _rss_mb(proxy.pid)}
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait(timeout=10)
            if owned:
                _corral("down", "--dir", str(run_dir))
    return {
        "benchmark": "proxy",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "cluster": cluster,
        "path": OBJECT_PATH,
        "rounds": rounds,
        "sequential_requests": requests,
        "concurrent_requests": concurrent,
        "concurrent_clients": CONCURRENT_CLIENTS,
        "best": best,
        "ratios": _ratios(best),
        "added_p50_ms_over_direct": round(best["corral"]["p50_ms"] - best["direct"]["p50_ms"], 3),
        "rss_mb": {"before": rss_before, "after": rss_after},
    }


def markdown(result: dict[str, Any]) -> str:
    best, ratios = result["best"], result["ratios"]
    lines = [
        f"GET {result['path']} of {result['cluster']} as the admin; best of {result['rounds']} rounds; "
        f"{result['sequential_requests']} sequential requests (one keep-alive connection), "
        f"{result['concurrent_requests']} requests from {result['concurrent_clients']} concurrent clients.",
        "",
        "| target | p50 ms | p99 ms | req/s (50 clients) | proxy CPU µs/request |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {best[name]['p50_ms']:.2f} | {best[name]['p99_ms']:.2f} | "
            f"{best[name]['requests_per_second']:.0f} | {best[name]['proxy_cpu_us_per_request']:.0f} |"
            for name in TARGETS
        ),
        "",
        "| ratio | p50 | p99 | req/s |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_second']:.2f} |"
            for name, r in ratios.items()
        ),
        "",
        f"corral adds {result['added_p50_ms_over_direct']:.2f} ms at p50 over a direct call. "
        f"RSS: server {result['rss_mb']['before']['server']} MB before, "
        f"{result['rss_mb']['after']['server']} MB after; kubectl proxy "
        f"{result['rss_mb']['after']['kubectl-proxy']} MB after. "
        f"Load average at the end: {', '.join(f'{x:.2f}' for x in result['machine']['load'])} "
        f"on {result['machine']['cpus']} CPUs.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="reuse a run folder of `corral up`")
    parser.add_argument("--cluster", default="c-us", help="scenario cluster to GET from (default c-us)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per round")
    parser.add_argument("--concurrent", type=int, default=3000, help="requests per throughput round")
    args = parser.parse_args()
    result = run(
        args.dir, cluster=args.cluster, rounds=args.rounds, requests=args.requests, concurrent=args.concurrent
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    REPORT.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

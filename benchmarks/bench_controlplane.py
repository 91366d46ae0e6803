"""Benchmark of local control planes: build cost, bring-up time and memory, shared vs per-cluster etcd.

Reports medians over a few repetitions as JSON (``reports/bench/controlplane.json``) and a Markdown
table on stdout. Build numbers are read from the stamp files `corral build` writes and from
``/usr/bin/time -v`` files (``<name>.time``) in a folder given by ``--build-times``; ``--cold`` (or
``CORRAL_BENCH_COLD=1``) also measures a cold build of the control plane: an empty Go build cache
and a temporary corral cache, with Go's module download cache kept (downloads are not timed).
That takes minutes, so it is opt-in. Bring-ups use the cached binaries in temporary folders.

    python benchmarks/bench_controlplane.py [--repeat 3] [--build-times DIR] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from corral.controlplane import build
from corral.controlplane.local import LocalProvider
from corral.controlplane.processes import read_state
from corral.model import Scenario

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "bench" / "controlplane.json"
SETTLE_SECONDS = 3.0


def scenario(clusters: int) -> Scenario:
    return Scenario.from_dict(
        {
            "name": f"bench-{clusters}",
            "regions": ["us"],
            "clusters": [
                {"name": f"b{i}", "region": "us", "nodes": [{"name": f"b{i}-cp", "roles": ["controlplane"]}]}
                for i in range(clusters)
            ],
        }
    )


def build_numbers(time_dir: Path | None) -> dict[str, Any]:
    """Per component: the seconds of the last `corral build` (stamp) and /usr/bin/time data if given."""
    result: dict[str, Any] = {}
    for item in build.COMPONENTS:
        entry: dict[str, Any] = {}
        stamp = build.output_dir(item) / f".{item.name}.stamp"
        if stamp.is_file():
            entry["last_build_seconds"] = json.loads(stamp.read_text()).get("seconds")
        if time_dir is not None:
            for candidate in (
                time_dir / f"{item.name}.time",
                time_dir / f"{item.name.replace('toxiproxy', 'toxi')}.time",
            ):
                if candidate.is_file():
                    entry.update(_parse_time_v(candidate.read_text()))
                    break
        result[item.name] = entry
    return result


def cold_build() -> dict[str, Any]:
    """Build the control plane from an empty Go build cache, in build order; seconds per component."""
    saved = {key: os.environ.get(key) for key in ("GOCACHE", "CORRAL_CACHE_DIR", "CORRAL_BIN_DIR")}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="corral-cold-build-") as folder:
        os.environ["GOCACHE"] = str(Path(folder) / "gocache")
        os.environ["CORRAL_CACHE_DIR"] = str(Path(folder) / "cache")
        os.environ.pop("CORRAL_BIN_DIR", None)
        try:
            for name in build.CONTROL_PLANE:
                started = time.monotonic()
                build.ensure_built([name], force=True)
                seconds[name] = round(time.monotonic() - started, 1)
                print(f"cold build of {name}: {seconds[name]} s", file=sys.stderr, flush=True)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    # ru_maxrss of waited-for children: the largest compiler or linker process of the whole build.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "peak_child_rss_mb": round(peak_mb, 1),
    }


def _parse_time_v(text: str) -> dict[str, float]:
    data: dict[str, float] = {}
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if elapsed:
        seconds = 0.0
        for part in elapsed.group(1).split(":"):
            seconds = seconds * 60 + float(part)
        data["cold_wall_seconds"] = round(seconds, 1)
    for key, pattern in (
        ("cold_user_seconds", r"User time \(seconds\): ([\d.]+)"),
        ("cold_system_seconds", r"System time \(seconds\): ([\d.]+)"),
    ):
        match = re.search(pattern, text)
        if match:
            data[key] = float(match.group(1))
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        data["cold_peak_rss_mb"] = round(int(rss.group(1)) / 1024, 1)
    return data


def bring_up(clusters: int, etcd_mode: str, binaries: build.Built) -> dict[str, Any]:
    """One bring-up: seconds until every cluster is usable, then RSS by role after settling."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as folder:
        run_dir = Path(folder)
        provider = LocalProvider(binaries=binaries, etcd_mode=etcd_mode)  # type: ignore[arg-type]
        started = time.monotonic()
        provider.up(scenario(clusters), run_dir)
        seconds = time.monotonic() - started
        try:
            time.sleep(SETTLE_SECONDS)
            rss: dict[str, list[float]] = {}
            for record in read_state(run_dir):
                try:
                    mb = psutil.Process(record.pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                rss.setdefault(record.role, []).append(mb)
        finally:
            provider.down(run_dir)
    return {"seconds": seconds, "rss_mb": rss}


def measure(clusters: int, etcd_mode: str, repeat: int, binaries: build.Built) -> dict[str, Any]:
    runs = [bring_up(clusters, etcd_mode, binaries) for _ in range(repeat)]
    roles = sorted({role for run in runs for role in run["rss_mb"]})
    per_process = {
        role: round(statistics.median(mb for run in runs for mb in run["rss_mb"].get(role, [])), 1)
        for role in roles
    }
    total = statistics.median(sum(sum(values) for values in run["rss_mb"].values()) for run in runs)
    return {
        "clusters": clusters,
        "etcd_mode": etcd_mode,
        "repeat": repeat,
        "bring_up_seconds_median": round(statistics.median(run["seconds"] for run in runs), 2),
        "bring_up_seconds_all": [round(run["seconds"], 2) for run in runs],
        "rss_mb_per_process_median": per_process,
        "rss_mb_total_median": round(total, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    header = (
        "clusters",
        "etcd",
        "bring-up median (s)",
        "total RSS (MB)",
        "apiserver RSS",
        "KCM RSS",
        "etcd RSS",
    )
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in report["bring_up"]:
        rss = row["rss_mb_per_process_median"]
        cells = (
            row["clusters"],
            row["etcd_mode"],
            row["bring_up_seconds_median"],
            row["rss_mb_total_median"],
            rss.get("kube-apiserver", "-"),
            rss.get("kube-controller-manager", "-"),
            rss.get("etcd", "-"),
        )
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += ["", "| component | last build (s) | cold wall (s) | cold peak RSS (MB) |", "|---|---|---|---|"]
    for name, entry in report["build"].items():
        lines.append(
            f"| {name} | {entry.get('last_build_seconds', '-')} | {entry.get('cold_wall_seconds', '-')} "
            f"| {entry.get('cold_peak_rss_mb', '-')} |"
        )
    cold = report.get("cold_build")
    if cold:
        parts = ", ".join(f"{name} {secs} s" for name, secs in cold["seconds"].items())
        lines += [
            "",
            f"cold build (empty Go build cache): {cold['total_seconds']} s in all ({parts}); "
            f"largest compiler/linker process {cold['peak_child_rss_mb']} MB",
        ]
    ratio = report.get("shared_vs_per_cluster")
    if ratio:
        lines += [
            "",
            f"3 clusters, shared etcd vs one etcd per cluster: bring-up x{ratio['bring_up_ratio']}, "
            f"total RSS x{ratio['rss_ratio']}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="bring-ups per configuration (median reported)")
    parser.add_argument("--build-times", type=Path, default=None, help="folder of /usr/bin/time -v outputs")
    parser.add_argument(
        "--cold",
        action="store_true",
        default=os.environ.get("CORRAL_BENCH_COLD") == "1",
        help="also time a cold build of the control plane (minutes)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 20:
        parser.error(f"--repeat must be between 1 and 20, got {args.repeat}")

    cold = cold_build() if args.cold else None
    binaries = build.ensure_built(build.CONTROL_PLANE)
    rows = [
        measure(1, "shared", args.repeat, binaries),
        measure(3, "shared", args.repeat, binaries),
        measure(3, "per-cluster", args.repeat, binaries),
    ]
    shared, separate = rows[1], rows[2]
    report = {
        "kubernetes": build.KUBERNETES_VERSION,
        "etcd": build.ETCD_VERSION,
        "cpus": psutil.cpu_count(),
        "build": build_numbers(args.build_times),
        "cold_build": cold,
        "bring_up": rows,
        "shared_vs_per_cluster": {
            "bring_up_ratio": round(
                shared["bring_up_seconds_median"] / separate["bring_up_seconds_median"], 2
            ),
            "rss_ratio": round(shared["rss_mb_total_median"] / separate["rss_mb_total_median"], 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The plot of a sweep: p95 latency per access path against the first grid parameter.

One line per access path and per combination of the other parameters, so an RTT x clusters grid
shows how latency grows with distance at each fleet size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from corral.model import ACCESS_PATHS


def plot_sweep(rows: list[dict[str, Any]], parameters: list[str], path: Path, *, title: str) -> Path:
    x_name, others = parameters[0], parameters[1:]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row[name]) for name in others), []).append(row)
    for key, members in groups.items():
        label_rest = ", ".join(f"{name}={value}" for name, value in zip(others, key, strict=True))
        for path_name in ACCESS_PATHS:
            column = f"{path_name}_p95_seconds"
            points = [
                (_number(row[x_name]), row[column]) for row in members if row.get(column) not in ("", None)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                label = path_name + (f" ({label_rest})" if label_rest else "")
                ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(x_name)
    ax.set_ylabel("p95 latency of served requests (s)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _number(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)

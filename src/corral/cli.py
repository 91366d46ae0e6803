"""The `corral` command: a thin layer over importable functions.

Each command validates its options and calls one function of the package; the tests call the
same functions. Options can also come from ``CORRAL_<OPTION>`` environment variables.
"""

from __future__ import annotations

import sys
import time

import click

from corral import __version__, logs
from corral.errors import CorralError


class _ProgressLine:
    """One self-overwriting status line on a terminal; plain periodic lines elsewhere."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._started: dict[str, float] = {}
        self._last_print = 0.0

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        started = self._started.setdefault(name, now)
        elapsed = int(now - started)
        finished = total > 0 and done >= total
        text = f"building {name}: {done}/{total or '?'} packages, {elapsed // 60}m{elapsed % 60:02d}s"
        if self._tty:
            click.echo("\r" + text.ljust(78), nl=finished, err=True)
        elif finished or now - self._last_print >= 15 or done == 0:
            click.echo(text, err=True)
            self._last_print = now


@click.group(context_settings={"auto_envvar_prefix": "CORRAL", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
@click.option("--log-level", default="WARNING", show_default=True, help="Level of corral's own logs.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def main(log_level: str, log_format: str) -> None:
    """Simulate and check Rancher-style multi-cluster management."""
    logs.configure(log_level, "json" if log_format == "json" else "text")


@main.command()
@click.argument("components", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Build every known component.")
@click.option("--force", is_flag=True, help="Rebuild even when the cache is up to date.")
def build(components: tuple[str, ...], build_all: bool, force: bool) -> None:
    """Build the Go binaries corral runs (default: the control plane) and print their paths."""
    from corral.controlplane import build as builder

    if build_all:
        names: tuple[str, ...] = tuple(c.name for c in builder.COMPONENTS)
    else:
        names = components or builder.CONTROL_PLANE
    try:
        built = builder.ensure_built(names, progress=_ProgressLine(), force=force)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    for name in names:
        click.echo(f"{name}\t{built[name]}")

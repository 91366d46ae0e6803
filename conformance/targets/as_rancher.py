"""A ``corral up`` topology presented as a Rancher: the ``--corral-target rancher`` options that point at it.

corral's server speaks Rancher's v3 API and proxy, so the suites selected for a real Rancher run against
it unchanged: its URL, CA and admin token file, and each downstream cluster's admin kubeconfig, all read
from ``RUN/topology.json``. ``python -m conformance.targets.as_rancher RUN`` prints the options one per
line (``nox -s rancher`` passes them to pytest).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from conformance.targets.reference import read_topology
from corral.errors import CorralError

logger = logging.getLogger(__name__)


def rancher_options(run_dir: Path) -> list[str]:
    """pytest options for ``--corral-target rancher`` against the topology in ``run_dir``."""
    document = read_topology(run_dir)
    server = document["server"]
    options = [
        "--corral-target=rancher",
        f"--rancher-url={server['url']}",
        f"--rancher-token-file={server['admin']['token_file']}",
        f"--rancher-ca={server['ca_file']}",
    ]
    options += [
        f"--rancher-cluster={name}={entry['admin_kubeconfig']}"
        for name, entry in document["clusters"].items()
    ]
    return options


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m conformance.targets.as_rancher RUN_DIR\n")
        return 2
    try:
        options = rancher_options(Path(args[0]).resolve())
    except CorralError as e:
        sys.stderr.write(f"as_rancher: {e}\n")
        return 2
    sys.stdout.write("\n".join(options) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""corral's pytest plugin: real Kubernetes control planes, a scenario and clients as fixtures.

Installed with corral (entry point ``pytest11``), so any suite in the same environment can use
`corral_binaries`, `corral_scenario`, `cluster_set` and `kube`. Tests that need real clusters
(marked ``cluster``, or using one of those cluster fixtures) run only with ``--with-clusters``;
without it they are deselected with one summary line, and with it a build or bring-up failure is
an error, never a skip. Tests marked ``local_only`` are deselected on the other providers.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from corral.bundled import scenario_path
from corral.controlplane import build, providers
from corral.controlplane.clusters import ClusterSet
from corral.controlplane.providers import DEFAULT_PROVIDER, PROVIDERS, select_provider
from corral.errors import ConfigError, CorralError
from corral.k8s import KubeClient
from corral.model import Scenario

logger = logging.getLogger(__name__)

#: Fixtures that build or start real control planes: a test using one is marked ``cluster``.
CLUSTER_FIXTURES = frozenset({"corral_binaries", "cluster_set", "kube"})

_SUMMARY = pytest.StashKey[list[str]]()
_SIGTERM_SET = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("corral", "corral: real Kubernetes control planes")
    group.addoption(
        "--with-clusters",
        action="store_true",
        default=False,
        help="run the tests that need real clusters (marked `cluster`); without it they are deselected",
    )
    group.addoption(
        "--corral-provider",
        default=None,
        metavar="NAME",
        help=f"where clusters come from: {', '.join(PROVIDERS)} (default {DEFAULT_PROVIDER}); "
        "env CORRAL_PROVIDER",
    )
    group.addoption(
        "--corral-scenario",
        default=None,
        metavar="PATH",
        help="the scenario file whose clusters `cluster_set` brings up (default: corral's smoke scenario)",
    )
    group.addoption(
        "--keep-clusters",
        action="store_true",
        default=False,
        help="leave the clusters running after the session (their run folder is printed)",
    )


def provider_name(config: pytest.Config) -> str:
    """The provider of this session: ``--corral-provider``, else ``CORRAL_PROVIDER``, else local."""
    try:
        return providers.provider_name(config.getoption("corral_provider"))
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from e


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs real clusters from a provider; runs only with --with-clusters"
    )
    config.addinivalue_line(
        "markers", "local_only: holds only on the local provider; deselected on the other providers"
    )
    config.stash[_SUMMARY] = []
    provider_name(config)  # an unknown provider stops the session here, before collection
    scenario = config.getoption("corral_scenario")
    if scenario and not (config.invocation_params.dir / scenario).is_file():
        raise pytest.UsageError(f"--corral-scenario {scenario}: no such file")
    # Cluster processes run in sessions of their own: a SIGTERM to pytest must still run teardown
    # and atexit, which stop them. (Only replace the default handler, never someone else's.)
    if config.getoption("with_clusters") and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        config.stash[_SIGTERM_SET] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_SIGTERM_SET, False) and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests using cluster fixtures `cluster`; deselect what this session cannot run."""
    with_clusters = bool(config.getoption("with_clusters"))
    provider = provider_name(config)
    kept: list[pytest.Item] = []
    need_clusters: list[pytest.Item] = []
    not_here: list[pytest.Item] = []
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
        if not with_clusters and item.get_closest_marker("cluster"):
            need_clusters.append(item)
        elif provider != "local" and item.get_closest_marker("local_only"):
            not_here.append(item)
        else:
            kept.append(item)
    summary = config.stash[_SUMMARY]
    if need_clusters:
        summary.append(f"{_tests(len(need_clusters))} real clusters: run with --with-clusters")
    if not_here:
        summary.append(
            f"{_tests(len(not_here), verb='hold')} only on the local provider: "
            f"deselected on provider {provider}"
        )
    if need_clusters or not_here:
        config.hook.pytest_deselected(items=[*need_clusters, *not_here])
        items[:] = kept


def _tests(count: int, *, verb: str = "need") -> str:
    return f"{count} test {verb}s" if count == 1 else f"{count} tests {verb}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for line in config.stash.get(_SUMMARY, []):
        terminalreporter.write_line(line)


def _require_clusters(config: pytest.Config, fixture: str) -> None:
    """Fail closed: a cluster fixture reached without --with-clusters is an error, not a build."""
    if not config.getoption("with_clusters"):
        pytest.fail(f"{fixture} needs real clusters: run with --with-clusters", pytrace=False)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def corral_binaries(pytestconfig: pytest.Config) -> build.Built:
    """The control-plane binaries (kube-apiserver, kube-controller-manager, kubectl, etcd).

    Built from corral's pinned Go modules on first use and cached in ``~/.cache/corral/bin``
    (``CORRAL_BIN_DIR`` takes them from a folder instead). ``built["kubectl"]`` is a `Path`.
    A missing or too old Go, or a failed build, is an error of the tests that use it.
    """
    _require_clusters(pytestconfig, "corral_binaries")
    try:
        return build.ensure_built(build.CONTROL_PLANE)
    except CorralError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def corral_scenario(pytestconfig: pytest.Config) -> Scenario:
    """The scenario of the session: ``--corral-scenario PATH``, else corral's smoke scenario.

    The smoke scenario has two clusters (``c-us``, ``c-au``) in two regions and two users; it
    ships with corral, so the default works from an installed wheel as from a checkout.
    """
    option = pytestconfig.getoption("corral_scenario")
    try:
        path = pytestconfig.invocation_params.dir / option if option else scenario_path()
        return Scenario.load(path)
    except CorralError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def cluster_set(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    corral_scenario: Scenario,
) -> Iterator[ClusterSet]:
    """The clusters of `corral_scenario`, from the session's provider, stopped after the session.

    ``--corral-provider`` (or ``CORRAL_PROVIDER``) picks ``local`` (default: processes built from
    source), ``kind`` or ``kubeconfig``; ``cluster_set["c-us"]`` is a `ClusterHandle` (server, CA,
    admin kubeconfig, credentials for any user). ``--keep-clusters`` leaves them running in
    ``runs/pytest-clusters/`` of the root folder.
    """
    config = request.config
    _require_clusters(config, "cluster_set")
    keep = bool(config.getoption("keep_clusters"))
    name = provider_name(config)
    # Kept clusters get a stable folder (pytest prunes old temporary ones): the next kept session
    # reaps them there, and `corral cluster down --dir` finds them.
    run_dir = config.rootpath / "runs" / "pytest-clusters" if keep else tmp_path_factory.mktemp("clusters")
    options: dict[str, Any] = {}
    if name == "local":
        options = {"binaries": request.getfixturevalue("corral_binaries"), "detached": keep}
    try:
        provider = select_provider(name, **options)
        clusters = provider.up(corral_scenario, run_dir)
    except CorralError as e:
        pytest.fail(f"cannot bring up the clusters of {corral_scenario.name!r} on {name}: {e}", pytrace=False)
    try:
        yield clusters
    finally:
        if keep:
            sys.stderr.write(
                f"\ncorral: clusters kept running; stop them with: corral cluster down --dir {run_dir}\n"
            )
        else:
            provider.down(run_dir)


class KubeClients:
    """Clients for the clusters of a `ClusterSet`, as admin or as any user; closed after the test."""

    def __init__(self, clusters: ClusterSet) -> None:
        self.clusters = clusters
        self._open: list[KubeClient] = []

    def admin(self, cluster: str) -> KubeClient:
        """A client with the cluster's admin kubeconfig."""
        return self._keep(self.clusters[cluster].client())

    def as_user(self, cluster: str, user: str, groups: tuple[str, ...] | list[str] = ()) -> KubeClient:
        """A client that authenticates as ``user`` in ``groups`` (a client certificate where possible)."""
        return self._keep(self.clusters[cluster].client(user, tuple(groups)))

    def _keep(self, client: KubeClient) -> KubeClient:
        self._open.append(client)
        return client

    def close(self) -> None:
        for client in self._open:
            client.close()


@pytest.fixture
def kube(cluster_set: ClusterSet) -> Iterator[KubeClients]:
    """Admin and per-user clients for the session's clusters: ``kube.admin("c-us")``,
    ``kube.as_user("c-au", "alice", ["devs"])``; every client is closed after the test."""
    clients = KubeClients(cluster_set)
    try:
        yield clients
    finally:
        clients.close()

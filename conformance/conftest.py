"""The conformance suites' session: real clusters only, requirements linked, the target chosen.

Every test under conformance/ runs against real clusters: it is marked `cluster` (see
corral.pytest_plugin), so none of them runs without ``--with-clusters``. Every test names the
requirements it checks (`conformance.linking`), and ``--corral-target reference|kind|rancher``
chooses the system under test (`conformance.targets`); the `target` fixture gives it to a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import linking
from conformance.real_topology import real_topology  # noqa: F401 - a session fixture for every module
from conformance.recording import attach_exchange
from conformance.targets import (
    DEFAULT_TARGET,
    TARGETS,
    Capability,
    Target,
    TargetUnavailableError,
    reference,
)
from conformance.targets import kind as kind_target
from conformance.targets import rancher as rancher_target
from corral.bundled import scenario_path
from corral.errors import CorralError
from corral.model import Scenario
from corral.report.catalogue import Catalogue

HERE = Path(__file__).parent
_LINKER = pytest.StashKey[linking.Linker]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("corral-conformance", "corral conformance: targets and results")
    group.addoption(
        "--corral-target",
        choices=TARGETS,
        default=DEFAULT_TARGET,
        help="the system under test: reference (corral up of the scenario), kind, or rancher",
    )
    group.addoption("--corral-run", metavar="DIR", help="reference: use this running `corral up` folder")
    group.addoption(
        "--corral-results", metavar="FILE", help="write each test's outcome and requirements here"
    )
    group.addoption(
        "--corral-target-only",
        action="store_true",
        default=False,
        help="run only the tests that use the target (those that bring up their own clusters are deselected)",
    )
    group.addoption(
        "--corral-read-only", action="store_true", default=False, help="create nothing on the target"
    )
    group.addoption(
        "--corral-rbac-profile",
        choices=("quick", "default", "thorough"),
        default="default",
        help="how many generated RBAC worlds the isolation suite makes (quick 3, default 30, thorough 400)",
    )
    group.addoption(
        "--rancher-url", metavar="URL", help=f"rancher: the server (env {rancher_target.ENV_URL})"
    )
    group.addoption(
        "--rancher-token-file",
        metavar="FILE",
        help="rancher: file holding an admin token "
        f"(env {rancher_target.ENV_TOKEN_FILE} or {rancher_target.ENV_TOKEN})",
    )
    group.addoption(
        "--rancher-ca", metavar="FILE", help=f"rancher: CA bundle of the server (env {rancher_target.ENV_CA})"
    )
    group.addoption(
        "--rancher-cluster",
        action="append",
        default=[],
        metavar="NAME=KUBECONFIG",
        help="rancher: a downstream cluster and its admin kubeconfig, repeatable "
        f"(env {rancher_target.ENV_CLUSTERS})",
    )
    group.addoption(
        "--rancher-version", metavar="VERSION", help="rancher: its version, when the server does not say"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{linking.MARKER}(*ids): the catalogue requirements (conformance/requirements.yaml) a test checks",
    )
    config.addinivalue_line(
        "markers",
        f"{linking.NEEDS}(*capabilities): target capabilities the test needs ({', '.join(Capability)})",
    )
    config.addinivalue_line("markers", "real_nodes: needs real nodes (root, cgroup v1, network namespaces)")
    try:
        catalogue = Catalogue.load(linking.CATALOGUE)
        plan, target_env = _plan(config)
    except CorralError as e:
        raise pytest.UsageError(str(e)) from None
    results = config.getoption("corral_results")
    linker = linking.Linker(catalogue, plan, Path(results) if results else None, environment=target_env)
    config.stash[_LINKER] = linker
    config.pluginmanager.register(linker, "corral-conformance-linker")


def _plan(config: pytest.Config) -> tuple[linking.TargetPlan, dict[str, str]]:
    name = config.getoption("corral_target")
    read_only = bool(config.getoption("corral_read_only"))
    target_only = bool(config.getoption("corral_target_only"))
    if name == "rancher":
        settings = _rancher_settings(config)
        target = rancher_target.rancher_target(settings)
        config.stash[_RANCHER] = target
        return (
            linking.TargetPlan(
                name=name,
                capabilities=target.capabilities,
                rancher_version=target.rancher_version,
                is_rancher=True,
                target_only=target_only,
            ),
            {"rancher": target.rancher_version or "unknown"},
        )
    scenario = _scenario(config)
    capabilities = reference.expected_capabilities(scenario)
    if read_only:
        capabilities -= {Capability.WRITE}
    run = config.getoption("corral_run")
    unavailable = (
        kind_target.unavailable_reason()
        if name == "kind"
        else ("" if run else reference.unavailable_reason())
    )
    plan = linking.TargetPlan(
        name=name, capabilities=capabilities, unavailable=unavailable, target_only=target_only
    )
    return plan, {"scenario": scenario.name}


_RANCHER = pytest.StashKey[Target]()


def _rancher_settings(config: pytest.Config) -> rancher_target.RancherSettings:
    return rancher_target.settings_from(
        url=config.getoption("rancher_url"),
        token_file=config.getoption("rancher_token_file"),
        ca_file=config.getoption("rancher_ca"),
        clusters=config.getoption("rancher_cluster"),
        read_only=bool(config.getoption("corral_read_only")),
        version=config.getoption("rancher_version"),
    )


def _scenario(config: pytest.Config) -> Scenario:
    option = config.getoption("corral_scenario", None)
    return Scenario.load(config.invocation_params.dir / option if option else scenario_path())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The system under test; what a test makes through it is removed after the session."""
    config = request.config
    name = config.getoption("corral_target")
    made_here: Path | None = None
    try:
        if name == "rancher":
            chosen = config.stash[_RANCHER]
        elif config.getoption("corral_run"):
            chosen = reference.reference_target(Path(config.getoption("corral_run")).resolve())
        else:
            made_here = tmp_path_factory.mktemp(f"{name}-topology")
            scenario = config.getoption("corral_scenario", None)
            path = config.invocation_params.dir / scenario if scenario else scenario_path()
            chosen = reference.bring_up(path, made_here, binaries=request.getfixturevalue("corral_binaries"))
    except (CorralError, TargetUnavailableError) as e:
        pytest.fail(f"target {name}: {e}", pytrace=False)
    if config.getoption("corral_read_only"):
        chosen.capabilities = chosen.capabilities - {Capability.WRITE}
    chosen.observer = attach_exchange
    config.stash[_LINKER].environment.update({k: str(v) for k, v in chosen.describe().items()})
    try:
        yield chosen
    finally:
        left = chosen.cleanup()
        if made_here is not None:
            reference.tear_down(made_here)
        if left:
            pytest.fail("could not undo on the target: " + "; ".join(left), pytrace=False)


@pytest.fixture
def needs(target: Target) -> object:
    """``needs(Capability.ACE)`` inside a test: skip with the reason when the target turned out to lack it."""

    def check(*capabilities: Capability) -> None:
        missing = sorted(c for c in capabilities if not target.has(c))
        if missing:
            pytest.skip(f"target {target.name} lacks {', '.join(missing)}")

    return check

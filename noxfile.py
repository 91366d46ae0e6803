"""corral's automation: `nox` runs lint, the fast tests and the conformance suites.

Dependencies come from pyproject.toml: the package's extras (``sim`` for the SimPy model, so what
users install is what is tested) and dependency groups for the tools; extra arguments after ``--``
go to the tool a session runs (for example ``nox -s tests -- -k scenario``).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "conformance"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHON = "3.11"
DEMO_DIR = "runs/smoke"


def install(session: nox.Session, *groups: str, extras: str = "") -> None:
    """Install corral (editable, with `extras` such as ``"sim"``) and the named dependency groups."""
    target = f".[{extras}]" if extras else "."
    session.install("-e", target, *nox.project.dependency_groups(PYPROJECT, *groups))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff, mypy (strict on src/) and the import-linter layer contracts."""
    install(session, "lint", "test", extras="sim")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "src")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Fast unit and property tests (loopback only, no control plane)."""
    install(session, "test", extras="sim")
    session.run("pytest", "tests", *session.posargs)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """Build the control plane if needed, then run the suites against real kube-apiservers (with the
    smoke load run of conformance/load, hence the ``load`` extra)."""
    install(session, "test", extras="load")
    session.run("corral", "build", "--all")
    session.run("pytest", "conformance", "--with-clusters", *session.posargs)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """The main job: ``corral run`` of the smoke scenario (topology, suites on it, load, model, report),
    leaving the topology running; ``nox -s demo -- DIR [options of corral run]``."""
    install(session, "test", extras="sim,load")
    session.run("corral", "build", "--all")
    run_dir, *options = session.posargs or [DEMO_DIR]
    session.run(
        "corral", "run", "--scenario", "fixtures/scenarios/smoke.yaml", "--dir", run_dir, "--keep", *options
    )


@nox.session(python=PYTHON, default=False)
def rancher(session: nox.Session) -> None:
    """The suites selected for a real Rancher (``--corral-target rancher``).

    ``nox -s rancher -- --rancher-url URL --rancher-token-file FILE --rancher-cluster NAME=KUBECONFIG``
    (``--corral-read-only`` makes nothing there). Without ``--rancher-url`` (or ``CORRAL_RANCHER_URL``)
    they run against corral's own server presented as a Rancher: a ``corral up`` of the smoke scenario
    in runs/as-rancher, stopped afterwards.
    """
    install(session, "test", extras="load")
    session.run("corral", "build")
    given = any(a.startswith("--rancher-url") for a in session.posargs) or os.environ.get(
        "CORRAL_RANCHER_URL"
    )
    if given:
        session.run("pytest", "conformance", "--with-clusters", "--corral-target=rancher", *session.posargs)
        return
    run_dir = "runs/as-rancher"
    session.run("corral", "up", "--scenario", "fixtures/scenarios/smoke.yaml", "--dir", run_dir)
    try:
        options = session.run("python", "-m", "conformance.targets.as_rancher", run_dir, silent=True)
        session.run("pytest", "conformance", "--with-clusters", *str(options).split(), *session.posargs)
    finally:
        session.run("corral", "down", "--dir", run_dir)


@nox.session(python=PYTHON, default=False)
def down(session: nox.Session) -> None:
    """Stop what `nox -s demo` started."""
    install(session)
    session.run("corral", "down", "--dir", session.posargs[0] if session.posargs else DEMO_DIR)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks, each a script under benchmarks/; results land in reports/bench/."""
    install(session, "test", "bench", extras="sim")
    session.run("corral", "build", "--all")
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    selected = [s for s in scripts if not session.posargs or s.stem.removeprefix("bench_") in session.posargs]
    for script in selected:
        session.run("python", str(script.relative_to(ROOT)))


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the tunnel's decoder and sessions (atheris), bounded by runs and time."""
    install(session, "fuzz")
    args = session.posargs or ["-runs=20000", "-max_total_time=120"]
    session.run("python", "fuzz/fuzz_tunnel.py", *args)


@nox.session(python=PYTHON, default=False)
def sim(session: nox.Session) -> None:
    """The SimPy model on the small scenarios: golden summaries, then runs with plots into reports/."""
    install(session, "test", extras="sim")
    session.run("pytest", "tests/sim/test_golden.py", *session.posargs)
    for name in (
        "smoke",
        "alice-au",
        "agent-loss-rke1",
        "agent-loss-rke2",
        "server-outage",
        "link-partition",
    ):
        scenario, out = f"fixtures/scenarios/{name}.yaml", f"reports/{name}/sim-seed1"
        session.run("corral", "sim", "run", scenario, "--seed", "1", "--out", out)


REPORTS = "reports"
ALLURE_TOOLS = "tools/allure"


@nox.session(python=PYTHON, default=False)
def report(session: nox.Session) -> None:
    """Allure's HTML (Allure 3 from npm, pinned in tools/allure, no Java) and the conformance report.

    Runs the conformance suites with allure results, JUnit XML and corral's results file (extra
    arguments go to pytest; ``-- reuse`` builds from the last run's files instead), then both reports.
    ``CORRAL_TRACE``, ``CORRAL_SIM_TRACE`` and ``CORRAL_SCENARIO`` add a run's trace, the model's trace
    and their scenario to the conformance report. A failing suite still gets its reports.
    """
    install(session, "test", extras="sim")
    results = f"{REPORTS}/conformance-results.json"
    if session.posargs[:1] != ["reuse"]:
        session.run("corral", "build", "--all")
        session.run(
            "pytest", "conformance", "--with-clusters", f"--alluredir={REPORTS}/allure-results",
            "--clean-alluredir", f"--junitxml={REPORTS}/junit.xml", f"--corral-results={results}",
            *session.posargs, success_codes=[0, 1],
        )  # fmt: skip
    session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", ALLURE_TOOLS, external=True)
    session.run(
        f"{ALLURE_TOOLS}/node_modules/.bin/allure", "generate", f"{REPORTS}/allure-results",
        "--config", f"{ALLURE_TOOLS}/allurerc.mjs", "--output", f"{REPORTS}/allure", external=True,
    )  # fmt: skip
    extra = [
        f"{flag}={os.environ[name]}"
        for flag, name in (
            ("--trace", "CORRAL_TRACE"),
            ("--sim-trace", "CORRAL_SIM_TRACE"),
            ("--scenario", "CORRAL_SCENARIO"),
        )
        if os.environ.get(name)
    ]
    session.run(
        "python", "-m", "corral.report", f"--results={results}", f"--out={REPORTS}/conformance", *extra
    )


@nox.session(python=PYTHON, default=False)
def load(session: nox.Session) -> None:
    """A load run: ``nox -s load -- SCENARIO [options of corral load run]``; reports in reports/<name>/load.

    Without ``--topology`` or ``--clusters-dir`` it brings the scenario's whole topology up with WAN
    links (``corral up --wan``: server, agents and users, every connection across its link), runs
    the scenario's traffic and faults (process faults on that run folder), then stops it.
    """
    install(session, "test", extras="load")
    if not session.posargs:
        session.error("usage: nox -s load -- SCENARIO [options of corral load run]")
    session.run("corral", "build", "--all")
    scenario, *options = session.posargs
    if "--topology" in options or "--clusters-dir" in options:
        session.run("corral", "load", "run", scenario, *options)
        return
    run_dir = f"runs/load-{Path(scenario).stem}"
    session.run("corral", "up", "--scenario", scenario, "--dir", run_dir, "--wan")
    try:
        session.run(
            "corral", "load", "run", scenario, "--topology", f"{run_dir}/topology.json",
            "--fault-dir", run_dir, *options,
        )  # fmt: skip
    finally:
        session.run("corral", "down", "--dir", run_dir)

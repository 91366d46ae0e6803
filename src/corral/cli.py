"""The `corral` command: a thin layer over importable functions.

Each command validates its options and calls one function of the package; the tests call the
same functions. Options can also come from ``CORRAL_<OPTION>`` environment variables.
"""

from __future__ import annotations

import sys
import time
import typing
from pathlib import Path
from typing import cast

import click

from corral import __version__, logs
from corral.controlplane.providers import DEFAULT_PROVIDER, PROVIDERS, provider_name, select_provider
from corral.controlplane.providers import ENV_VAR as PROVIDER_ENV_VAR
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


# -- clusters -------------------------------------------------------------------------------------


@main.group()
def cluster() -> None:
    """Bring the clusters of a scenario up (they keep running) and down again."""


_SCENARIO_OPTION = click.option(
    "--scenario",
    "scenario_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Scenario file (YAML).",
)
_NEW_RUN_DIR_OPTION = click.option(
    "--dir", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder."
)
_RUN_DIR_OPTION = click.option(
    "--dir", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
_PROVIDER_OPTION = click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default=None,
    help=f"Where clusters come from (default {DEFAULT_PROVIDER}); env {PROVIDER_ENV_VAR}.",
)


@cluster.command("up")
@_SCENARIO_OPTION
@_NEW_RUN_DIR_OPTION
@_PROVIDER_OPTION
@click.option(
    "--etcd",
    "etcd_mode",
    type=click.Choice(["shared", "per-cluster"]),
    default="shared",
    show_default=True,
    help="local provider: one etcd for all clusters or one per cluster.",
)
@click.option(
    "--nodes",
    "node_mode",
    type=click.Choice(["real", "virtual"]),
    default=None,
    help="local provider: Node objects only (virtual) or a kubelet and containerd per node (real, "
    "needs root); default: the scenario's node_mode, else virtual.",
)
def cluster_up(
    scenario_path: Path, run_dir: Path, provider: str | None, etcd_mode: str, node_mode: str | None
) -> None:
    """Start the scenario's clusters in RUN_DIR and print how to reach them."""
    from corral.model import Scenario

    try:
        scenario = Scenario.load(scenario_path)
        provider = provider_name(provider)
        options: dict[str, object] = {}
        if provider == "local":
            from corral.controlplane import build as builder

            mode = node_mode or scenario.node_mode
            if mode == "real":
                from corral.controlplane.nodes import check_host

                check_host()  # before minutes of building, say why it cannot work here
            names = (*builder.CONTROL_PLANE, *builder.NODES) if mode == "real" else builder.CONTROL_PLANE
            # Build first, with progress: on a fresh machine this takes minutes.
            binaries = builder.ensure_built(names, progress=_ProgressLine())
            options = {"detached": True, "etcd_mode": etcd_mode, "binaries": binaries, "node_mode": mode}
        elif node_mode == "real":
            raise click.UsageError("--nodes real needs the local provider")
        chosen = select_provider(provider, **options)
        cluster_set = chosen.up(scenario, run_dir, progress=lambda line: click.echo(line, err=True))
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    if cluster_set.kubectl is not None:
        click.echo(f'export PATH="{cluster_set.kubectl.parent}:$PATH"')
    for handle in cluster_set:
        click.echo(f"# {handle.name}: {handle.server}, admin kubeconfig {handle.kubeconfig}")
        click.echo(f"kubectl --kubeconfig {handle.kubeconfig} get nodes")
    click.echo(f"corral cluster down --dir {run_dir}")


@cluster.command("down")
@click.option(
    "--dir",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run folder of `corral cluster up`.",
)
@_PROVIDER_OPTION
def cluster_down(run_dir: Path, provider: str | None) -> None:
    """Stop the clusters that `corral cluster up` started in RUN_DIR."""
    from corral.controlplane.kind import STATE_FILE as KIND_STATE

    recorded = "kind" if (run_dir / KIND_STATE).is_file() else "local"
    try:
        select_provider(provider_name(provider, recorded=recorded)).down(run_dir)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"stopped the clusters of {run_dir}", err=True)


# -- the Authorized Cluster Endpoint -------------------------------------------------------------


@main.command("kube-api-auth")
@click.option("--listen", default="127.0.0.1:6440", show_default=True, help="host:port to listen on (TCP).")
@click.option("--namespace", default="cattle-system", show_default=True, help="Namespace of the ACE objects.")
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The cluster's kubeconfig (default: $KUBECONFIG, else the Pod's in-cluster config).",
)
@click.option(
    "--trace", type=click.Path(dir_okay=False, path_type=Path), help="Append TokenReviewed events here."
)
@click.option("--cluster", "cluster_name", default="", help="The cluster's name in trace events.")
@click.option("--trace-epoch", type=float, help="Unix time trace times count from (default: start).")
def kube_api_auth(
    *,
    listen: str,
    namespace: str,
    kubeconfig: Path | None,
    trace: Path | None,
    cluster_name: str,
    trace_epoch: float | None,
) -> None:
    """Authenticate a cluster's ACE tokens: the token webhook its kube-apiserver calls."""
    from corral.k8s import KubeConfig
    from corral.kubeapiauth.server import ServeOptions, in_cluster_config, parse_listen, run

    try:
        parse_listen(listen)
        config = KubeConfig.load(kubeconfig) if kubeconfig is not None else in_cluster_config()
        options = ServeOptions(
            listen=listen,
            namespace=namespace,
            kubeconfig=config,
            trace=trace,
            cluster=cluster_name,
            trace_epoch=trace_epoch,
        )
        run(
            options,
            ready=lambda host, port: click.echo(f"kube-api-auth listening on {host}:{port}", err=True),
        )
    except CorralError as e:
        raise click.ClickException(str(e)) from e


# -- the reference topology ----------------------------------------------------------------------


@main.command()
@_SCENARIO_OPTION
@_NEW_RUN_DIR_OPTION
@click.option(
    "--nodes",
    "node_mode",
    type=click.Choice(["real", "virtual"]),
    default=None,
    help="The downstream clusters' nodes: Node objects only (virtual) or a kubelet and containerd each "
    "(real, needs root); default: the scenario's node_mode. The upstream's node stays virtual.",
)
@click.option(
    "--wan",
    is_flag=True,
    help="Route every connection (agents' tunnels, the server's dials, users' kubeconfigs) over "
    "toxiproxy links with the scenario's round-trip times.",
)
def up(scenario_path: Path, run_dir: Path, node_mode: str | None, wan: bool) -> None:
    """Bring up the scenario's topology: upstream, server(s), clusters, users; write RUN/topology.json."""
    from corral.controlplane import build as builder
    from corral.model import Scenario
    from corral.run.up import up as bring_up

    try:
        mode = node_mode or Scenario.load(scenario_path).node_mode
        names: tuple[str, ...] = builder.CONTROL_PLANE
        if mode == "real":
            from corral.controlplane.nodes import check_host

            check_host()  # before minutes of building, say why it cannot work here
            names = (*builder.CONTROL_PLANE, *builder.NODES)
        binaries = builder.ensure_built(names, progress=_ProgressLine())
        topology = bring_up(
            scenario_path,
            run_dir,
            binaries=binaries,
            node_mode=mode,
            wan=wan,
            progress=lambda line: click.echo(line, err=True),
        )
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    if topology.get("kubectl"):
        click.echo(f'export PATH="{Path(topology["kubectl"]).parent}:$PATH"')
    for name, user in topology["users"].items():
        click.echo(f"# {name} ({user['id']}) through the server's proxy:")
        click.echo(f"kubectl --kubeconfig {user['kubeconfig']} get namespaces")
    click.echo(f"corral down --dir {run_dir}")


@main.command()
@click.option(
    "--dir",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run folder of `corral up`.",
)
def down(run_dir: Path) -> None:
    """Stop everything `corral up` started in RUN_DIR (also what a crashed run left)."""
    from corral.run.up import down as bring_down

    try:
        bring_down(run_dir)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"stopped the topology of {run_dir}", err=True)


@main.command("run")
@_SCENARIO_OPTION
@_NEW_RUN_DIR_OPTION
@click.option(
    "--checkout",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Source checkout holding conformance/ (its suites and requirements catalogue).",
)
@click.option("--load-seconds", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Longest window of the load run's traffic.")  # fmt: skip
@click.option(
    "--rbac-profile",
    type=click.Choice(["quick", "default", "thorough"]),
    default="default",
    show_default=True,
    help="How many generated RBAC worlds the isolation suite checks.",
)
@click.option("--keep/--no-keep", default=False, show_default=True, help="Leave the topology running.")
def run(
    *, scenario_path: Path, run_dir: Path, checkout: Path, load_seconds: float, rbac_profile: str, keep: bool
) -> None:
    """The whole job: corral up, the conformance suites on that topology, a short load run, the model on
    the same scenario, and the report (RUN/report/index.html). Exits 1 when a step failed."""
    from corral.run.full import FullRunSettings, full_run, summary_lines

    settings = FullRunSettings(
        scenario=scenario_path,
        run_dir=run_dir,
        checkout=checkout.resolve(),
        load_seconds=load_seconds,
        rbac_profile=rbac_profile,
        keep=keep,
    )
    try:
        summary = full_run(settings, progress=lambda line: click.echo(line, err=True))
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    for line in summary_lines(summary):
        click.echo(line)
    if not summary.ok:
        sys.exit(1)


_Command = typing.TypeVar("_Command", bound=typing.Callable[..., typing.Any])


@main.group()
def doctor() -> None:
    """Diagnose a running topology."""


def _doctor_target(kubeconfig_help: str) -> typing.Callable[[_Command], _Command]:
    """The options naming the cluster a doctor checks: --cluster with --dir, or --kubeconfig and --context."""
    options = [
        click.option(
            "--cluster",
            required=True,
            help="Cluster: its scenario name or id (with --dir), any name otherwise.",
        ),
        click.option(
            "--dir",
            "run_dir",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="Run folder.",
        ),
        click.option(
            "--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=kubeconfig_help
        ),
        click.option("--context", default=None, help="Context of --kubeconfig."),
    ]

    def decorate(command: _Command) -> _Command:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _one_source(run_dir: Path | None, kubeconfig: Path | None) -> None:
    if (run_dir is None) == (kubeconfig is None):
        raise click.UsageError("give exactly one of --dir and --kubeconfig")


def _run_cluster(clusters: typing.Mapping[str, typing.Any], cluster: str, run_dir: Path) -> str:
    """The scenario name of ``cluster`` (its scenario name or its id) in a run's topology."""
    name = (
        cluster if cluster in clusters else next((n for n, c in clusters.items() if c["id"] == cluster), "")
    )
    if not name:
        raise click.UsageError(f"no cluster {cluster!r} in {run_dir} (known: {', '.join(clusters)})")
    return name


@doctor.command("impersonation")
@_doctor_target("Admin kubeconfig of the downstream cluster (instead of --dir).")
@click.option(
    "--user", required=True, help="User: scenario name, username or id (with --dir); an id otherwise."
)
@click.option(
    "--group", "groups", multiple=True, help="The user's groups, to check the role's groups exactly."
)
def doctor_impersonation(
    *,
    cluster: str,
    user: str,
    run_dir: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    groups: tuple[str, ...],
) -> None:
    """Check USER's impersonation account in CLUSTER: the five objects, their rules and the token."""
    from corral.k8s import KubeClient, KubeConfig
    from corral.run.topology import read_topology
    from corral.server.doctor import check_impersonation

    try:
        _one_source(run_dir, kubeconfig)
        user_id = user
        if run_dir is not None:
            topology = read_topology(run_dir)
            entry = topology["clusters"][_run_cluster(topology["clusters"], cluster, run_dir)]
            kubeconfig = Path(entry["admin_kubeconfig"])
            found = topology["users"].get(user) or next(
                (u for u in topology["users"].values() if user in (u["id"], u["username"])), None
            )
            user_id = found["id"] if found else user
        assert kubeconfig is not None
        with KubeClient(KubeConfig.load(kubeconfig, context=context)) as admin:
            report = check_impersonation(admin, cluster=cluster, user=user_id, groups=groups or None)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    for line in report.lines():
        click.echo(line)
    if not report.healthy:
        sys.exit(1)


@doctor.command("ace")
@_doctor_target("Admin kubeconfig of an imported cluster (instead of --dir); the manual steps are printed.")
@click.option(
    "--upstream-kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --kubeconfig: the management cluster's, to compare the token copies (needs --cluster-id).",
)
@click.option("--cluster-id", default="", help="With --kubeconfig: the cluster's id on the server.")
@click.option(
    "--kube-api-auth", "auth_urls", multiple=True, help="With --kubeconfig: a kube-api-auth base URL."
)
def doctor_ace(
    *,
    cluster: str,
    run_dir: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    upstream_kubeconfig: Path | None,
    cluster_id: str,
    auth_urls: tuple[str, ...],
) -> None:
    """Check CLUSTER's Authorized Cluster Endpoint: webhook configs, kube-api-auth, CRDs, token copies."""
    from corral.k8s import KubeClient, KubeConfig
    from corral.server.doctor_ace import check_ace, manual_steps

    try:
        _one_source(run_dir, kubeconfig)
        webhooks: dict[str, Path | None] = {}
        if run_dir is not None:
            name, entry, upstream_kubeconfig, webhooks = _ace_run(run_dir, cluster)
            kubeconfig, cluster_id = Path(entry["admin_kubeconfig"]), entry["id"]
            auth_urls = tuple(entry.get("kube_api_auth") or ())
            cluster = name
        assert kubeconfig is not None
        upstream = KubeClient(KubeConfig.load(upstream_kubeconfig)) if upstream_kubeconfig else None
        try:
            with KubeClient(KubeConfig.load(kubeconfig, context=context)) as admin:
                report = check_ace(
                    cluster=cluster,
                    admin=admin,
                    upstream=upstream,
                    cluster_id=cluster_id,
                    webhook_configs=webhooks,
                    kube_api_auth=auth_urls,
                )
        finally:
            if upstream is not None:
                upstream.close()
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    for line in report.lines():
        click.echo(line)
    if run_dir is None:
        for line in manual_steps(cluster=cluster, cluster_id=cluster_id):
            click.echo(line)
    if not report.healthy:
        sys.exit(1)


def _ace_run(run_dir: Path, cluster: str) -> tuple[str, dict[str, typing.Any], Path, dict[str, Path | None]]:
    """A run's cluster entry, the upstream's kubeconfig and each of the cluster's apiservers' webhook file."""
    import psutil

    from corral.run.topology import read_topology
    from corral.server.doctor_ace import webhook_flag

    topology = read_topology(run_dir)
    clusters = topology["clusters"]
    name = _run_cluster(clusters, cluster, run_dir)
    if not clusters[name].get("kube_api_auth"):
        raise click.UsageError(f"cluster {name} has no ACE in {run_dir} (the scenario's `ace` is off)")
    webhooks: dict[str, Path | None] = {}
    for process in topology["processes"]:
        if process["role"] != "kube-apiserver" or process.get("cluster") != name:
            continue
        subject = f"kube-apiserver of {process.get('node') or name}"
        try:
            webhooks[subject] = webhook_flag(psutil.Process(process["pid"]).cmdline())
        except psutil.Error:
            raise CorralError(f"{subject} (pid {process['pid']}) is not running") from None
    return name, clusters[name], Path(topology["upstream"]["admin_kubeconfig"]), webhooks


# -- agents and their faults ---------------------------------------------------------------------


@main.command()
@click.option(
    "--cluster", "as_cluster", is_flag=True, help="Run as the cluster agent (cattle-cluster-agent)."
)
@click.option("--node", default=None, help="Run as the node agent of NODE (cattle-node-agent, profile rke1).")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The downstream cluster's credentials (default: the Pod's in-cluster ServiceAccount).",
)
@click.option(
    "--credentials-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/cattle-credentials"),
    show_default=True,
    help="Folder with url and token (used when CATTLE_SERVER / CATTLE_TOKEN are unset).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the connected marker goes (default: the working directory).",
)
@click.option(
    "--retry",
    type=click.Choice(["rancher", "backoff"]),
    default="rancher",
    show_default=True,
    help="Reconnect cadence: Rancher's 5 s + 5 s, or jittered exponential backoff.",
)
@click.option("--no-heartbeat", is_flag=True, help="Node agent: leave the Node's Lease to a real kubelet.")
@click.option(
    "--lease-seconds",
    type=click.IntRange(min=4),
    default=40,
    show_default=True,
    help="Node agent: the Node's Lease duration (renewed every quarter of it).",
)
@click.option(
    "--etcd-endpoint", default="", help="Node agent: the cluster's etcd (http://host:port), for snapshots."
)
@click.option("--etcd-prefix", default="", help="Node agent: the cluster's key prefix in that etcd.")
def agent(
    *,
    as_cluster: bool,
    node: str | None,
    kubeconfig: Path | None,
    credentials_dir: Path,
    state_dir: Path | None,
    retry: str,
    no_heartbeat: bool,
    lease_seconds: int,
    etcd_endpoint: str,
    etcd_prefix: str,
) -> None:
    """Connect a downstream cluster (or node) to the server through the tunnel, as Rancher's agents do."""
    from corral.agent import RetryPolicy, load_config, run_agent
    from corral.agent.run import AgentOptions
    from corral.tunnel.loop import run as run_loop

    if as_cluster == (node is not None):
        raise click.UsageError("give exactly one of --cluster and --node NAME")
    try:
        config = load_config(
            kind="cluster" if as_cluster else "node",
            node=node or "",
            credentials_dir=credentials_dir,
            state_dir=state_dir,
            kubeconfig=kubeconfig,
        )
        if bool(etcd_endpoint) != bool(etcd_prefix):
            raise click.UsageError("give --etcd-endpoint and --etcd-prefix together")
        options = AgentOptions(
            retry=RetryPolicy(kind=retry),  # type: ignore[arg-type]
            heartbeat=not no_heartbeat,
            lease_seconds=lease_seconds,
            etcd_endpoint=etcd_endpoint,
            etcd_prefix=etcd_prefix,
        )
        run_loop(run_agent(config, options))
    except CorralError as e:
        raise click.ClickException(str(e)) from e


@main.group()
def etcd() -> None:
    """etcd snapshots of a cluster, taken and restored by one of its node agents."""


@etcd.command("snapshot")
@click.option("--cluster", required=True, help="The cluster (scenario name or id).")
@_RUN_DIR_OPTION
def etcd_snapshot(cluster: str, run_dir: Path) -> None:
    """Snapshot the cluster's etcd keys (v3 action backupEtcd); prints the EtcdBackup's id."""
    from corral.run.etcd import etcd_action

    try:
        answer = etcd_action(run_dir, cluster=cluster)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    click.echo(answer["id"])


@etcd.command("restore")
@click.option("--cluster", required=True, help="The cluster (scenario name or id).")
@click.option("--backup", required=True, help="The EtcdBackup's id (<cluster>:<name>), as snapshot printed.")
@_RUN_DIR_OPTION
def etcd_restore(cluster: str, backup: str, run_dir: Path) -> None:
    """Make the cluster's etcd keys those of the backup again (v3 action restoreFromEtcdBackup)."""
    from corral.run.etcd import etcd_action

    try:
        answer = etcd_action(run_dir, cluster=cluster, backup=backup)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"restored {backup}: {answer.get('put')} key(s) put, {answer.get('deleted')} deleted", err=True
    )


@main.group()
def fault() -> None:
    """Hurt a running topology on purpose (processes recorded in a run folder)."""


@fault.command("agent")
@click.argument("action", type=click.Choice(["kill", "freeze", "stop", "start"]))
@click.option("--cluster", required=True, help="The agent's cluster.")
@click.option("--replica", type=int, default=None, help="Cluster-agent replica (default 0).")
@click.option("--node", default=None, help="The node agent of NODE instead of a cluster-agent replica.")
@_RUN_DIR_OPTION
def fault_agent(*, action: str, cluster: str, replica: int | None, node: str | None, run_dir: Path) -> None:
    """kill (SIGKILL), freeze (SIGSTOP), stop (SIGTERM, clean close) or start (again) an agent."""
    from corral.agent.fleet import fault as apply_fault

    if replica is not None and node is not None:
        raise click.UsageError("give at most one of --replica and --node")
    try:
        record = apply_fault(run_dir, action, cluster=cluster, replica=replica, node=node)  # type: ignore[arg-type]
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{action}: {record.target} (pid {record.pid})", err=True)


@fault.command("server")
@click.argument("action", type=click.Choice(["stop", "kill", "freeze", "start"]))
@click.option("--replica", type=int, default=None, help="Server replica (default: every replica).")
@_RUN_DIR_OPTION
def fault_server(*, action: str, replica: int | None, run_dir: Path) -> None:
    """stop (SIGTERM), kill (SIGKILL), freeze (SIGSTOP) or start (again) server replicas of `corral up`."""
    from corral.run.server_faults import server_fault

    try:
        done = server_fault(run_dir, action, replica=replica)  # type: ignore[arg-type]
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    for item in done:
        click.echo(f"{item.action}: {item.target} (pid {item.pid})", err=True)


@fault.command("node")
@click.argument("action", type=click.Choice(["stop", "kill", "start"]))
@click.option("--node", "node", required=True, help="Name of a real node of the scenario.")
@click.option(
    "--dir",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run folder of `corral cluster up --nodes real`.",
)
def fault_node(action: str, node: str, run_dir: Path) -> None:
    """Stop a real node cleanly, kill it hard, or start it again."""
    from corral.controlplane import nodes

    actions = {"stop": nodes.stop_node, "kill": nodes.kill_node, "start": nodes.start_node}
    try:
        actions[action](run_dir, node)
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{node}: {action} done", err=True)


# -- the server ----------------------------------------------------------------------------------


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:8443")
    return host.strip("[]"), int(port)


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.option("--kubeconfig", required=True, type=_FILE, help="Admin kubeconfig of the upstream cluster.")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to serve HTTPS on.")
@click.option("--also-listen", multiple=True, help="Another HOST:PORT to serve on (repeatable).")
@click.option("--tls-cert", required=True, type=_FILE, help="Serving certificate (PEM, chain allowed).")
@click.option("--tls-key", required=True, type=_FILE, help="Its private key (PEM).")
@click.option(
    "--tls-ca", type=_FILE, help="CA published as `cacerts` (default: the chain's last certificate)."
)
@click.option("--server-url", default="", help="The server's external URL (the `server-url` setting).")
@click.option(
    "--bootstrap-password-file", type=_FILE, help="First admin password (else env, else generated)."
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where a generated password goes."
)
@click.option(
    "--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path), help="Trace JSONL to append."
)
@click.option(
    "--fast-failover",
    is_flag=True,
    help="Ping agents and retry idempotent requests on another session (default: Rancher's behaviour).",
)
@click.option(
    "--auth-timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds an LDAP or GitHub login may take (default: 4 x connectionTimeout; GitHub 10).",
)
@click.option(
    "--impersonation-review-scope",
    type=click.Choice(["management", "downstream"]),
    default="management",
    show_default=True,
    help="Where `kubectl --as` is reviewed: the management cluster (Rancher 2.15+) or the request's "
    "cluster (Rancher 2.10-2.14).",
)
@click.option(
    "--provision-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Enable `driver: local` clusters: their control planes run from folders under this one.",
)
@click.option("--log-level", "server_log_level", default=None, help="Level of the server's logs.")
def server(
    *,
    kubeconfig: Path,
    listen: str,
    also_listen: tuple[str, ...],
    tls_cert: Path,
    tls_key: Path,
    tls_ca: Path | None,
    server_url: str,
    bootstrap_password_file: Path | None,
    data_dir: Path | None,
    trace_file: Path | None,
    fast_failover: bool,
    auth_timeout: float | None,
    impersonation_review_scope: str,
    provision_dir: Path | None,
    server_log_level: str | None,
) -> None:
    """Run the Rancher-compatible server (v3 API, login, proxy) against an upstream cluster."""
    from corral.server.app import READY_LINE, ServerOptions, run_server
    from corral.server.proxy_interfaces import SARScope
    from corral.tunnel.loop import run as run_loop

    scope = cast(SARScope, impersonation_review_scope)  # click.Choice has checked it
    if server_log_level:
        logs.configure(server_log_level)
    host, port = _listen(listen)
    password = bootstrap_password_file.read_text().strip() if bootstrap_password_file else None
    options = ServerOptions(
        kubeconfig=kubeconfig,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        server_url=server_url,
        bootstrap_password=password or None,
        data_dir=data_dir,
        trace=trace_file,
        fast_failover=fast_failover,
        auth_timeout=auth_timeout,
        impersonation_review_scope=scope,
        also_listen=tuple(_listen(value) for value in also_listen),
    )
    provisioner = None
    if provision_dir is not None:
        from corral.run.provision import LocalProvisioner

        provisioner = LocalProvisioner(provision_dir)
    try:
        run_loop(
            run_server(
                options, ready=lambda url: click.echo(READY_LINE + url, err=True), provisioner=provisioner
            )
        )
    except CorralError as e:
        raise click.ClickException(str(e)) from e


@main.command("kubeconfig")
@click.option("--user", required=True, help="User id, username, or (with --dir) scenario user name.")
@click.option("--cluster", required=True, help="Cluster id, display name, or (with --dir) scenario name.")
@click.option(
    "--dir",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run folder of `corral up`.",
)
@click.option("--upstream-kubeconfig", type=_FILE, help="Admin kubeconfig of the management cluster.")
@click.option("--server", "server_url", default="", help="Server URL (default: the `server-url` setting).")
@click.option(
    "--ttl-minutes", type=int, default=None, help="Token TTL (default: kubeconfig-default-token-ttl-minutes)."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (0600); default stdout.",
)
def kubeconfig_command(
    *,
    user: str,
    cluster: str,
    run_dir: Path | None,
    upstream_kubeconfig: Path | None,
    server_url: str,
    ttl_minutes: int | None,
    output: Path | None,
) -> None:
    """Write a kubeconfig for USER to reach CLUSTER through the server's proxy, with a kubeconfig token."""
    from corral.k8s import KubeClient, KubeConfig
    from corral.k8s.kubeconfig import write_private
    from corral.server.mint import mint_kubeconfig

    try:
        if run_dir is not None:
            from corral.run.topology import read_topology

            topology = read_topology(run_dir)
            upstream_kubeconfig = upstream_kubeconfig or Path(topology["upstream"]["admin_kubeconfig"])
            server_url = server_url or str(topology["server"]["url"])
            user = str((topology["users"].get(user) or {}).get("id") or user)
            cluster = str((topology["clusters"].get(cluster) or {}).get("id") or cluster)
        if upstream_kubeconfig is None:
            raise click.UsageError("give --upstream-kubeconfig or --dir")
        with KubeClient(KubeConfig.load(upstream_kubeconfig)) as upstream:
            minted = mint_kubeconfig(
                upstream, user=user, cluster=cluster, server_url=server_url, ttl_minutes=ttl_minutes
            )
    except CorralError as e:
        raise click.ClickException(str(e)) from e
    if output is None:
        click.echo(minted.config, nl=False)
    else:
        write_private(output, minted.config.encode())
    click.echo(
        f"kubeconfig token {minted.token_name} for {minted.user_id} on {minted.cluster_id}, "
        f"TTL {minted.ttl_minutes} minutes",
        err=True,
    )


# -- the SimPy model ------------------------------------------------------------------------------


class _LazyGroup(click.Group):
    """A command group whose commands live in ``module``'s click group ``main``, imported only when
    the group is used: ``corral --help`` stays fast and works without the group's extra.

    `corral sim` runs `corral.sim.cli` (``python -m corral.sim`` runs the same commands) and
    `corral load` runs `corral.load.cli`.
    """

    def __init__(self, name: str, module: str, *, help: str) -> None:
        super().__init__(name, help=help)
        self._module = module

    def _commands(self) -> click.Group:
        import importlib

        group = importlib.import_module(self._module).main
        assert isinstance(group, click.Group)
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._commands().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._commands().get_command(ctx, cmd_name)


_SIM_HELP = "Run the SimPy model on a scenario, or on a grid of variants of it."
_LOAD_HELP = "Load runs with locust over WAN links, faults on the timeline, SLO gates."
main.add_command(_LazyGroup("sim", "corral.sim.cli", help=_SIM_HELP))
main.add_command(_LazyGroup("load", "corral.load.cli", help=_LOAD_HELP))

"""``mlops``: the operator's command line (console script ``mlops = scripts.cli:main``).

Commands are thin: each parses its options and calls a function of its module under
``scripts/``. An expected failure is a :class:`scripts.common.OpsError` raised anywhere
below a command: the app prints ``error: <message>`` on stderr and exits 1, no traceback.
Tracebacks of unexpected errors never show local variables (they could hold credentials).

To add a command, write its function in its module and register it below with
``@app.command()`` (or a group with ``app.add_typer``); a command that needs the
environment takes ``env_file: EnvFileOption = DEFAULT_ENV_FILE``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from hostboot.names import WORK_POOL
from typer.core import TyperGroup

from scripts import backup, cost, deploy, drill, ephemeral, upgrade
from scripts.common import DEFAULT_ENV_FILE, EnvFileOption, OpsError, load_env
from scripts.env import describe, write_stack_env
from scripts.smoke import ENV_KEYS, failures, smoke_until
from scripts.tunnel import LocalPorts, run_tunnel
from scripts.twin import cli as twin_cli

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """The root group: an OpsError from any subcommand becomes stderr + exit status 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's context type lives in its private click copy
        """Invoke the subcommand, reporting expected errors without a traceback."""
        try:
            return super().invoke(ctx)
        except OpsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="mlops",
    help="Operate an mlops-platform environment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
ephemeral_app = typer.Typer(
    help="Short-lived stacks from the dev configuration.", no_args_is_help=True
)
app.add_typer(ephemeral_app, name="ephemeral")
app.add_typer(twin_cli.app, name="twin")
upgrade_app = typer.Typer(
    help="Upgrades of MLflow and Prefect (their database schemas).", no_args_is_help=True
)
app.add_typer(upgrade_app, name="upgrade")

StackOption = Annotated[str, typer.Option("--stack", help="Pulumi stack name, e.g. dev.")]
MlflowPortOption = Annotated[
    int, typer.Option("--mlflow-port", min=1, max=65535, help="Local end of the MLflow tunnel.")
]
PrefectPortOption = Annotated[
    int, typer.Option("--prefect-port", min=1, max=65535, help="Local end of the Prefect tunnel.")
]
DaskDashboardPortOption = Annotated[
    int,
    typer.Option(
        "--dask-dashboard-port",
        min=1,
        max=65535,
        help="Local end of the Dask dashboard's tunnel (stacks with daskWorkers above 0).",
    ),
]
NameArgument = Annotated[str, typer.Argument(help="Stack name, e.g. pr-42.")]
_DEFAULT_PORTS = LocalPorts()


@app.command()
def env(
    stack: StackOption,
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    via_tunnel: Annotated[
        bool,
        typer.Option(
            "--via-tunnel",
            help="Write localhost URIs that go through `mlops tunnel` (from outside the VPC).",
        ),
    ] = False,
    mlflow_port: MlflowPortOption = _DEFAULT_PORTS.mlflow,
    prefect_port: PrefectPortOption = _DEFAULT_PORTS.prefect,
) -> None:
    """Write the stack's environment variables to the env file (mode 0600; secrets never shown)."""
    ports = LocalPorts(mlflow=mlflow_port, prefect=prefect_port) if via_tunnel else None
    values = write_stack_env(stack, env_file, ports)
    typer.echo(f"wrote {len(values)} variables of stack {stack} to {env_file} (mode 0600):")
    for line in describe(values):
        typer.echo(f"  {line}")
    if via_tunnel:
        typer.echo(f"keep `mlops tunnel --stack {stack}` running while you use them")


@app.command()
def tunnel(
    stack: StackOption,
    mlflow_port: MlflowPortOption = _DEFAULT_PORTS.mlflow,
    prefect_port: PrefectPortOption = _DEFAULT_PORTS.prefect,
    dask_dashboard_port: DaskDashboardPortOption = _DEFAULT_PORTS.dask_dashboard,
) -> None:
    """Forward the control host's MLflow and Prefect ports (and the Dask dashboard, with a
    cluster) to localhost (SSM) until Ctrl-C."""
    ports = LocalPorts(mlflow=mlflow_port, prefect=prefect_port, dask_dashboard=dask_dashboard_port)
    run_tunnel(stack, ports, typer.echo)


@app.command()
def smoke(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    work_pool: Annotated[
        str, typer.Option("--work-pool", help="Prefect work pool to check.")
    ] = WORK_POOL,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="Retry failing checks for up to this many seconds."),
    ] = 0,
) -> None:
    """Check the environment in the env file: one verdict per check, exit 1 if any fails."""
    verdicts = smoke_until(load_env(env_file, ENV_KEYS), work_pool, wait, typer.echo)
    width = max(len(verdict.check) for verdict in verdicts)
    for verdict in verdicts:
        typer.echo(f"{verdict.outcome:<4}  {verdict.check:<{width}}  {verdict.detail}")
    if failures(verdicts):
        raise OpsError(f"smoke test failed: {', '.join(failures(verdicts))}")
    typer.echo(f"smoke test passed: {len(verdicts)} checks")


@ephemeral_app.command("create")
def ephemeral_create(
    name: NameArgument,
    ttl_hours: Annotated[
        int,
        typer.Option(
            "--ttl-hours", min=1, max=720, help="Hours until the stack expires (reap destroys it)."
        ),
    ] = int(ephemeral.DEFAULT_TTL.total_seconds() // 3600),
) -> None:
    """Create (or update) stack NAME from dev's config as environment ephemeral, and deploy it."""
    ephemeral.create(name, typer.echo, timedelta(hours=ttl_hours))


@ephemeral_app.command("list")
def ephemeral_list() -> None:
    """The ephemeral stacks: age, expiry and estimated cost so far."""
    ephemeral.list_stacks(typer.echo)


@ephemeral_app.command("reap")
def ephemeral_reap() -> None:
    """Destroy every ephemeral stack past its expiry."""
    ephemeral.reap(typer.echo)


@ephemeral_app.command("destroy")
def ephemeral_destroy(name: NameArgument) -> None:
    """pulumi destroy and remove stack NAME; refuses a stack that is not ephemeral."""
    ephemeral.destroy(name, typer.echo)


@app.command("backup")
def backup_command(
    stack: StackOption,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the stack's manual snapshots instead.")
    ] = False,
) -> None:
    """Snapshot the stack's database (runs, models, aliases, flow runs) and wait for it."""
    if not list_only:
        backup.backup(stack, typer.echo)
        return
    found = backup.snapshots(stack)
    if not found:
        typer.echo(f"no manual snapshots of stack {stack}")
    for snapshot in found:
        typer.echo(f"{snapshot.identifier}  {snapshot.created}  {snapshot.status}")


@app.command("restore-drill")
def restore_drill_command(
    stack: Annotated[
        str | None, typer.Option("--stack", help="Pulumi stack name, e.g. dev.")
    ] = None,
    twin_state_dir: Annotated[
        Path | None,
        typer.Option(
            "--twin",
            help="Drill a process twin instead (its state dir): pg_dump/pg_restore stand in "
            "for the snapshot.",
            file_okay=False,
        ),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option("--snapshot", help="Snapshot to restore (default: the newest manual one)."),
    ] = None,
    model_name: Annotated[
        str, typer.Option("--model-name", help="Registered model whose champion must predict.")
    ] = drill.DEFAULT_MODEL,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the drill's stack instead of destroying it.")
    ] = False,
) -> None:
    """Restore the stack's newest backup into an ephemeral stack, smoke-test it, destroy it."""
    if (stack is None) == (twin_state_dir is None):
        raise OpsError("give either --stack NAME or --twin STATE_DIR")
    if twin_state_dir is not None:
        report = drill.restore_drill_twin(
            twin_state_dir, typer.echo, model_name=model_name, keep=keep
        )
        stack = f"twin {twin_state_dir}"
    else:
        assert stack is not None
        report = drill.restore_drill(
            stack, typer.echo, snapshot_id=snapshot, model_name=model_name, keep=keep
        )
    for step in report.steps:
        typer.echo(f"{'ok' if step.ok else 'FAIL':<4}  {step.step:<9}  {step.seconds:6.0f} s")
    if not report.passed:
        failed = [step.step for step in report.steps if not step.ok]
        raise OpsError(f"restore drill of stack {stack} failed at: {', '.join(failed)}")
    typer.echo(
        f"restore drill of stack {stack} passed in {sum(s.seconds for s in report.steps):.0f} s"
    )


@app.command("cost")
def cost_command(
    stack: StackOption,
    prices: Annotated[
        bool, typer.Option("--prices", help="Also print the price table the estimate uses.")
    ] = False,
) -> None:
    """Estimate the stack's monthly cost from its configuration (no CLI or AWS access needed)."""
    result = cost.estimate(cost.sizes_of(stack, cost.stack_settings(stack)))
    for line in cost.report(result):
        typer.echo(line)
    if prices:
        for line in cost.price_table(result.prices):
            typer.echo(line)


@upgrade_app.command("plan")
def upgrade_plan(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    twin_state_dir: Annotated[
        Path | None,
        typer.Option(
            "--twin",
            help="The process twin's state dir: also read its databases' schema revisions.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Current (running) and target (host lock) versions of MLflow and Prefect, and the
    schema revisions the upgrade migrates (take a snapshot first: docs/day2.md)."""
    keys = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    result = upgrade.plan(load_env(env_file, keys), twin_state_dir=twin_state_dir)
    for line in upgrade.report(result):
        typer.echo(line)
    if result.blocked:
        raise OpsError(
            f"the target cannot migrate {', '.join(result.blocked)}: it is at a revision the "
            "pinned versions do not know (a downgrade?)"
        )


app.command("deploy")(deploy.deploy_command)
app.command("run")(deploy.run_command)


def main() -> None:
    """Entry point of the ``mlops`` console script."""
    app()

"""``mlops twin up|status|down`` (registered in scripts/cli.py as ``mlops twin``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scripts.common import DEFAULT_ENV_FILE, EnvFileOption, OpsError
from scripts.env import describe
from scripts.twin import hosts
from scripts.twin.lifecycle import down, status_lines, up
from scripts.twin.settings import DEFAULT_NAME, DEFAULT_STATE_DIR, TwinConfig

app = typer.Typer(
    help="The local twin: the hosts' services on loopback, from their rendered units.",
    no_args_is_help=True,
)
StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the twin keeps its state, env files and logs "
        f"[default: {DEFAULT_STATE_DIR.name}, with --hosts {hosts.DEFAULT_HOSTS_STATE_DIR.name}]",
        file_okay=False,
        show_default=False,
    ),
]
HostsOption = Annotated[
    bool,
    typer.Option(
        "--hosts",
        help="The host twin: the rendered hosts booted under cloud-init and systemd in "
        "containers at their stack addresses (Linux, as root).",
    ),
]


def _state_dir(given: Path | None, with_hosts: bool) -> Path:
    """The state dir given, or the default of the mode."""
    if given is not None:
        return given
    return hosts.DEFAULT_HOSTS_STATE_DIR if with_hosts else DEFAULT_STATE_DIR


@app.command("up")
def up_command(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    state_dir: StateDirOption = None,
    name: Annotated[
        str, typer.Option("--name", help="PostgreSQL role and database prefix of this twin.")
    ] = DEFAULT_NAME,
    with_hosts: HostsOption = False,
    workers: Annotated[
        int, typer.Option("--workers", help="With --hosts: how many worker hosts.")
    ] = 1,
    index_refuse_seconds: Annotated[
        float,
        typer.Option(
            "--index-refuse-seconds",
            help="With --hosts: the package index refuses connections this long (a fault).",
        ),
    ] = 0.0,
    dask_workers: Annotated[
        int,
        typer.Option(
            "--dask-workers",
            help="The stack's daskWorkers: a TLS Dask scheduler (the control host's) and this "
            "many Dask workers (with --hosts: one on each of that many worker hosts); 0: no Dask.",
        ),
    ] = 0,
) -> None:
    """Start the S3 emulator, MLflow, Prefect server and a worker (with --dask-workers, a
    Dask scheduler and workers); write the env file."""
    directory = _state_dir(state_dir, with_hosts)
    if with_hosts:
        config = hosts.HostsConfig(
            state_dir=directory,
            name=name,
            workers=workers,
            index_refuse_seconds=index_refuse_seconds,
            dask_workers=dask_workers,
        )
        values = hosts.up(config, env_file, typer.echo).env()
    else:
        twin = TwinConfig(state_dir=directory, name=name, dask_workers=dask_workers)
        values = up(twin, env_file, typer.echo).env()
    typer.echo(f"twin up; wrote {env_file} (mode 0600):")
    for line in describe(values):
        typer.echo(f"  {line}")


@app.command("status")
def status_command(state_dir: StateDirOption = None, with_hosts: HostsOption = False) -> None:
    """Show each service of the twin: up, starting or down, pid, port and memory
    (with --hosts: each host's units, active or failed)."""
    directory = _state_dir(state_dir, with_hosts)
    lines, healthy = hosts.status(directory) if with_hosts else status_lines(directory)
    for line in lines:
        typer.echo(line)
    if not healthy:
        raise OpsError("not every service of the twin is up")


@app.command("down")
def down_command(state_dir: StateDirOption = None, with_hosts: HostsOption = False) -> None:
    """Stop every process the twin started, drop its databases and role, remove its state
    (with --hosts: every mlt- container, namespace, link, rule and process, even after a crash)."""
    directory = _state_dir(state_dir, with_hosts)
    if with_hosts:
        for line in hosts.down(directory):
            typer.echo(f"removed {line}")
    else:
        down(directory)
    typer.echo(f"twin down; logs kept in {directory / 'logs'}")

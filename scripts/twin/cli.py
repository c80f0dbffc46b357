"""``mlops twin up|status|down`` (registered in scripts/cli.py as ``mlops twin``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scripts.common import DEFAULT_ENV_FILE, EnvFileOption, OpsError
from scripts.env import describe
from scripts.twin.lifecycle import down, status_lines, up
from scripts.twin.settings import DEFAULT_NAME, DEFAULT_STATE_DIR, TwinConfig

app = typer.Typer(
    help="The local twin: the hosts' services on loopback, from their rendered units.",
    no_args_is_help=True,
)
StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir", help="Where the twin keeps its state, env files and logs.", file_okay=False
    ),
]


@app.command("up")
def up_command(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    name: Annotated[
        str, typer.Option("--name", help="PostgreSQL role and database prefix of this twin.")
    ] = DEFAULT_NAME,
) -> None:
    """Start the S3 emulator, MLflow, Prefect server and a worker; write the env file."""
    twin = up(TwinConfig(state_dir=state_dir, name=name), env_file, typer.echo)
    typer.echo(f"twin up; wrote {env_file} (mode 0600):")
    for line in describe(twin.env()):
        typer.echo(f"  {line}")


@app.command("status")
def status_command(state_dir: StateDirOption = DEFAULT_STATE_DIR) -> None:
    """Show each service of the twin: up, starting or down, pid, port and memory."""
    lines, healthy = status_lines(state_dir)
    for line in lines:
        typer.echo(line)
    if not healthy:
        raise OpsError("not every service of the twin is up")


@app.command("down")
def down_command(state_dir: StateDirOption = DEFAULT_STATE_DIR) -> None:
    """Stop every process the twin started, drop its databases and role, remove its state."""
    down(state_dir)
    typer.echo(f"twin down; logs kept in {state_dir / 'logs'}")

"""``mlops deploy`` and ``mlops run``: the training flow on whatever environment the env file names.

Both talk to the Prefect server given by ``PREFECT_API_URL`` with ``PREFECT_API_AUTH_STRING``
(an AWS stack through ``mlops tunnel``, or the local twin); a rejected credential or an
unreachable server is one clear error naming the variable, never a traceback.

``deploy`` runs ``prefect --no-prompt deploy`` on the repository's ``prefect.yaml``, from a
staging directory holding just that file, ``.prefectignore`` and the flow's package (the
push step then uploads the package without walking the virtualenv), with
``MLOPS_ARTIFACT_BUCKET`` set to the bucket of ``PIPELINE_DATA_DIR``: the flow code goes to
that bucket's ``flow-code/`` prefix.

``run`` starts a flow run of a deployment, prints its state changes and logs as they come,
and ends with the run's metrics artifact: exit 0 when the run completes, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import typer
from hostboot.names import METRICS_ARTIFACT_KEY

from scripts.common import DEFAULT_ENV_FILE, REPO_ROOT, EnvFileOption, OpsError, load_env

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

PREFECT_KEYS = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")
DEFAULT_DEPLOYMENT = "training/training"
FLOW_PACKAGE = "pipeline"
DEPLOY_FILES = ("prefect.yaml", ".prefectignore")
_POLL_SECONDS = 2.0


class PrefectApiError(OpsError):
    """The Prefect server refused the credential or could not be reached."""


@contextmanager
def prefect_client(env: Mapping[str, str], *, retries: int = 3) -> Iterator[SyncPrefectClient]:
    """A Prefect API client on ``env``'s server and auth string; errors name the variable."""
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    url = env["PREFECT_API_URL"]
    updates = {
        PREFECT_API_URL: url,
        PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"],
        PREFECT_CLIENT_MAX_RETRIES: retries,
    }
    try:
        with temporary_settings(updates=updates), get_client(sync_client=True) as client:
            yield client
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 401:
            raise PrefectApiError(
                f"the Prefect server at {url} rejected PREFECT_API_AUTH_STRING (HTTP 401)"
            ) from None
        raise
    except httpx.TransportError as exc:
        raise PrefectApiError(
            f"cannot reach the Prefect server at PREFECT_API_URL={url}: {exc}"
        ) from None


def check_prefect(env: Mapping[str, str]) -> None:
    """Fail early, naming the variable, if the server is unreachable or refuses the auth string."""
    with prefect_client(env, retries=0) as client:
        client.hello().raise_for_status()


def flow_code_bucket(data_dir: str) -> str:
    """The artifact bucket, read from ``PIPELINE_DATA_DIR`` (``s3://<bucket>/data``)."""
    parts = urlsplit(data_dir)
    if parts.scheme != "s3" or not parts.netloc:
        raise OpsError(
            f"PIPELINE_DATA_DIR must be s3://<artifact bucket>/data to name the bucket the flow "
            f"code goes to, got {data_dir!r}"
        )
    return parts.netloc


def stage(directory: Path) -> None:
    """Copy what ``prefect deploy`` needs (prefect.yaml, .prefectignore, the flow's package)."""
    for name in DEPLOY_FILES:
        shutil.copy2(REPO_ROOT / name, directory / name)
    shutil.copytree(
        REPO_ROOT / FLOW_PACKAGE,
        directory / FLOW_PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def deploy(env: Mapping[str, str], deployment: str | None) -> None:
    """Register ``deployment`` (``flow/name``), or all of prefect.yaml's, pushing the flow code."""
    bucket = flow_code_bucket(env["PIPELINE_DATA_DIR"])
    check_prefect(env)
    prefect = str(Path(sys.executable).with_name("prefect"))
    which = ["--name", deployment] if deployment else ["--all"]
    process_env = {**os.environ, **env, "MLOPS_ARTIFACT_BUCKET": bucket}
    if "AWS_REGION" in env:  # boto3 reads the region from AWS_DEFAULT_REGION
        process_env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    with tempfile.TemporaryDirectory(prefix="mlops-deploy-") as directory:
        stage(Path(directory))
        code = subprocess.run(
            [prefect, "--no-prompt", "deploy", *which],
            cwd=directory,
            env=process_env,
            check=False,
        ).returncode
    if code:
        raise OpsError(f"`prefect deploy` failed with exit status {code} (its output is above)")


@dataclass(frozen=True)
class RunOutcome:
    """How a followed flow run ended."""

    flow_run_id: UUID
    name: str
    state: str
    message: str


def run_parameters(
    client: SyncPrefectClient, deployment_id: UUID, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The deployment's parameters with ``overrides`` applied inside the flow's one model."""
    defaults = dict(client.read_deployment(deployment_id).parameters)
    model = {**defaults.get("parameters", {}), **overrides}
    return {**defaults, "parameters": model}


def start_run(client: SyncPrefectClient, deployment: str, overrides: Mapping[str, Any]) -> FlowRun:
    """Create a flow run of ``deployment``; unknown deployment or bad parameters are OpsErrors."""
    from prefect.exceptions import ObjectNotFound

    try:
        found = client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        raise OpsError(
            f"deployment {deployment!r} does not exist on {client.api_url}: run `mlops deploy`"
        ) from None
    except ValueError as exc:
        raise OpsError(str(exc)) from None
    parameters = run_parameters(client, found.id, overrides)
    try:
        return client.create_flow_run_from_deployment(found.id, parameters=parameters)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (409, 422):
            detail = exc.response.json().get("detail", exc.response.text)
            raise OpsError(f"Prefect refused the run's parameters {parameters}: {detail}") from None
        raise


def follow(
    client: SyncPrefectClient, flow_run: FlowRun, timeout: float, say: Callable[[str], None]
) -> RunOutcome:
    """Print ``flow_run``'s state changes and logs until it ends or ``timeout`` seconds pass."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
    shown: set[UUID] = set()
    last_state = ""
    while True:
        current = client.read_flow_run(flow_run.id)
        state = current.state
        for log in client.read_logs(log_filter):
            if log.id not in shown:
                shown.add(log.id)
                say(f"  {log.timestamp:%H:%M:%S} {log.message}")
        if state is not None and state.name and state.name != last_state:
            last_state = state.name
            say(f"flow run {current.name}: {state.name}")
        if state is not None and state.is_final():
            return RunOutcome(current.id, current.name, state.type.value, state.message or "")
        if time.monotonic() > deadline:
            raise OpsError(
                f"flow run {current.name} is still {last_state or 'pending'} after "
                f"{timeout:.0f} s; it goes on without us (see it in the Prefect UI)"
            )
        time.sleep(_POLL_SECONDS)


def metrics_artifact(client: SyncPrefectClient, flow_run_id: UUID) -> str | None:
    """The markdown of the run's metrics artifact, if it published one."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[METRICS_ARTIFACT_KEY])),
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
    )
    return str(artifacts[0].data) if artifacts else None


def run(
    env: Mapping[str, str],
    deployment: str,
    overrides: Mapping[str, str],
    timeout: float,
    say: Callable[[str], None],
) -> RunOutcome:
    """Start a run of ``deployment`` and follow it; an OpsError unless it completes."""
    with prefect_client(env) as client:
        flow_run = start_run(client, deployment, overrides)
        say(f"started flow run {flow_run.name} ({flow_run.id}) of {deployment}")
        outcome = follow(client, flow_run, timeout, say)
        if outcome.state != "COMPLETED":
            raise OpsError(
                f"flow run {outcome.name} ended {outcome.state}: {outcome.message or 'no message'}"
            )
        summary = metrics_artifact(client, outcome.flow_run_id)
    if summary:
        say(summary)
    return outcome


def parse_overrides(assignments: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` assignments as a mapping; anything else is an OpsError naming it."""
    overrides = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise OpsError(f"--set expects KEY=VALUE (e.g. color=yellow), got {assignment!r}")
        overrides[key] = value
    return overrides


# -- command line (registered in scripts/cli.py as `mlops deploy` and `mlops run`) -------------


def deploy_command(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    name: Annotated[
        str | None,
        typer.Option("--name", help="One deployment, e.g. training/training (default: all)."),
    ] = None,
) -> None:
    """Deploy prefect.yaml's deployments; the flow code goes to the bucket's flow-code/."""
    deploy(load_env(env_file, (*PREFECT_KEYS, "PIPELINE_DATA_DIR")), name)


def run_command(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    deployment: Annotated[
        str, typer.Option("--deployment", help="Deployment to run, as flow/name.")
    ] = DEFAULT_DEPLOYMENT,
    train_month: Annotated[
        str | None, typer.Option("--train-month", help="YYYY-MM (default: the deployment's).")
    ] = None,
    val_month: Annotated[
        str | None, typer.Option("--val-month", help="YYYY-MM (default: the deployment's).")
    ] = None,
    color: Annotated[
        str | None, typer.Option("--color", help="green or yellow (default: the deployment's).")
    ] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other flow parameter, KEY=VALUE (repeatable)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to follow the run.")
    ] = 3600,
) -> None:
    """Start a training run and follow it to the end (exit status 1 unless it completes)."""
    named = {"train_month": train_month, "val_month": val_month, "color": color}
    overrides = {
        **parse_overrides(assignments or []),
        **{key: value for key, value in named.items() if value is not None},
    }
    run(load_env(env_file, PREFECT_KEYS), deployment, overrides, timeout, typer.echo)

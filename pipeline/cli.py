"""Command line: ``python -m pipeline train --train-month YYYY-MM --val-month YYYY-MM ...``.

Runs the ``training`` flow and prints, as the last line of standard output, one JSON object
(run_id, rmse, model_name, model_version, aliases, ...). Logs go to standard error. Expected
failures (bad arguments, missing or unusable data, no network, a server refusing the
credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or PREFECT_API_AUTH_STRING)
print one ``error:`` line on standard error and exit with status 1, without a traceback.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError

from pipeline import temporary_server
from pipeline.errors import PipelineError
from pipeline.imports import collector_paused
from pipeline.parameters import TrainingParameters
from pipeline.schema import TLC_BASE_URL
from pipeline.urls import redact

# Without PREFECT_API_URL, the first start of the temporary API server creates its database:
# on a slow or busy machine that takes longer than Prefect's 20 s default.
_STARTUP_TIMEOUT = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

_DASK_WAIT_OPTION = typer.Option(
    help="With --dask-address: runs on that cluster take turns; wait at most this many "
    "seconds for this run's, then fail naming the run holding it [default: 3600].",
    show_default=False,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, track and register NYC taxi trip-duration models.",
)


@app.callback()
def _commands() -> None:
    """Train, track and register NYC taxi trip-duration models."""


@app.command()
def train(
    val_month: Annotated[str, typer.Option(help="Month to validate on, YYYY-MM.")],
    train_month: Annotated[
        str | None, typer.Option(help="Month to train on, YYYY-MM (or --train-months).")
    ] = None,
    train_months: Annotated[
        str | None,
        typer.Option(help="Months to train on instead: FROM..TO inclusive, e.g. 2022-11..2023-01."),
    ] = None,
    color: Annotated[str, typer.Option(help="Trip-record colour: green or yellow.")] = "green",
    data_dir: Annotated[
        str | None,
        typer.Option(
            help="Local directory or s3://bucket/prefix with the monthly files "
            "[default: $PIPELINE_DATA_DIR, else ./data]",
            show_default=False,
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(help="Registered model name [default: trip-duration-<color>]"),
    ] = None,
    tlc_base_url: Annotated[
        str,
        typer.Option(
            help="Where missing months are downloaded from: the TLC site or an https mirror "
            "(its files are cached apart)."
        ),
    ] = TLC_BASE_URL,
    allow_insecure_mirror: Annotated[
        bool,
        typer.Option(help="Allow a plain-http --tlc-base-url (a mirror on a trusted network)."),
    ] = False,
    engine: Annotated[
        str, typer.Option(help="local (one process) or dask (a Dask cluster, docs/dask.md).")
    ] = "local",
    dask_address: Annotated[
        str | None, typer.Option(help="With --engine dask: the scheduler, tcp://HOST:PORT.")
    ] = None,
    dask_workers: Annotated[
        int | None,
        typer.Option(help="With --engine dask: a local cluster of N worker processes instead."),
    ] = None,
    dask_memory_limit: Annotated[
        str | None, typer.Option(help="Memory limit of each local Dask worker, e.g. 512MiB.")
    ] = None,
    dask_wait_seconds: Annotated[int | None, _DASK_WAIT_OPTION] = None,
) -> None:
    """Train on a month (or a window), validate on another, track in MLflow, register the model."""
    if train_month is None and train_months is None:
        _fail("give the months to train on: --train-month YYYY-MM or --train-months FROM..TO")
    _wait_needs_an_address(dask_wait_seconds, dask_address)
    try:
        parameters = TrainingParameters(
            train_month=train_month,
            train_months=train_months,
            val_month=val_month,
            color=color,  # type: ignore[arg-type]  # validated by the model
            data_dir=data_dir,
            model_name=model_name,
            tlc_base_url=tlc_base_url,
            allow_insecure_mirror=allow_insecure_mirror,
            engine=engine,  # type: ignore[arg-type]  # validated by the model
            dask_address=dask_address,
            dask_workers=dask_workers,
            dask_memory_limit=dask_memory_limit,
            **_given(dask_wait_seconds=dask_wait_seconds),
        )
    except ValidationError as exc:
        _fail(_describe(exc))
    typer.echo(_run_flow("training", parameters).model_dump_json())


@app.command()
def tune(
    val_month: Annotated[str, typer.Option(help="Month to validate each trial on, YYYY-MM.")],
    train_month: Annotated[
        str | None, typer.Option(help="Month to train on, YYYY-MM (or --train-months).")
    ] = None,
    train_months: Annotated[
        str | None, typer.Option(help="Months to train on instead: FROM..TO inclusive.")
    ] = None,
    trials: Annotated[int, typer.Option(help="Trials in all.")] = 20,
    parallel: Annotated[int, typer.Option(help="Trials at once (Dask worker processes).")] = 2,
    seed: Annotated[
        int, typer.Option(help="Sampler seed: the same seed draws the same trials.")
    ] = 0,
    color: Annotated[str, typer.Option(help="Trip-record colour: green or yellow.")] = "green",
    data_dir: Annotated[
        str | None,
        typer.Option(
            help="Local directory or s3://bucket/prefix with the monthly files "
            "[default: $PIPELINE_DATA_DIR, else ./data]",
            show_default=False,
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "trip-duration",
    dask_address: Annotated[
        str | None,
        typer.Option(help="Run the trials on this scheduler, tcp://HOST:PORT [default: local]."),
    ] = None,
    dask_wait_seconds: Annotated[int | None, _DASK_WAIT_OPTION] = None,
) -> None:
    """Search the hyperparameters: trials in parallel on Dask, each a nested MLflow run.

    Prints the best configuration, usable as the training flow's `hyperparameters`.
    """
    if train_month is None and train_months is None:
        _fail("give the months to train on: --train-month YYYY-MM or --train-months FROM..TO")
    _wait_needs_an_address(dask_wait_seconds, dask_address)
    from pipeline.tuning import TuningParameters

    try:
        parameters = TuningParameters.model_validate(
            {
                "training": {
                    "train_month": train_month,
                    "train_months": train_months,
                    "val_month": val_month,
                    "color": color,
                    "data_dir": data_dir,
                    "experiment": experiment,
                },
                "trials": trials,
                "parallel": parallel,
                "seed": seed,
                "dask_address": dask_address,
                **_given(dask_wait_seconds=dask_wait_seconds),
            }
        )
    except ValidationError as exc:
        _fail(_describe(exc).replace("--training-", "--"))
    typer.echo(_run_flow("tuning", parameters).model_dump_json())


def _wait_needs_an_address(wait_seconds: int | None, address: str | None) -> None:
    """Refuse a wait for a cluster's turn without a cluster that has turns."""
    if wait_seconds is not None and address is None:
        _fail(
            "--dask-wait-seconds applies with --dask-address (runs on a cluster you give take "
            "turns); a local cluster is the run's own"
        )


def _given(**options: Any) -> dict[str, Any]:
    """The options given (not None): the others keep the parameters' defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _run_flow(name: str, parameters: Any) -> Any:
    """Run the flow ``name`` (training or tuning) on ``parameters``; its summary.

    Expected failures end the command with one ``error:`` line.
    """
    os.environ.setdefault(*_STARTUP_TIMEOUT)
    server = _start_temporary_api()
    with collector_paused():
        from pipeline import flows, tracking

        server = _still_needed(server)
        if server is not None:
            # While it boots (the imports above took part of that time), open the tracking store.
            tracking.configure_tracking()
            tracking.open_store()
            tracking.warm_up()
    _hide_tracebacks_of_expected_errors()
    flow = flows.training if name == "training" else flows.tuning_flow
    try:
        with _api(server):
            return flow(parameters)
    except PipelineError as exc:
        _fail(str(exc))
    except httpx.HTTPStatusError as exc:
        refusal = _prefect_refusal(exc)
        if refusal is None:
            raise
        _fail(refusal)


def _start_temporary_api() -> temporary_server.TemporaryServer | None:
    """Start Prefect's temporary API server now, unless PREFECT_API_URL is in the environment.

    Prefect would start it on the flow's first API call, after the pipeline's imports; started
    here, before this process imports even Prefect's settings (a second), it boots while they
    run (see :mod:`pipeline.temporary_server`).
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    return temporary_server.start()


def _still_needed(
    server: temporary_server.TemporaryServer | None,
) -> temporary_server.TemporaryServer | None:
    """``server``, announced, unless Prefect's settings name an API after all (a profile's).

    In that case the server process saw the same settings and is exiting without serving.
    """
    if server is None:
        return None
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        server.stop()
        return None
    server.announce()
    return server


@contextmanager
def _api(server: temporary_server.TemporaryServer | None) -> Iterator[None]:
    """Point the flow at ``server`` once it answers; at the configured API without one.

    Against the temporary server, the flow run sends no heartbeats: they let a lasting server
    tell a crashed run (no heartbeat for a while) from a long one, and this server ends with
    the process. Prefect's heartbeat thread sleeps in whole seconds and the run's end waits for
    it: up to a second (0.5 s on average) on every run of the command line.
    """
    if server is None:
        yield
        return
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    server.wait_until_ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    updates = {PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with temporary_settings(updates=updates):
        yield


def _describe(error: ValidationError) -> str:
    """One line naming each bad option, what it must be and what it got."""
    problems = []
    for detail in error.errors():
        option = "--" + "-".join(str(part) for part in detail["loc"]).replace("_", "-")
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "value_error":
            problems.append(f"{option}: {message}" if detail["loc"] else message)
        else:
            problems.append(f"{option}: {message}, got {redact(repr(detail['input']))}")
    return "; ".join(problems)


def _prefect_refusal(error: httpx.HTTPStatusError) -> str | None:
    """The error line for the Prefect server rejecting PREFECT_API_AUTH_STRING, if that is it."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    refused = error.response.status_code == httpx.codes.UNAUTHORIZED
    if not (refused and url and str(error.request.url).startswith(url)):
        return None
    return f"the Prefect server at {url} rejected PREFECT_API_AUTH_STRING (HTTP 401)"


def _fail(message: str) -> NoReturn:
    """Print ``error: message`` (any URL in it without credentials) on standard error; exit 1."""
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code=1)


class _NoExpectedTracebacks(logging.Filter):
    """Drop the traceback from log records about a :class:`PipelineError` (the message stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info = None
            record.exc_text = None
        return True


def _hide_tracebacks_of_expected_errors() -> None:
    """Prefect logs a failed task's traceback; for expected errors the message is enough."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(known, _NoExpectedTracebacks) for known in handler.filters):
            handler.addFilter(_NoExpectedTracebacks())


def main() -> None:
    """Console entry point."""
    try:
        app()
    finally:
        # Nothing is left to collect: spare the interpreter's final garbage collection over
        # every object MLflow, Prefect and XGBoost created at import (seconds at exit).
        gc.freeze()

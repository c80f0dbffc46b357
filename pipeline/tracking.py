"""Tracking stage: one MLflow run per training, addressed by run ID (no implicit active run).

With ``MLFLOW_TRACKING_URI`` set, runs go to that server (``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` for its basic auth, read by MLflow itself); without it, to the
embedded default: a SQLite store ``mlflow.db`` in the working directory. A server refusing
those credentials is a :class:`~pipeline.errors.PipelineError` naming them (never their
values), not a transient failure: retrying cannot fix a wrong password.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, Schema

from pipeline.data import MonthSummary
from pipeline.errors import PipelineError
from pipeline.evaluate import Evaluation
from pipeline.features import LabeledSet
from pipeline.model import LoggedModel, log_model
from pipeline.urls import redact
from pipeline.xgb import xgboost as xgb

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_MODELS_SCHEME = "models:/"
CODE_VERSION_TAG = "code_version"
ERROR_TAG = "error"
_PACKAGE_DIR = Path(__file__).resolve().parent
_MAX_TAG_CHARS = 5000
# MLflow column types of the loaded trip columns, by numpy dtype kind.
_COLUMN_TYPES = {"M": "datetime", "i": "long", "f": "double"}

P = ParamSpec("P")
R = TypeVar("R")


def mlflow_call(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, with a tracking server's refusal (HTTP 401 or 403) as a PipelineError.

    MLflow raises those as ``MlflowException`` (REST calls) or ``requests.HTTPError``
    (proxied artifacts), which the flow would retry like any I/O failure.
    """

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (MlflowException, requests.HTTPError) as exc:
            refusal = _refusal(_http_status(exc))
            if refusal is None:
                raise
            raise refusal from exc

    return call


def _http_status(error: MlflowException | requests.HTTPError) -> int | None:
    """The HTTP status an MLflow client error stands for, if any."""
    if isinstance(error, MlflowException):
        return error.get_http_status_code()
    return None if error.response is None else error.response.status_code


def _refusal(status: int | None) -> PipelineError | None:
    """The error for a tracking server refusing a request with ``status``, if it is a refusal."""
    server = redact(mlflow.get_tracking_uri())
    if status == 401:
        return PipelineError(
            f"the MLflow server at {server} rejected "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (HTTP 401)"
        )
    if status == 403:
        return PipelineError(
            f"the MLflow server at {server} refused the request (HTTP 403): the user in "
            "MLFLOW_TRACKING_USERNAME lacks the permission, or the server's --allowed-hosts "
            "does not list the host of MLFLOW_TRACKING_URI"
        )
    return None


def configure_tracking() -> str:
    """Point MLflow at ``$MLFLOW_TRACKING_URI`` or the embedded default; returns the URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    return uri


def open_store() -> None:
    """Open the configured tracking store now (a SQLite store is created or upgraded here)."""
    MlflowClient()


_warm_up: threading.Thread | None = None


def warm_up() -> None:
    """Start, once per process, in a thread, the work of the first model logging and
    registration that depends on nothing of the run (about 0.9 s of CPU on 2 cores).

    Done then, it sits on a run's critical path; started here it overlaps the wait for Prefect's
    temporary server (the command line) or the stages (a deployed run):

    - the map of every installed distribution to its modules, which MLflow builds once per
      process to check a model's requirements against the environment (0.55 s);
    - the run context MLflow resolves when it creates the logged model: the entry point's git
      commit, through GitPython (0.17 s);
    - the model registry's store (its plugins' entry points, a SQLite engine: 0.18 s);
    - matplotlib, which the plots need once the model is trained.

    :func:`log_training` waits for it first, so MLflow never does the same work twice at once.
    A failure here is left for the real call to raise where it belongs.
    """
    global _warm_up
    if _warm_up is None:
        _warm_up = threading.Thread(target=_warm, name="mlflow-warm-up", daemon=True)
        _warm_up.start()


def _warm() -> None:
    """The work of :func:`warm_up` (MLflow's private caches: a test checks each is filled)."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.requirements_utils import _init_modules_to_packages_map

    for step in (
        _init_modules_to_packages_map,
        resolve_tags,
        lambda: MlflowClient()._get_registry_client(),
        lambda: __import__("pipeline.plots"),
    ):
        with contextlib.suppress(Exception):  # the same call fails again where it is made
            step()


def _warmed() -> None:
    """Wait for :func:`warm_up`, if started."""
    if _warm_up is not None:
        _warm_up.join()


def code_version() -> str:
    """A digest of the pipeline's source: the same on a laptop and on a worker without git."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"sha256:{digest.hexdigest()[:16]}"


@mlflow_call
def start_run(*, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
    """Create a run in ``experiment`` (made the active experiment) and return its ID."""
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    run = MlflowClient().create_run(
        experiment_id, run_name=run_name, tags={**tags, CODE_VERSION_TAG: code_version()}
    )
    return run.info.run_id


@mlflow_call
def log_training(
    run_id: str,
    *,
    params: Mapping[str, object],
    months: Sequence[tuple[MonthSummary, str]],
    booster: xgb.Booster,
    val: LabeledSet,
    evaluation: Evaluation,
) -> LoggedModel:
    """Log parameters, metrics, datasets (with their context), plots and the model.

    Returns the logged model (its URI and its files' digest). Against a tracking server each
    client call below is a request (the model: a few, and one per file): the parameters go
    first (the logged model copies the run's), the metrics last, in one batch that records them
    on the run and on the logged model (else MLflow reads each metric's history back to link it
    to the model); the plots are drawn while the model uploads.
    """
    _warmed()
    client = MlflowClient()
    now = int(time.time() * 1000)
    metrics = {**evaluation.metrics(), "trees": booster.num_boosted_rounds()}
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    client.log_inputs(
        run_id, datasets=[_dataset_input(month, context) for month, context in months]
    )
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(1) as drawing:
        plots = drawing.submit(_draw_plots, Path(scratch), booster, val, evaluation)
        model = log_model(run_id, booster, val.trips)
        model_id = model.uri.removeprefix(_MODELS_SCHEME)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0, model_id=model_id) for k, v in metrics.items()],
        )
        plots.result()
        client.log_artifacts(run_id, scratch, artifact_path="plots")
    return model


def _draw_plots(
    directory: Path, booster: xgb.Booster, val: LabeledSet, evaluation: Evaluation
) -> None:
    """Save the run's plots in ``directory`` (matplotlib is imported here, when first needed)."""
    from pipeline.plots import feature_importance, predicted_vs_actual

    feature_importance(booster).savefig(directory / "feature_importance.png")
    predicted_vs_actual(val.target, evaluation.predictions).savefig(
        directory / "predicted_vs_actual.png"
    )


def _dataset_input(month: MonthSummary, context: str) -> DatasetInput:
    """The run input describing one month of trip records.

    Built directly (not with ``mlflow.data.from_pandas``, which infers the schema and digest
    row by row: seconds per month) from the known columns and a vectorised content hash.
    """
    schema = Schema(
        [ColSpec(_COLUMN_TYPES[kind], name) for name, kind in month.column_kinds.items()]
    )
    dataset = Dataset(
        name=f"{month.color}_tripdata_{month.month}",
        digest=month.digest,
        source_type="s3" if month.source.startswith("s3://") else "local",
        source=json.dumps({"uri": month.source}),
        schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
        profile=json.dumps(
            {"num_rows": month.rows, "num_elements": month.rows * len(month.column_kinds)}
        ),
    )
    tags = [
        InputTag(key="mlflow.data.context", value=context),
        InputTag(key="month", value=month.month),
        InputTag(key="rows", value=str(month.rows)),
    ]
    return DatasetInput(dataset=dataset, tags=tags)


@mlflow_call
def log_nested_run(
    parent_run_id: str,
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
) -> str:
    """A finished run nested under ``parent_run_id`` (as MLflow's UI groups them); its ID."""
    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={"mlflow.parentRunId": parent_run_id, CODE_VERSION_TAG: code_version()},
    )
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)) for key, value in params.items()],
    )
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run.info.run_id


BEST_CONFIGURATION_ARTIFACT = "best_hyperparameters.json"


@mlflow_call
def log_best_configuration(
    run_id: str, *, config: Mapping[str, object], metrics: Mapping[str, float]
) -> None:
    """The search's best configuration: ``best.*`` params, metrics and a JSON artifact.

    The artifact is the training flow's ``hyperparameters`` parameter as it is.
    """
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        params=[Param(f"best.{key}", str(value)) for key, value in config.items()],
    )
    client.log_dict(run_id, dict(config), BEST_CONFIGURATION_ARTIFACT)


@mlflow_call
def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Add ``tags`` to the run (in one request)."""
    MlflowClient().log_batch(
        run_id, tags=[RunTag(key, value[:_MAX_TAG_CHARS]) for key, value in tags.items()]
    )


@mlflow_call
def end_run(run_id: str, error: BaseException | None = None) -> None:
    """Mark the run FINISHED, or FAILED with the error's message as a tag."""
    client = MlflowClient()
    if error is None:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return
    message = redact(str(error)) or type(error).__name__
    client.set_tag(run_id, ERROR_TAG, message[:_MAX_TAG_CHARS])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


@contextmanager
def finishing(run_id: str) -> Iterator[None]:
    """End the run with the block: FAILED if it raised (the error propagates), else FINISHED."""
    try:
        yield
    except BaseException as error:
        try:
            end_run(run_id, error)
        except Exception as close_error:
            error.add_note(f"MLflow run {run_id} could not be marked FAILED: {close_error}")
        raise
    end_run(run_id)


@mlflow_call
def run_link(tracking_uri: str, run_id: str) -> str:
    """A browsable link to the run on a tracking server, or where to find it locally."""
    shown = redact(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        experiment_id = MlflowClient().get_run(run_id).info.experiment_id
        return f"{shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} in {shown} (mlflow ui --backend-store-uri {shown})"

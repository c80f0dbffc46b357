"""Prefect flow ``training``: load -> features -> train -> evaluate -> track -> register.

Deployment entrypoint: ``pipeline/flows.py:training``. The flow takes one parameter,
``parameters`` (:class:`pipeline.parameters.TrainingParameters`, a form in the Prefect UI):

- ``train_month``, ``val_month``: ``YYYY-MM``, both or neither (they must differ). Without
  them the run takes the latest published months at its scheduled start
  (``prefect.runtime.flow_run.scheduled_start_time``; a manual run's is its creation):
  validation on the latest month that ended at least ``publication_lag_months`` before the
  start's month, training on the month before. A scheduled deployment thus moves on by
  itself: with the default lag of 2, the run of 2024-04-03 trains on 2023-12 and validates
  on 2024-01. The months a run took are in its log, its MLflow tags and its summary.
- ``publication_lag_months``: months the TLC takes to publish a month's records (default 2)
- ``color``: ``green`` (default) or ``yellow``
- ``data_dir``: local directory or ``s3://bucket/prefix``; default ``$PIPELINE_DATA_DIR``,
  else ``./data``. Missing months are downloaded there from ``tlc_base_url``.
- ``model_name``: registered model, default ``trip-duration-<color>``
- ``experiment``: MLflow experiment, default ``trip-duration``
- ``tlc_base_url``: the TLC trip-record site (or a mirror)
- ``hyperparameters``: :class:`pipeline.train.TrainConfig`

It returns a :class:`pipeline.parameters.TrainingSummary` and publishes a markdown artifact
``training-metrics`` with the metrics and a link to the MLflow run. MLflow and Prefect are
found through the usual environment (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``); without
them it uses a SQLite store in the working directory and Prefect's ephemeral API. Nothing
depends on the working directory beyond importing ``pipeline``.

Only I/O is retried (with exponential backoff and jitter): loading a month (download, S3),
MLflow tracking and registration; and only when the failure may be transient, not bad
input. Training has a timeout. The stages themselves are plain functions in the
``pipeline`` modules; the tasks here only wire them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import xgboost as xgb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import Task, exponential_backoff

from pipeline import registry, tracking
from pipeline.data import MonthData, load_month, resolve_data_dir
from pipeline.errors import PipelineError, TransientError
from pipeline.evaluate import Evaluation, evaluate
from pipeline.features import FEATURES, LabeledSet, make_labeled_set
from pipeline.parameters import TrainingParameters, TrainingSummary
from pipeline.train import TrainConfig, train_model

IO_RETRIES = 3
TRAIN_TIMEOUT_SECONDS = 3600
METRICS_ARTIFACT_KEY = "training-metrics"


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O failures, not bad input: a PipelineError is retried only if transient."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, PipelineError) or isinstance(error, TransientError)


P = ParamSpec("P")
R = TypeVar("R")


def _task(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task without caching: its inputs are data frames and boosters, costly to hash."""
    return task(name=name, cache_policy=NO_CACHE, **options)


def _io_task(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task doing I/O: retried with exponential backoff and jitter when worth it."""
    return _task(
        name,
        retries=IO_RETRIES,
        retry_delay_seconds=exponential_backoff(backoff_factor=5),
        retry_jitter_factor=0.5,
        retry_condition_fn=_worth_retrying,
        **options,
    )


@_io_task("start-mlflow-run")
def start_mlflow_run(parameters: TrainingParameters, train_month: str, val_month: str) -> str:
    """Open the MLflow run every later failure is recorded on."""
    tags = {
        "train_month": train_month,
        "val_month": val_month,
        "color": parameters.color,
        "prefect_flow_run_id": str(flow_run.id or ""),
    }
    run_name = f"{parameters.color}-{train_month}-{val_month}"
    return tracking.start_run(experiment=parameters.experiment, run_name=run_name, tags=tags)


@_io_task("load-month", task_run_name="load-{color}-{month}")
def load(data_dir: str, color: str, month: str, base_url: str) -> MonthData:
    """Read one month of trip records (downloading it first if missing)."""
    data = load_month(data_dir, color, month, base_url=base_url)
    get_run_logger().info("%s: %d of %d rows usable", data.source, len(data.trips), data.rows_read)
    return data


@_task("build-features")
def build_features(data: MonthData) -> LabeledSet:
    """Duration target and model features for one month."""
    return make_labeled_set(data.trips, label=data.source)


@_task("train", timeout_seconds=TRAIN_TIMEOUT_SECONDS)
def train(train_set: LabeledSet, val_set: LabeledSet, config: TrainConfig) -> xgb.Booster:
    """Fit the booster with early stopping on the validation month."""
    booster = train_model(train_set, val_set, config)
    get_run_logger().info("trained %d trees", booster.num_boosted_rounds())
    return booster


@_task("evaluate")
def score(booster: xgb.Booster, train_set: LabeledSet, val_set: LabeledSet) -> Evaluation:
    """Validation metrics beside the zone-pair baseline."""
    evaluation = evaluate(booster, train_set, val_set)
    get_run_logger().info(
        "validation RMSE %.4f, MAE %.4f (baseline RMSE %.4f)",
        evaluation.rmse,
        evaluation.mae,
        evaluation.baseline_rmse,
    )
    return evaluation


@_io_task("log-to-mlflow")
def log_to_mlflow(
    run_id: str,
    parameters: TrainingParameters,
    months: tuple[MonthData, MonthData],
    booster: xgb.Booster,
    val_set: LabeledSet,
    evaluation: Evaluation,
) -> str:
    """Track parameters, metrics, datasets, plots and the model; returns the model URI."""
    train_month, val_month = months
    params = {
        **parameters.hyperparameters.model_dump(),
        "color": parameters.color,
        "train_month": train_month.month,
        "val_month": val_month.month,
        "features": ",".join(FEATURES),
    }
    return tracking.log_training(
        run_id,
        params=params,
        months=[(train_month, "training"), (val_month, "validation")],
        booster=booster,
        val=val_set,
        evaluation=evaluation,
    )


@_io_task("score-champion")
def score_champion(
    parameters: TrainingParameters, val_month: MonthData, val_set: LabeledSet
) -> float | None:
    """The current champion's RMSE on this run's validation data; None without a champion."""
    key = registry.validation_key(val_month, val_set)
    return registry.champion_rmse(parameters.registered_model_name, key, val_set)


@_io_task("register-model")
def register(
    model_uri: str,
    parameters: TrainingParameters,
    months: tuple[MonthData, MonthData],
    val_set: LabeledSet,
    evaluation: Evaluation,
    champion_rmse: float | None,
) -> registry.Registration:
    """Register the version as challenger; promote it to champion if it beats the champion."""
    name = parameters.registered_model_name
    train_month, val_month = months
    key = registry.validation_key(val_month, val_set)
    registration = registry.register(
        model_uri,
        model_name=name,
        rmse_value=evaluation.rmse,
        champion_rmse_value=champion_rmse,
        validation_key=key,
        tags={"color": parameters.color, "train_month": train_month.month},
    )
    get_run_logger().info(
        "registered %s version %s with aliases %s (champion RMSE before: %s)",
        name,
        registration.version,
        ", ".join(registration.aliases),
        "none" if champion_rmse is None else f"{champion_rmse:.4f}",
    )
    return registration


@flow(name="training")
def training(parameters: TrainingParameters = TrainingParameters()) -> TrainingSummary:  # noqa: B008
    """Train, evaluate, track and register a trip-duration model for one pair of months."""
    train_month, val_month = parameters.months(flow_run.scheduled_start_time)
    get_run_logger().info("training on %s, validating on %s", train_month, val_month)
    tracking_uri = tracking.configure_tracking()
    data_dir = resolve_data_dir(parameters.data_dir)
    run_id = start_mlflow_run(parameters, train_month, val_month)
    with tracking.finishing(run_id):
        months = (
            load(data_dir, parameters.color, train_month, parameters.tlc_base_url),
            load(data_dir, parameters.color, val_month, parameters.tlc_base_url),
        )
        train_set, val_set = build_features(months[0]), build_features(months[1])
        # The champion does not depend on the new model: when it must be re-scored on this
        # validation month (a new interpreter loading it: seconds), that runs beside training.
        champion = score_champion.submit(parameters, months[1], val_set)
        booster = train(train_set, val_set, parameters.hyperparameters)
        evaluation = score(booster, train_set, val_set)
        model_uri = log_to_mlflow(run_id, parameters, months, booster, val_set, evaluation)
        registration = register(
            model_uri, parameters, months, val_set, evaluation, champion.result()
        )
    summary = TrainingSummary(
        run_id=run_id,
        train_month=train_month,
        val_month=val_month,
        **evaluation.metrics(),
        champion_rmse=registration.champion_rmse,
        model_name=registration.model_name,
        model_version=registration.version,
        aliases=list(registration.aliases),
        mlflow_run=tracking.run_link(tracking_uri, run_id),
    )
    _publish(summary)
    return summary


def _publish(summary: TrainingSummary) -> None:
    """The metrics as a markdown artifact on the flow run."""
    champion = "none" if summary.champion_rmse is None else f"{summary.champion_rmse:.4f}"
    create_markdown_artifact(
        key=METRICS_ARTIFACT_KEY,
        description="Validation metrics of the trained model",
        markdown="\n".join(
            [
                f"## {summary.model_name} version {summary.model_version}",
                "",
                f"Trained on {summary.train_month}, validated on {summary.val_month}.",
                "",
                "| metric | model | baseline (zone-pair mean) |",
                "|---|---|---|",
                f"| RMSE (minutes) | {summary.rmse:.4f} | {summary.baseline_rmse:.4f} |",
                f"| MAE (minutes) | {summary.mae:.4f} | {summary.baseline_mae:.4f} |",
                "",
                f"Previous champion's RMSE on this data: {champion}. "
                f"Aliases: {', '.join(summary.aliases)}.",
                "",
                f"MLflow: {_markdown_link(summary.mlflow_run)}",
            ]
        ),
    )


def _markdown_link(target: str) -> str:
    """``target`` as a markdown link when it is a URL, else as text."""
    return f"[{target}]({target})" if target.startswith(("http://", "https://")) else target

"""Prefect flow ``training``: load -> features -> train -> evaluate -> track -> register -> promote.

Deployment entrypoint: ``pipeline/entrypoints.py:training`` (:mod:`pipeline.entrypoints`). The
flow takes one parameter, ``parameters`` (:class:`pipeline.parameters.TrainingParameters`, a
form in the Prefect UI):

- ``train_month`` (or ``train_months``, an inclusive window ``FROM..TO``), ``val_month``:
  ``YYYY-MM``, both or neither (validation outside training). The months of a window are
  loaded concurrently, each cached as a single month is. Without
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
- ``tlc_base_url``: the TLC site (default), or an https mirror whose files are cached apart
  (see :mod:`pipeline.cache`); ``allow_insecure_mirror`` admits a plain-http one
- ``hyperparameters``: :class:`pipeline.train.TrainConfig`
- ``engine``: ``local`` (default) or ``dask`` with ``dask_address`` or ``dask_workers``
  (and ``dask_memory_limit``): see :mod:`pipeline.dask_engine` and docs/dask.md. Runs on a
  cluster given by ``dask_address`` take turns on it, each waiting at most
  ``dask_wait_seconds`` (default an hour) for its own

The second flow, ``tuning`` (entrypoint ``pipeline/entrypoints.py:tuning_flow``), searches the
hyperparameters: seeded Optuna trials (:mod:`pipeline.tuning`) as ``trial`` tasks on
prefect-dask's ``DaskTaskRunner``, each an MLflow run nested under the search's, the best
configuration logged on the search's run (docs/dask.md).

The training flow returns a :class:`pipeline.parameters.TrainingSummary` and publishes a
markdown artifact ``training-metrics`` with the metrics and a link to the MLflow run. MLflow
and Prefect are
found through the usual environment (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``); without
them it uses a SQLite store in the working directory and Prefect's ephemeral API. Nothing
depends on the working directory beyond importing ``pipeline``.

The new version is registered (idempotently: a retry finds the version it created) once
everything is tracked and the metrics artifact is published, and the MLflow run is ended;
only then is it promoted, under a Prefect global concurrency limit per registered model
(``promote-<model name>``, one slot, created on first use) so that concurrent runs compare
with each other's results (see :mod:`pipeline.registry`). A run that fails before promotion
deletes its version and moves no alias.

Only I/O is retried (with exponential backoff and jitter): loading a month (download, S3),
MLflow tracking and registration; and only when the failure may be transient, not bad
input. Training has a timeout. The stages themselves are plain functions in the
``pipeline`` modules; the tasks here only wire them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.tasks import Task, exponential_backoff

from pipeline import registry, tracking, tuning
from pipeline.data import MonthData, MonthSummary, load_month, resolve_data_dir
from pipeline.errors import PipelineError, TransientError
from pipeline.evaluate import Evaluation, evaluate, rmse
from pipeline.features import FEATURES, LabeledSet, combine, make_labeled_set
from pipeline.model import LoggedModel
from pipeline.parameters import TrainingParameters, TrainingSummary, window_label
from pipeline.train import TrainConfig, predict_minutes, train_model
from pipeline.tuning import Trial, TuningParameters, TuningSummary
from pipeline.xgb import xgboost as xgb

IO_RETRIES = 3
TRAIN_TIMEOUT_SECONDS = 3600
# hostboot.names holds the same key for `mlops run` (a worker has no hostboot to import).
METRICS_ARTIFACT_KEY = "training-metrics"
# A promotion takes seconds (a re-scoring at most); a run waiting longer fails and is retried.
PROMOTION_LOCK_TIMEOUT_SECONDS = 600
_LOCK_PREFIX = "promote-"
# Characters Prefect refuses in a concurrency limit's name.
_BANNED_IN_LOCK_NAMES = frozenset("/%&><")


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
def start_mlflow_run(
    parameters: TrainingParameters, train_months: tuple[str, ...], val_month: str
) -> str:
    """Open the MLflow run every later failure is recorded on."""
    train_month = window_label(train_months)
    tags = {
        "train_month": train_month,
        "train_months": ",".join(train_months),
        "val_month": val_month,
        "color": parameters.color,
        "engine": parameters.engine,
        "prefect_flow_run_id": str(flow_run.id or ""),
    }
    run_name = f"{parameters.color}-{train_month}-{val_month}"
    return tracking.start_run(experiment=parameters.experiment, run_name=run_name, tags=tags)


@_io_task("load-month", task_run_name="load-{color}-{month}")
def load(data_dir: str, color: str, month: str, parameters: TrainingParameters) -> MonthData:
    """Read one month of trip records (downloading it first if missing)."""
    data = load_month(
        data_dir,
        color,
        month,
        base_url=parameters.tlc_base_url,
        allow_insecure_mirror=parameters.allow_insecure_mirror,
    )
    get_run_logger().info("%s: %d of %d rows usable", data.origin, len(data.trips), data.rows_read)
    return data


@_task("build-features")
def build_features(data: MonthData) -> LabeledSet:
    """Duration target and model features for one month."""
    return make_labeled_set(data.trips, label=data.source)


def load_concurrently(
    data_dir: str, months: tuple[str, ...], parameters: TrainingParameters
) -> list[MonthData]:
    """Load ``months`` at once (the flow's task runner's threads), in order.

    Every load finishes (or fails) before the first error is raised: none is left running.
    """
    futures = [load.submit(data_dir, parameters.color, month, parameters) for month in months]
    wait(futures)
    return [future.result() for future in futures]


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
    months: tuple[list[MonthSummary], MonthSummary],
    booster: xgb.Booster,
    val_set: LabeledSet,
    evaluation: Evaluation,
) -> LoggedModel:
    """Track parameters, metrics, datasets, plots and the model; returns the logged model."""
    train_months, val_month = months
    params = {
        **parameters.hyperparameters.model_dump(),
        "color": parameters.color,
        "train_month": window_label(tuple(month.month for month in train_months)),
        "val_month": val_month.month,
        "features": ",".join(FEATURES),
        "engine": parameters.engine,
    }
    return tracking.log_training(
        run_id,
        params=params,
        months=[(month, "training") for month in train_months] + [(val_month, "validation")],
        booster=booster,
        val=val_set,
        evaluation=evaluation,
    )


@_io_task("register-model")
def register(
    model: LoggedModel,
    run_id: str,
    parameters: TrainingParameters,
    months: tuple[str, MonthData],
    val_set: LabeledSet,
    evaluation: Evaluation,
) -> registry.Candidate:
    """Register the version (once per flow run, whatever the retries); no alias yet."""
    train_month, val_month = months
    candidate = registry.register(
        model,
        model_name=parameters.registered_model_name,
        run_id=run_id,
        registration_key=str(flow_run.id),
        rmse_value=evaluation.rmse,
        validation_key=registry.validation_key(val_month, val_set),
        tags={"color": parameters.color, "train_month": train_month},
    )
    get_run_logger().info("registered %s version %s", candidate.model_name, candidate.version)
    return candidate


@_io_task("promote-model")
def promote(candidate: registry.Candidate, val_set: LabeledSet) -> registry.Promotion:
    """Challenger, and champion if it beats the champion: compare-and-set under the model's lock."""
    promotion = promote_exclusively(candidate, val_set)
    get_run_logger().info(
        "%s version %s now has aliases %s (champion RMSE compared with: %s)",
        candidate.model_name,
        candidate.version,
        ", ".join(promotion.aliases),
        "none" if promotion.champion_rmse is None else f"{promotion.champion_rmse:.4f}",
    )
    return promotion


def promote_exclusively(candidate: registry.Candidate, val_set: LabeledSet) -> registry.Promotion:
    """:func:`pipeline.registry.promote` holding the model's promotion lock."""
    with promotion_lock(candidate.model_name):
        return registry.promote(candidate, val_set)


def promotion_lock_name(model_name: str) -> str:
    """The global concurrency limit serialising ``model_name``'s promotions."""
    if _BANNED_IN_LOCK_NAMES.isdisjoint(model_name):
        return _LOCK_PREFIX + model_name
    return _LOCK_PREFIX + hashlib.sha256(model_name.encode()).hexdigest()[:32]


@contextmanager
def promotion_lock(model_name: str) -> Iterator[None]:
    """Hold ``model_name``'s promotion lock: one slot of a Prefect global concurrency limit.

    Such limits work with every Prefect backend (SQLite, PostgreSQL, the test harness). The
    limit is created on first use (and set back to one active slot if someone changed it);
    ``strict`` makes a missing limit an error rather than no lock at all.
    """
    name = promotion_lock_name(model_name)
    _ensure_single_slot_limit(name)
    with concurrency(name, occupy=1, timeout_seconds=PROMOTION_LOCK_TIMEOUT_SECONDS, strict=True):
        yield


def _ensure_single_slot_limit(name: str) -> None:
    """Create the global concurrency limit ``name`` with one active slot, idempotently."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            return
        if limit.limit != 1 or not limit.active:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True)
            )


@flow(name="training")
def training(parameters: TrainingParameters = TrainingParameters()) -> TrainingSummary:  # noqa: B008
    """Train, evaluate, track and register a trip-duration model for a window of months."""
    train_months, val_month = parameters.window(flow_run.scheduled_start_time)
    train_month = window_label(train_months)
    get_run_logger().info(
        "training on %s, validating on %s (engine %s)", train_month, val_month, parameters.engine
    )
    tracking_uri = tracking.configure_tracking()
    tracking.warm_up()  # beside the stages (the command line started it already)
    data_dir = resolve_data_dir(parameters.data_dir)
    run_id = start_mlflow_run(parameters, train_months, val_month)
    candidate: registry.Candidate | None = None
    try:
        with tracking.finishing(run_id):
            if parameters.engine == "dask":
                val_data = load(data_dir, parameters.color, val_month, parameters)
                val_set = build_features(val_data)
                trained = on_dask(data_dir, train_months, val_set, parameters, run_id)
                booster, evaluation, summaries = trained
            else:
                *train_data, val_data = load_concurrently(
                    data_dir, (*train_months, val_month), parameters
                )
                train_set = combine([build_features(month) for month in train_data])
                val_set = build_features(val_data)
                booster = train(train_set, val_set, parameters.hyperparameters)
                evaluation = score(booster, train_set, val_set)
                summaries = [MonthSummary.of(month) for month in train_data]
                del train_set, train_data  # the window can be large; the rest needs none of it
            train_rows = sum(summary.rows for summary in summaries)
            record_window(run_id, summaries)
            model = log_to_mlflow(
                run_id,
                parameters,
                (summaries, MonthSummary.of(val_data)),
                booster,
                val_set,
                evaluation,
            )
            candidate = register(
                model, run_id, parameters, (train_month, val_data), val_set, evaluation
            )
            mlflow_run = tracking.run_link(tracking_uri, run_id)
            _publish(candidate, (train_month, val_month), evaluation, mlflow_run)
    except BaseException as error:
        if candidate is not None:
            _discard(candidate, error)
        raise
    # Last, once everything else succeeded: a failed run never moved an alias.
    promotion = promote(candidate, val_set)
    return TrainingSummary(
        run_id=run_id,
        train_month=train_month,
        val_month=val_month,
        train_months=list(train_months),
        train_rows=train_rows,
        engine=parameters.engine,
        **evaluation.metrics(),
        champion_rmse=promotion.champion_rmse,
        model_name=candidate.model_name,
        model_version=candidate.version,
        aliases=list(promotion.aliases),
        mlflow_run=mlflow_run,
    )


@_io_task("record-window")
def record_window(run_id: str, summaries: list[MonthSummary]) -> None:
    """Tag the run with the rows of each month trained on and their total."""
    tags = {f"train_rows.{summary.month}": str(summary.rows) for summary in summaries}
    tags["train_rows"] = str(sum(summary.rows for summary in summaries))
    tracking.set_tags(run_id, tags)


def on_dask(
    data_dir: str,
    train_months: tuple[str, ...],
    val_set: LabeledSet,
    parameters: TrainingParameters,
    run_id: str,
) -> tuple[xgb.Booster, Evaluation, list[MonthSummary]]:
    """The ``train-on-dask`` task on the run's cluster.

    A cluster given by address is taken in turns (:func:`pipeline.dask_engine.cluster_turn`):
    the wait for it happens here, outside the task, so that the task's timeout counts the
    training only; the turn is held until the task ends, however it ends.
    """
    from pipeline import dask_engine

    holder = f"training flow run {flow_run.id} (MLflow run {run_id})"
    with dask_engine.connect(parameters, holder=holder, log=get_run_logger().info) as client:
        return train_on_dask(client, data_dir, train_months, val_set, parameters)


@_task("train-on-dask", timeout_seconds=TRAIN_TIMEOUT_SECONDS)
def train_on_dask(
    client: Any,
    data_dir: str,
    train_months: tuple[str, ...],
    val_set: LabeledSet,
    parameters: TrainingParameters,
) -> tuple[xgb.Booster, Evaluation, list[MonthSummary]]:
    """Load, featurise, train and evaluate on the Dask cluster of ``client`` (a
    ``distributed.Client``); the training months stay there."""
    from pipeline import dask_engine

    logger = get_run_logger()
    logger.info("Dask cluster: %s", dask_engine.describe(client))
    result = dask_engine.train_and_evaluate(
        client,
        data_dir,
        train_months,
        val_set,
        color=parameters.color,
        config=parameters.hyperparameters,
        base_url=parameters.tlc_base_url,
        allow_insecure_mirror=parameters.allow_insecure_mirror,
    )
    logger.info(
        "trained %d trees on %d rows; validation RMSE %.4f",
        result.booster.num_boosted_rounds(),
        sum(summary.rows for summary in result.months),
        result.evaluation.rmse,
    )
    return result.booster, result.evaluation, result.months


def _discard(candidate: registry.Candidate, error: BaseException) -> None:
    """Delete the failed run's version; if that fails too, say so on ``error``."""
    try:
        registry.discard(candidate)
    except Exception as discard_error:
        error.add_note(
            f"{candidate.model_name} version {candidate.version} could not be deleted: "
            f"{discard_error}"
        )


def _publish(
    candidate: registry.Candidate,
    months: tuple[str, str],
    evaluation: Evaluation,
    mlflow_run: str,
) -> None:
    """The metrics as a markdown artifact on the flow run (promotion comes after it)."""
    metrics = evaluation.metrics()
    create_markdown_artifact(
        key=METRICS_ARTIFACT_KEY,
        description="Validation metrics of the trained model",
        markdown="\n".join(
            [
                f"## {candidate.model_name} version {candidate.version}",
                "",
                f"Trained on {months[0]}, validated on {months[1]}.",
                "",
                "| metric | model | baseline (zone-pair mean) |",
                "|---|---|---|",
                f"| RMSE (minutes) | {metrics['rmse']:.4f} | {metrics['baseline_rmse']:.4f} |",
                f"| MAE (minutes) | {metrics['mae']:.4f} | {metrics['baseline_mae']:.4f} |",
                "",
                "Next, the version becomes `challenger`, and `champion` if its RMSE beats the "
                "champion's on this validation month at that moment (the flow run's log and "
                "result say which).",
                "",
                f"MLflow: {_markdown_link(mlflow_run)}",
            ]
        ),
    )


def _markdown_link(target: str) -> str:
    """``target`` as a markdown link when it is a URL, else as text."""
    return f"[{target}]({target})" if target.startswith(("http://", "https://")) else target


@_task("trial", task_run_name="trial-{number}", timeout_seconds=TRAIN_TIMEOUT_SECONDS)
def run_trial(
    number: int, train_set: LabeledSet, val_set: LabeledSet, config: TrainConfig
) -> float:
    """Train one trial's configuration; its validation RMSE."""
    booster = train_model(train_set, val_set, config)
    return rmse(val_set.target, predict_minutes(booster, val_set.features))


@_io_task("log-trial")
def log_trial(parent_run_id: str, experiment: str, trial: Trial) -> str:
    """The trial as an MLflow run nested under the search's."""
    return tracking.log_nested_run(
        parent_run_id,
        experiment=experiment,
        run_name=f"trial-{trial.number}",
        params={**trial.config.model_dump(), "trial": trial.number},
        metrics={"rmse": trial.rmse},
    )


@_io_task("log-best")
def log_best(run_id: str, best: Trial, trials: int) -> None:
    """The best configuration on the search's run: params, RMSE and a JSON for training."""
    tracking.log_best_configuration(
        run_id,
        config=best.config.model_dump(mode="json"),
        metrics={"best_rmse": best.rmse, "best_trial": best.number, "trials": trials},
    )


@flow(name="tuning-trials")
def search(parameters: TuningParameters, run_id: str) -> list[Trial]:
    """Run the trials, ``parallel`` at a time on the flow's task runner (Dask)."""
    logger = get_run_logger()
    training_parameters = parameters.training
    train_months, val_month = training_parameters.window(flow_run.scheduled_start_time)
    data_dir = resolve_data_dir(training_parameters.data_dir)
    months = [
        load(data_dir, training_parameters.color, month, training_parameters)
        for month in (*train_months, val_month)
    ]
    *train_data, val_data = months
    train_set = combine([build_features(month) for month in train_data])
    val_set = build_features(val_data)
    base = _per_worker_threads(training_parameters.hyperparameters, parameters.parallel)
    study = tuning.new_study(parameters.seed)
    trials: list[Trial] = []
    while len(trials) < parameters.trials:
        batch = [
            study.ask() for _ in range(min(parameters.parallel, parameters.trials - len(trials)))
        ]
        configs = [tuning.suggest(trial, base) for trial in batch]
        futures = [
            run_trial.submit(trial.number, train_set, val_set, config)
            for trial, config in zip(batch, configs, strict=True)
        ]
        wait(futures)
        for trial, config, future in zip(batch, configs, futures, strict=True):
            result = Trial(number=trial.number, config=config, rmse=future.result())
            study.tell(trial, result.rmse)
            log_trial(run_id, training_parameters.experiment, result)
            logger.info("trial %d: RMSE %.4f", result.number, result.rmse)
            trials.append(result)
    return trials


@flow(name="tuning")
def tuning_flow(parameters: TuningParameters = TuningParameters()) -> TuningSummary:  # noqa: B008
    """Search the hyperparameters: trials in parallel on Dask, each a nested MLflow run."""
    from prefect_dask import DaskTaskRunner

    training_parameters = parameters.training
    train_months, val_month = training_parameters.window(flow_run.scheduled_start_time)
    tracking.configure_tracking()
    run_id = tracking.start_run(
        experiment=training_parameters.experiment,
        run_name=f"tuning-{training_parameters.color}-{window_label(train_months)}-{val_month}",
        tags={
            "train_month": window_label(train_months),
            "val_month": val_month,
            "color": training_parameters.color,
            "seed": str(parameters.seed),
            "parallel": str(parameters.parallel),
            "prefect_flow_run_id": str(flow_run.id or ""),
        },
    )
    if parameters.dask_address is not None:
        runner = DaskTaskRunner(address=parameters.dask_address)
    else:
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": parameters.parallel,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    with tracking.finishing(run_id):
        with _cluster_turn(parameters, run_id):
            # DaskTaskRunner's futures are Prefect futures; prefect-dask's generic says otherwise.
            trials = search.with_options(task_runner=runner)(parameters, run_id)  # type: ignore[arg-type]
        best = min(trials, key=lambda trial: (trial.rmse, trial.number))
        log_best(run_id, best, len(trials))
    get_run_logger().info("best: trial %d, RMSE %.4f", best.number, best.rmse)
    return TuningSummary(
        run_id=run_id, best_rmse=best.rmse, best_hyperparameters=best.config, trials=trials
    )


@contextmanager
def _cluster_turn(parameters: TuningParameters, run_id: str) -> Iterator[None]:
    """On a cluster given by address: its turn for the whole search, and this run's pipeline
    on its workers before the first trial (the trials import it there; a restart for another
    version mid-search would kill them). A local cluster is the search's own."""
    if parameters.dask_address is None:
        yield
        return
    from pipeline import dask_engine

    with dask_engine.shared_cluster(
        parameters.dask_address,
        holder=f"tuning flow run {flow_run.id} (MLflow run {run_id})",
        wait_seconds=parameters.dask_wait_seconds,
        log=get_run_logger().info,
    ):
        yield


def _per_worker_threads(config: TrainConfig, parallel: int) -> TrainConfig:
    """``config`` sharing the host's cores among ``parallel`` trials (unless nthread is set)."""
    if config.nthread:
        return config
    return config.model_copy(update={"nthread": max(1, (os.cpu_count() or 1) // parallel)})

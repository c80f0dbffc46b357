"""Tuning stage: a seeded Optuna search over :class:`~pipeline.train.TrainConfig`.

Optuna rather than hyperopt: its ask-and-tell interface lets the flow hand each batch of
trials to Prefect tasks (running in parallel on Dask) and report their results back, its TPE
sampler takes a seed, it is maintained and released regularly, and it needs nothing the
pipeline does not already install (SQLAlchemy, alembic, tqdm).

Trials are asked for in batches of ``parallel`` and told in the order they were asked, so a
seed fixes the whole search: the first trials (Optuna's random start-up) depend on the seed
alone, the later ones on the seed and the (deterministic) validation RMSEs before them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.parameters import (
    DASK_WAIT_DESCRIPTION,
    DEFAULT_DASK_WAIT_SECONDS,
    MAX_DASK_WAIT_SECONDS,
    TrainingParameters,
)
from pipeline.train import TrainConfig

if TYPE_CHECKING:
    import optuna

MAX_TRIALS = 500
MAX_PARALLEL = 64


class TuningParameters(BaseModel):
    """A search: what to train on (as a training run), how many trials, how many at once."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    training: TrainingParameters = Field(
        default_factory=TrainingParameters,
        description="The data, experiment and starting hyperparameters (engine local: each "
        "trial trains one model in one Dask worker).",
    )
    trials: int = Field(default=20, ge=1, le=MAX_TRIALS, description="Trials in all.")
    parallel: int = Field(
        default=2, ge=1, le=MAX_PARALLEL, description="Trials running at once (Dask workers)."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the sampler: same seed, same trials.")
    dask_address: str | None = Field(
        default=None,
        description="Run the trials on this Dask scheduler (tcp://HOST:PORT or tls://); "
        "default: a local cluster of `parallel` worker processes. The search holds that "
        "cluster's turn while it runs, and gives its workers this run's pipeline first.",
    )
    dask_wait_seconds: int = Field(
        default=DEFAULT_DASK_WAIT_SECONDS,
        ge=0,
        le=MAX_DASK_WAIT_SECONDS,
        description=DASK_WAIT_DESCRIPTION,
    )


class Trial(BaseModel):
    """One trial: its number, the configuration it trained and the validation RMSE it got."""

    number: int
    config: TrainConfig
    rmse: float


class TuningSummary(BaseModel):
    """What a search found; the command line prints it as one JSON line."""

    run_id: str
    best_rmse: float
    best_hyperparameters: TrainConfig = Field(
        description="Usable as the training flow's `hyperparameters` as it is."
    )
    trials: list[Trial]


def new_study(seed: int) -> optuna.Study:
    """An in-memory study minimising RMSE, sampled by TPE seeded with ``seed``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))


def suggest(trial: optuna.Trial, base: TrainConfig) -> TrainConfig:
    """``base`` with the searched hyperparameters drawn for ``trial``.

    The ranges bracket the defaults tuned on green 2023-01/02; rounds, early stopping, the
    seed and threads stay ``base``'s.
    """
    drawn: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 3, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
    }
    return base.model_copy(update=drawn)

"""The training flow's parameters (a form in the Prefect UI) and its summary.

Kept apart from the flow so the command line validates its arguments without importing Prefect.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.cache import check_base_url
from pipeline.errors import PipelineError
from pipeline.schema import (
    MAX_WINDOW_MONTHS,
    TLC_BASE_URL,
    WINDOW_SEPARATOR,
    Color,
    add_months,
    parse_month,
    parse_month_range,
)
from pipeline.train import TrainConfig

DEFAULT_EXPERIMENT = "trip-duration"
# The TLC publishes a month's trip records within about two months of its end (January's
# during March).
DEFAULT_PUBLICATION_LAG_MONTHS = 2
Engine = Literal["local", "dask"]
_DASK_SCHEMES = ("tcp://", "tls://")
MAX_DASK_WORKERS = 64
# How long a run waits for its turn on a cluster it was given (docs/dask.md).
DEFAULT_DASK_WAIT_SECONDS = 3600
MAX_DASK_WAIT_SECONDS = 24 * 3600
DASK_WAIT_DESCRIPTION = (
    "With dask_address: runs on that cluster take turns; wait at most this long (seconds) for "
    "this run's, then fail naming the run that holds it. 0: do not wait. A local cluster "
    "(dask_workers) is the run's own: no wait."
)
_MEMORY_SIZE = re.compile(r"auto|\d+(\.\d+)?\s*([kKMGT]i?B|[kKMGT]B|B)?")


def published_months(scheduled_start: datetime, publication_lag_months: int) -> tuple[str, str]:
    """Training and validation months for a run scheduled at ``scheduled_start``.

    Validation is the latest month that ended at least ``publication_lag_months`` before the
    start's month (UTC), so its records are published; training is the month before it. With
    a lag of 2, a run on 2024-04-03 validates on 2024-01 and trains on 2023-12.
    """
    start = scheduled_start.astimezone(UTC) if scheduled_start.tzinfo else scheduled_start
    val = add_months(date(start.year, start.month, 1), -(publication_lag_months + 1))
    return f"{add_months(val, -1):%Y-%m}", f"{val:%Y-%m}"


class TrainingParameters(BaseModel):
    """What to train on, where the data lives, and how to name what gets tracked."""

    # A validation error's text (Prefect logs it) would otherwise quote the inputs, and a
    # tlc_base_url may carry credentials.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    train_month: str | None = Field(
        default=None,
        description="Month to train on (YYYY-MM). Give both months or neither; without them "
        "the run trains on the month before the latest published one.",
    )
    train_months: str | None = Field(
        default=None,
        description=f"A window to train on instead of train_month: FROM..TO, inclusive "
        f"(e.g. 2022-11..2023-01), at most {MAX_WINDOW_MONTHS} months; needs val_month "
        "outside it.",
    )
    val_month: str | None = Field(
        default=None,
        description="Month to validate on (YYYY-MM), usually the one after train_month; "
        "without months, the latest month published at the run's scheduled start.",
    )
    engine: Engine = Field(
        default="local",
        description="local: one process trains on the months in memory. dask: the months are "
        "read, featurised and trained on by a Dask cluster (xgboost.dask), dask_address's or a "
        "local one of dask_workers processes; the model logged is the same plain booster.",
    )
    dask_address: str | None = Field(
        default=None,
        description="The Dask scheduler to use with engine dask: tcp://HOST:PORT (or tls://).",
    )
    dask_workers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DASK_WORKERS,
        description="With engine dask and no dask_address: start a local cluster of this many "
        "worker processes for the run.",
    )
    dask_memory_limit: str | None = Field(
        default=None,
        min_length=1,
        description="Memory limit of each local Dask worker (e.g. 512MiB); default: the "
        "host's memory shared among them.",
    )
    dask_wait_seconds: int = Field(
        default=DEFAULT_DASK_WAIT_SECONDS,
        ge=0,
        le=MAX_DASK_WAIT_SECONDS,
        description=DASK_WAIT_DESCRIPTION,
    )
    publication_lag_months: int = Field(
        default=DEFAULT_PUBLICATION_LAG_MONTHS,
        ge=0,
        le=12,
        description="Months the TLC takes to publish a month's records after it ends. Without "
        "months, a run validates on the latest month that ended at least this long before its "
        "scheduled start (with 2: a run in May validates on February) and trains on the one "
        "before.",
    )
    color: Color = Field(default="green", description="Trip-record colour: green or yellow taxis.")
    data_dir: str | None = Field(
        default=None,
        description="Local directory or s3://bucket/prefix holding (and caching) the monthly "
        "files; default $PIPELINE_DATA_DIR, else ./data.",
    )
    model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Registered model name; default trip-duration-<color>.",
    )
    experiment: str = Field(
        default=DEFAULT_EXPERIMENT,
        min_length=1,
        max_length=100,
        description="MLflow experiment name.",
    )
    tlc_base_url: str = Field(
        default=TLC_BASE_URL,
        description="Where missing monthly files are downloaded from: the TLC site, or an https "
        "mirror (cached apart from the TLC's files, never read by runs without it).",
    )
    allow_insecure_mirror: bool = Field(
        default=False,
        description="Allow a plain-http tlc_base_url (a mirror on a trusted network).",
    )
    hyperparameters: TrainConfig = Field(
        default_factory=TrainConfig, description="XGBoost hyperparameters."
    )

    @field_validator("train_month", "val_month")
    @classmethod
    def _is_month(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_month(value)
            except PipelineError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("train_months")
    @classmethod
    def _is_month_range(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_month_range(value)
            except PipelineError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("dask_address")
    @classmethod
    def _is_scheduler_address(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(_DASK_SCHEMES) and "://" in value[3:]):
            raise ValueError(
                f"dask_address must be tcp://HOST:PORT or tls://HOST:PORT, got {value!r}"
            )
        return value

    @field_validator("dask_memory_limit")
    @classmethod
    def _is_memory_size(cls, value: str | None) -> str | None:
        if value is not None and _MEMORY_SIZE.fullmatch(value.strip()) is None:
            raise ValueError(
                f"dask_memory_limit must be a size such as 512MiB or 2GB (or auto), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _engine_options_match(self) -> TrainingParameters:
        given = [
            name
            for name in ("dask_address", "dask_workers", "dask_memory_limit")
            if getattr(self, name) is not None
        ]
        if self.engine == "local" and given:
            raise ValueError(f"{', '.join(given)} need engine dask; the engine is local")
        if self.engine == "dask":
            if (self.dask_address is None) == (self.dask_workers is None):
                raise ValueError(
                    "engine dask needs exactly one of dask_address (an existing cluster) or "
                    "dask_workers (a local cluster for the run)"
                )
            if self.dask_address is not None and self.dask_memory_limit is not None:
                raise ValueError(
                    "dask_memory_limit applies to a local cluster (dask_workers); an existing "
                    "cluster's workers have their own"
                )
        return self

    @model_validator(mode="after")
    def _downloads_from_https(self) -> TrainingParameters:
        try:
            check_base_url(self.tlc_base_url, allow_insecure=self.allow_insecure_mirror)
        except PipelineError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _validates_on_other_data(self) -> TrainingParameters:
        if self.train_month is not None and self.train_months is not None:
            raise ValueError(
                f"give train_month or train_months, not both; got train_month="
                f"{self.train_month} and train_months={self.train_months}"
            )
        training = self.train_month or self.train_months
        if (training is None) != (self.val_month is None):
            given = "val_month" if training is None else "train_month"
            if self.train_months is not None:
                given = "train_months"
            raise ValueError(
                f"give both train_month and val_month, or neither (then they follow the run's "
                f"scheduled start); got only {given}={training or self.val_month}"
            )
        if self.train_month is not None and self.val_month == self.train_month:
            raise ValueError(
                f"val_month must differ from train_month (both are {self.train_month}): "
                "validating on the training month would hide overfitting"
            )
        if self.val_month is not None and self.val_month in self.training_months():
            raise ValueError(
                f"val_month {self.val_month} must lie outside train_months ({training}): "
                "validating on the training data would hide overfitting"
            )
        return self

    def training_months(self) -> tuple[str, ...]:
        """The months given to train on (none when they follow the scheduled start)."""
        if self.train_months is not None:
            return parse_month_range(self.train_months)
        return () if self.train_month is None else (self.train_month,)

    def window(self, scheduled_start: datetime) -> tuple[tuple[str, ...], str]:
        """Training months and validation month: as given, else the published ones."""
        if self.val_month is not None:
            return self.training_months(), self.val_month
        train_month, val_month = published_months(scheduled_start, self.publication_lag_months)
        return (train_month,), val_month

    def months(self, scheduled_start: datetime) -> tuple[str, str]:
        """Training (a month, or FROM..TO for a window) and validation months of a run."""
        training, val_month = self.window(scheduled_start)
        return window_label(training), val_month

    @property
    def registered_model_name(self) -> str:
        """The registered model's name, defaulting to one per colour."""
        return self.model_name or f"trip-duration-{self.color}"


def window_label(months: tuple[str, ...]) -> str:
    """``YYYY-MM`` for one month, ``FROM..TO`` for a window."""
    return months[0] if len(months) == 1 else f"{months[0]}{WINDOW_SEPARATOR}{months[-1]}"


class TrainingSummary(BaseModel):
    """What a training run produced; the command line prints it as one JSON line."""

    run_id: str
    train_month: str = Field(description="The month trained on, or FROM..TO for a window.")
    val_month: str
    train_months: list[str] = Field(default_factory=list, description="Every month trained on.")
    train_rows: int = Field(default=0, description="Usable trips trained on.")
    engine: Engine = "local"
    rmse: float
    mae: float
    baseline_rmse: float
    baseline_mae: float
    champion_rmse: float | None = Field(
        description="The previous champion's RMSE on the same validation data, if any."
    )
    model_name: str
    model_version: str
    aliases: list[str]
    mlflow_run: str

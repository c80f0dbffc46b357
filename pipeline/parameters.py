"""The training flow's parameters (a form in the Prefect UI) and its summary.

Kept apart from the flow so the command line validates its arguments without importing Prefect.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.cache import check_base_url
from pipeline.errors import PipelineError
from pipeline.schema import TLC_BASE_URL, Color, add_months, parse_month
from pipeline.train import TrainConfig

DEFAULT_EXPERIMENT = "trip-duration"
# The TLC publishes a month's trip records within about two months of its end (January's
# during March).
DEFAULT_PUBLICATION_LAG_MONTHS = 2


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
    val_month: str | None = Field(
        default=None,
        description="Month to validate on (YYYY-MM), usually the one after train_month; "
        "without months, the latest month published at the run's scheduled start.",
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

    @model_validator(mode="after")
    def _downloads_from_https(self) -> TrainingParameters:
        try:
            check_base_url(self.tlc_base_url, allow_insecure=self.allow_insecure_mirror)
        except PipelineError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _validates_on_other_data(self) -> TrainingParameters:
        if (self.train_month is None) != (self.val_month is None):
            given = "train_month" if self.val_month is None else "val_month"
            raise ValueError(
                f"give both train_month and val_month, or neither (then they follow the run's "
                f"scheduled start); got only {given}={self.train_month or self.val_month}"
            )
        if self.train_month is not None and self.val_month == self.train_month:
            raise ValueError(
                f"val_month must differ from train_month (both are {self.train_month}): "
                "validating on the training month would hide overfitting"
            )
        return self

    def months(self, scheduled_start: datetime) -> tuple[str, str]:
        """Training and validation months: as given, else those published at ``scheduled_start``."""
        if self.train_month is not None and self.val_month is not None:
            return self.train_month, self.val_month
        return published_months(scheduled_start, self.publication_lag_months)

    @property
    def registered_model_name(self) -> str:
        """The registered model's name, defaulting to one per colour."""
        return self.model_name or f"trip-duration-{self.color}"


class TrainingSummary(BaseModel):
    """What a training run produced; the command line prints it as one JSON line."""

    run_id: str
    train_month: str
    val_month: str
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

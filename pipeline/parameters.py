"""The training flow's parameters (a form in the Prefect UI) and its summary.

Kept apart from the flow so the command line validates its arguments without importing Prefect.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.data import TLC_BASE_URL
from pipeline.errors import PipelineError
from pipeline.schema import Color, parse_month
from pipeline.train import TrainConfig

DEFAULT_EXPERIMENT = "trip-duration"


class TrainingParameters(BaseModel):
    """What to train on, where the data lives, and how to name what gets tracked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_month: str = Field(default="2023-01", description="Month to train on (YYYY-MM).")
    val_month: str = Field(
        default="2023-02", description="Month to validate on (YYYY-MM), usually the next one."
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
        pattern=r"^https?://",
        description="Where missing monthly files are downloaded from (the TLC site or a mirror).",
    )
    hyperparameters: TrainConfig = Field(
        default_factory=TrainConfig, description="XGBoost hyperparameters."
    )

    @field_validator("train_month", "val_month")
    @classmethod
    def _is_month(cls, value: str) -> str:
        try:
            parse_month(value)
        except PipelineError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _validates_on_other_data(self) -> TrainingParameters:
        if self.val_month == self.train_month:
            raise ValueError(
                f"val_month must differ from train_month (both are {self.train_month}): "
                "validating on the training month would hide overfitting"
            )
        return self

    @property
    def registered_model_name(self) -> str:
        """The registered model's name, defaulting to one per colour."""
        return self.model_name or f"trip-duration-{self.color}"


class TrainingSummary(BaseModel):
    """What a training run produced; the command line prints it as one JSON line."""

    run_id: str
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

"""Training windows: ``train_months`` FROM..TO beside ``train_month``, loaded concurrently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from pipeline.data import load_month
from pipeline.errors import PipelineError
from pipeline.flows import training
from pipeline.parameters import TrainingParameters
from pipeline.schema import parse_month_range
from pipeline.train import TrainConfig

QUICK = TrainConfig(max_depth=4, learning_rate=0.3, num_boost_round=20)


def test_a_range_holds_every_month_from_first_to_last() -> None:
    assert parse_month_range("2022-11..2023-01") == ("2022-11", "2022-12", "2023-01")
    assert parse_month_range("2023-01..2023-01") == ("2023-01",)
    assert len(parse_month_range("2020-01..2022-12")) == 36


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2023-03..2023-01", "runs backwards: 2023-03 is after 2023-01"),
        ("2020-01..2023-01", "spans 37 months; at most 36"),
        ("2023-01", "must be FROM..TO"),
        ("2023-01..2023-13", "month must be YYYY-MM"),
    ],
)
def test_bad_ranges_are_refused_with_what_was_wrong(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_month_range(text)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"train_month": "2023-01", "train_months": "2022-11..2023-01"},
            "give train_month or train_months, not both",
        ),
        ({"train_months": "2022-11..2023-01"}, "got only train_months=2022-11..2023-01"),
        (
            {"train_months": "2022-11..2023-01", "val_month": "2022-12"},
            "val_month 2022-12 must lie outside train_months",
        ),
        ({"train_months": "2023-03..2023-01", "val_month": "2023-04"}, "runs backwards"),
    ],
)
def test_bad_windows_are_refused_before_anything_starts(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingParameters.model_validate(given)


def test_a_window_names_its_months_and_its_label() -> None:
    given = TrainingParameters(train_months="2022-11..2023-01", val_month="2023-02")
    assert given.training_months() == ("2022-11", "2022-12", "2023-01")
    assert given.months(None) == ("2022-11..2023-01", "2023-02")  # type: ignore[arg-type]


@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_a_window_is_trained_on_and_tracked_month_by_month(
    synthetic_data_dir: Path, unique_name: str
) -> None:
    window = ("2022-12", "2023-01")
    summary = training(
        TrainingParameters(
            train_months="2022-12..2023-01",
            val_month="2023-02",
            data_dir=str(synthetic_data_dir),
            model_name=unique_name,
            experiment=unique_name,
            hyperparameters=QUICK,
        )
    )
    rows = {
        month: len(load_month(str(synthetic_data_dir), "green", month).trips) for month in window
    }
    assert summary.train_month == "2022-12..2023-01"
    assert summary.train_months == list(window)
    assert summary.train_rows == sum(rows.values())
    run = MlflowClient().get_run(summary.run_id)
    assert run.data.tags["train_months"] == "2022-12,2023-01"
    assert run.data.tags["train_rows"] == str(sum(rows.values()))
    assert {run.data.tags[f"train_rows.{month}"] for month in window} == {
        str(rows[month]) for month in window
    }
    assert run.data.params["train_month"] == "2022-12..2023-01"
    assert run.inputs is not None
    inputs = {_name_and_context(entry): _rows(entry) for entry in run.inputs.dataset_inputs}
    assert inputs == {
        ("green_tripdata_2022-12", "training"): rows["2022-12"],
        ("green_tripdata_2023-01", "training"): rows["2023-01"],
        ("green_tripdata_2023-02", "validation"): len(
            load_month(str(synthetic_data_dir), "green", "2023-02").trips
        ),
    }


def _name_and_context(entry: Any) -> tuple[str, str]:
    tags = {tag.key: tag.value for tag in entry.tags}
    return entry.dataset.name, tags["mlflow.data.context"]


def _rows(entry: Any) -> int:
    import json

    return int(json.loads(entry.dataset.profile)["num_rows"])

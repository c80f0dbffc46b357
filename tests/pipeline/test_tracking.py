"""What a training run records about its data and code, and where runs go (no server needed)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.data import MonthData


def _month(source: str, distance: float = 1.5) -> MonthData:
    trips = pd.DataFrame(
        {
            "lpep_pickup_datetime": pd.to_datetime(["2023-01-01 10:00", "2023-01-02 11:30"]),
            "PULocationID": pd.Series([74, 75], dtype="int64"),
            "trip_distance": [distance, 3.25],
        }
    )
    return MonthData(color="green", month="2023-01", source=source, rows_read=3, trips=trips)


def test_a_month_is_recorded_as_a_dataset_with_its_source_schema_size_and_context() -> None:
    source = "/data/green_tripdata_2023-01.parquet"

    recorded = tracking._dataset_input(_month(source), "training")

    dataset = recorded.dataset
    assert dataset.name == "green_tripdata_2023-01"
    assert dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": source}
    assert json.loads(dataset.schema) == {
        "mlflow_colspec": [
            {"type": "datetime", "name": "lpep_pickup_datetime", "required": True},
            {"type": "long", "name": "PULocationID", "required": True},
            {"type": "double", "name": "trip_distance", "required": True},
        ]
    }
    assert json.loads(dataset.profile) == {"num_rows": 2, "num_elements": 6}
    assert [(tag.key, tag.value) for tag in recorded.tags] == [("mlflow.data.context", "training")]


def test_a_month_read_from_s3_is_an_s3_dataset() -> None:
    uri = "s3://mlops-artifacts/data/green_tripdata_2023-01.parquet"

    dataset = tracking._dataset_input(_month(uri), "validation").dataset

    assert dataset.source_type == "s3"
    assert json.loads(dataset.source) == {"uri": uri}


def test_the_dataset_digest_follows_the_rows_not_where_they_were_read() -> None:
    digest = tracking._dataset_input(_month("/a/x.parquet"), "training").dataset.digest

    assert len(digest) == 8
    int(digest, 16)
    assert tracking._dataset_input(_month("s3://b/x.parquet"), "training").dataset.digest == digest
    changed = tracking._dataset_input(_month("/a/x.parquet", distance=1.6), "training")
    assert changed.dataset.digest != digest


@pytest.fixture
def restored_tracking_uri() -> Iterator[None]:
    """MLflow's tracking URI is process-wide: put back what the other tests set."""
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


@pytest.mark.usefixtures("restored_tracking_uri")
def test_runs_go_to_the_tracking_uri_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")

    assert tracking.configure_tracking() == "http://127.0.0.1:5999"
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:5999"


@pytest.mark.usefixtures("restored_tracking_uri")
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_without_a_tracking_uri_runs_go_to_the_embedded_store(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", value)

    assert tracking.configure_tracking() == "sqlite:///mlflow.db"
    assert mlflow.get_tracking_uri() == "sqlite:///mlflow.db"


def test_the_code_version_is_a_digest_of_the_pipeline_s_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pipeline"
    shutil.copytree(tracking._PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tracking, "_PACKAGE_DIR", package)
    version = tracking.code_version()
    assert version.startswith("sha256:")
    assert len(version) == len("sha256:") + 16
    int(version.removeprefix("sha256:"), 16)

    (package / "notes.txt").write_text("not code")  # only the .py files count
    assert tracking.code_version() == version
    (package / "train.py").write_text((package / "train.py").read_text() + "\n# changed\n")
    changed = tracking.code_version()
    assert changed != version
    (package / "train.py").rename(package / "train2.py")  # a renamed module is other code
    assert tracking.code_version() not in {version, changed}

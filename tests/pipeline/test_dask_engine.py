"""The Dask engine: same data, same configuration, about the same model as the local engine.

The cluster is a LocalCluster of two worker processes started by the run itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from pipeline import dask_engine
from pipeline.data import MonthData
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate
from pipeline.features import LabeledSet
from pipeline.flows import training
from pipeline.parameters import TrainingParameters
from pipeline.ports import free_port
from pipeline.train import TrainConfig, train_model

# Quick to train, deep enough that both engines reach a comparable model.
CONFIG = TrainConfig(max_depth=6, learning_rate=0.3, num_boost_round=60, early_stopping_rounds=10)
# Distributed quantile sketches and row partitioning differ from one process's: the models
# are close, not identical.
RMSE_TOLERANCE = 0.02


def dask_parameters(data_dir: Path, name: str, **engine: object) -> TrainingParameters:
    return TrainingParameters.model_validate(
        {
            "train_month": "2023-01",
            "val_month": "2023-02",
            "data_dir": str(data_dir),
            "model_name": name,
            "experiment": name,
            "hyperparameters": CONFIG,
            "engine": "dask",
            **engine,
        }
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_dask_training_matches_the_local_engine_and_logs_a_plain_booster(
    real_data_dir: Path,
    unique_name: str,
    months: tuple[MonthData, MonthData],
    labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    local = evaluate(train_model(*labeled, CONFIG), *labeled)
    summary = training(dask_parameters(real_data_dir, unique_name, dask_workers=2))
    assert summary.engine == "dask"
    assert summary.train_rows == len(months[0].trips)
    assert abs(summary.rmse - local.rmse) < RMSE_TOLERANCE, (summary.rmse, local.rmse)
    assert summary.rmse < summary.baseline_rmse
    assert abs(summary.baseline_rmse - local.baseline_rmse) < 1e-6
    run = MlflowClient().get_run(summary.run_id)
    assert run.data.tags["engine"] == "dask"
    import mlflow.xgboost  # the logged model loads as the local engine's does

    booster = mlflow.pyfunc.load_model(f"models:/{unique_name}@challenger")
    predictions = booster.predict(labeled[1].trips.head(100))
    assert len(predictions) == 100


@pytest.mark.usefixtures("prefect_api", "mlflow_store")
def test_an_unreachable_scheduler_fails_the_run_naming_it(
    synthetic_data_dir: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dask retries a refused connection until the timeout: the message is what is tested here,
    # not how long the run waits (20 s in production).
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT_SECONDS", 1)
    address = f"tcp://127.0.0.1:{free_port()}"
    reached = f"cannot reach the Dask scheduler at {address} (dask_address) within 1 s"
    with pytest.raises(PipelineError, match=re.escape(reached)):
        training(dask_parameters(synthetic_data_dir, unique_name, dask_address=address))
    experiment = MlflowClient().get_experiment_by_name(unique_name)
    assert experiment is not None
    (run,) = MlflowClient().search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert address in run.data.tags["error"]
    assert list(MlflowClient().search_model_versions(f"name = '{unique_name}'")) == []


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"dask_workers": 2}, "dask_workers need engine dask"),
        ({"engine": "dask"}, "needs exactly one of dask_address"),
        (
            {"engine": "dask", "dask_address": "tcp://h:8786", "dask_workers": 2},
            "needs exactly one of dask_address",
        ),
        ({"engine": "dask", "dask_address": "h:8786"}, "tcp://HOST:PORT"),
        (
            {"engine": "dask", "dask_workers": 2, "dask_memory_limit": "lots"},
            "size such as 512MiB",
        ),
        ({"engine": "spark"}, "'local' or 'dask'"),
    ],
)
def test_bad_engine_options_are_refused(engine: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingParameters.model_validate(
            {"train_month": "2023-01", "val_month": "2023-02", **engine}
        )

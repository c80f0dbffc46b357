"""The ``training`` flow end to end under Prefect's test harness, with a temporary MLflow store."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import prefect
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.flow_engine import run_flow
from prefect.flows import load_flow_from_entrypoint
from prefect.states import Scheduled
from prefect.utilities.callables import parameter_schema

from pipeline import flows
from pipeline.data import file_name, load_month
from pipeline.errors import PipelineError, TransientError
from pipeline.evaluate import rmse
from pipeline.features import LabeledSet
from pipeline.flows import training
from pipeline.parameters import TrainingParameters, TrainingSummary
from pipeline.train import TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_api", "mlflow_store")

REPO = Path(__file__).resolve().parents[2]
MONTHS = {"train_month": "2023-01", "val_month": "2023-02"}
# A deliberately poor model and a better one, both quick to train. (The default model's
# RMSE through the flow is checked by the command-line test.)
WEAK = TrainConfig(max_depth=1, num_boost_round=5, early_stopping_rounds=5)
BETTER = TrainConfig(max_depth=6, learning_rate=0.3, num_boost_round=40)


def parameters(data_dir: Path | str, name: str, **overrides: Any) -> TrainingParameters:
    """Parameters for the real months, with this test's model and experiment name."""
    return TrainingParameters.model_validate(
        {"data_dir": str(data_dir), "model_name": name, "experiment": name, **MONTHS, **overrides}
    )


def runs_of(experiment: str) -> list[Any]:
    """The MLflow runs of ``experiment``, oldest first."""
    found = mlflow.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    runs = MlflowClient().search_runs([found.experiment_id], order_by=["attribute.start_time ASC"])
    return list(runs)


def registered_versions(name: str) -> list[Any]:
    """The registered versions of ``name`` (none if the model was never registered)."""
    return list(MlflowClient().search_model_versions(f"name = '{name}'"))


def test_the_deployment_entrypoint_loads_with_a_parameter_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)  # prefect deploy resolves the entrypoint from the project root
    flow: Any = load_flow_from_entrypoint("pipeline/entrypoints.py:training")
    assert flow.name == "training"
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    form = schema["definitions"]["TrainingParameters"]["properties"]
    assert {"train_month", "val_month", "color", "data_dir", "hyperparameters"} <= set(form)
    assert form["color"]["enum"] == ["green", "yellow"]


def test_training_tracks_registers_and_promotes_only_better_models(
    real_data_dir: Path, unique_name: str, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    client = MlflowClient()

    # 1. A weak first model: there is no champion yet, so it becomes one.
    first = training(parameters(real_data_dir, unique_name, hyperparameters=WEAK))
    assert (first.model_version, first.aliases, first.champion_rmse) == (
        "1",
        ["challenger", "champion"],
        None,
    )

    # 2. A better model on the same validation month: it takes champion.
    state = training(
        parameters(real_data_dir, unique_name, hyperparameters=BETTER), return_state=True
    )
    assert state.is_completed()
    second = state.result()
    assert isinstance(second, TrainingSummary)
    assert second.rmse < first.rmse
    assert second.champion_rmse == pytest.approx(first.rmse)
    assert (second.model_version, second.aliases) == ("2", ["challenger", "champion"])

    # 3. A weak model again: it is the challenger, the champion stays.
    third = training(parameters(real_data_dir, unique_name, hyperparameters=WEAK))
    assert (third.model_version, third.aliases) == ("3", ["challenger"])
    assert third.champion_rmse == pytest.approx(second.rmse)
    aliases = client.get_registered_model(unique_name).aliases
    assert aliases == {"champion": 2, "challenger": 3}

    # The second run, as tracked.
    run = client.get_run(second.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics.keys() >= {"rmse", "mae", "baseline_rmse", "baseline_mae", "trees"}
    assert run.data.metrics["rmse"] == pytest.approx(second.rmse)
    assert run.data.params["learning_rate"] == "0.3"
    assert run.data.params["train_month"] == "2023-01"
    assert run.data.tags["val_month"] == "2023-02"
    assert run.data.tags["color"] == "green"
    assert run.data.tags["code_version"].startswith("sha256:")
    assert run.data.tags["prefect_flow_run_id"] == str(state.state_details.flow_run_id)
    plots = {artifact.path for artifact in client.list_artifacts(second.run_id, "plots")}
    assert plots == {"plots/feature_importance.png", "plots/predicted_vs_actual.png"}
    assert run.inputs is not None
    inputs = {(entry.dataset.name, entry.tags[0].value) for entry in run.inputs.dataset_inputs}
    assert inputs == {
        ("green_tripdata_2023-01", "training"),
        ("green_tripdata_2023-02", "validation"),
    }
    version = client.get_model_version(unique_name, "2")
    assert version.tags["validation_data"].startswith("green_tripdata_2023-02.parquet:")
    assert float(version.tags["rmse"]) == pytest.approx(second.rmse)

    # The champion predicts from raw trip records, preprocessing included.
    champion = mlflow.pyfunc.load_model(f"models:/{unique_name}@champion")
    val = labeled[1]
    assert rmse(val.target, champion.predict(val.trips)) == pytest.approx(second.rmse, abs=1e-4)
    published = pd.read_parquet(real_data_dir / file_name("green", "2023-02")).head(200)
    predictions = champion.predict(published)  # all 20 columns, int32 zones
    assert np.all((predictions >= 1) & (predictions <= 60))
    assert champion.metadata.get_input_schema().input_names() == [
        "lpep_pickup_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
    ]

    # The flow run's metrics artifact links to the run.
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as prefect_client:
        (artifact,) = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert artifact.key == flows.METRICS_ARTIFACT_KEY
    assert f"| RMSE (minutes) | {second.rmse:.4f} |" in str(artifact.data)
    assert second.run_id in str(artifact.data)


def test_a_scheduled_run_without_months_takes_the_latest_published_ones(
    real_data_dir: Path, unique_name: str, closed_port_url: str
) -> None:
    """As the monthly deployment runs it: no months, a flow run scheduled for 2023-05-03."""
    given = TrainingParameters(
        data_dir=str(real_data_dir),
        model_name=unique_name,
        experiment=unique_name,
        hyperparameters=WEAK,
        tlc_base_url=closed_port_url,  # any other month would be a download: none leaves loopback
        allow_insecure_mirror=True,
    )
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(
            training,
            parameters={"parameters": given.model_dump(mode="json")},
            state=Scheduled(scheduled_time=datetime(2023, 5, 3, 6, tzinfo=UTC)),
        )
    summary = run_flow(training, flow_run=flow_run, parameters={"parameters": given})
    assert isinstance(summary, TrainingSummary)
    assert (summary.train_month, summary.val_month) == ("2023-01", "2023-02")
    run = MlflowClient().get_run(summary.run_id)
    assert (run.data.tags["train_month"], run.data.tags["val_month"]) == ("2023-01", "2023-02")
    assert run.data.tags["prefect_flow_run_id"] == str(flow_run.id)
    assert registered_versions(unique_name)[0].tags["train_month"] == "2023-01"


def corrupt(raw: pd.DataFrame) -> bytes:
    return b"PAR1 not really parquet"


def empty(raw: pd.DataFrame) -> bytes:
    return _parquet(raw.head(0))


def without_zones(raw: pd.DataFrame) -> bytes:
    return _parquet(raw.drop(columns=["PULocationID"]))


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (corrupt, "is not a readable parquet file"),
        (empty, "holds no trip records"),
        (without_zones, "lacks column"),
    ],
)
def test_bad_data_fails_the_run_and_registers_nothing(
    damage: Callable[[pd.DataFrame], bytes],
    message: str,
    real_data_dir: Path,
    data_dir_with: Callable[..., Path],
    unique_name: str,
) -> None:
    name = file_name("green", "2023-01")
    raw = pd.read_parquet(real_data_dir / name)
    data_dir = data_dir_with(real=("2023-02",), files={name: damage(raw)})
    with pytest.raises(PipelineError, match=message):
        training(parameters(data_dir, unique_name))
    (run,) = runs_of(unique_name)
    assert run.info.status == "FAILED"
    assert message in run.data.tags["error"]
    assert name in run.data.tags["error"]
    assert registered_versions(unique_name) == []


def test_a_transient_download_failure_is_retried(
    tlc_server: Any,
    real_data_dir: Path,
    tmp_path: Path,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flows.load, "retry_delay_seconds", [0.0])
    for month in ("2023-01", "2023-02"):
        name = file_name("green", month)
        (tlc_server.directory / name).write_bytes((real_data_dir / name).read_bytes())
    january = f"/trip-data/{file_name('green', '2023-01')}"
    tlc_server.failures[january] = [503, 503]
    summary = training(
        parameters(
            tmp_path / "data",
            unique_name,
            hyperparameters=WEAK,
            tlc_base_url=tlc_server.base_url,
            allow_insecure_mirror=True,
        )
    )
    assert summary.model_version == "1"
    assert tlc_server.requests.count(january) == 3
    assert list((tmp_path / "data" / "mirrors").glob(f"*/{file_name('green', '2023-01')}"))


def test_no_network_fails_after_the_retries_with_a_clear_error(
    closed_port_url: str, tmp_path: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows.load, "retry_delay_seconds", [0.0])
    attempts: list[str] = []

    def counted_load_month(data_dir: str, color: str, month: str, **kwargs: Any) -> Any:
        attempts.append(month)
        return load_month(data_dir, color, month, **kwargs)

    monkeypatch.setattr(flows, "load_month", counted_load_month)
    with pytest.raises(
        TransientError,
        match=rf"green_tripdata_2023-01\.parquet is not in {tmp_path} "
        rf"and could not download {closed_port_url}/green_tripdata_2023-01\.parquet",
    ):
        training(
            parameters(
                tmp_path, unique_name, tlc_base_url=closed_port_url, allow_insecure_mirror=True
            )
        )
    # Both months are loaded at once, each retried; the error is the first month's.
    assert sorted(attempts) == sorted(["2023-01", "2023-02"] * (1 + flows.IO_RETRIES))
    (run,) = runs_of(unique_name)
    assert run.info.status == "FAILED"
    assert registered_versions(unique_name) == []


def test_an_unpublished_month_is_not_retried(
    tlc_server: Any, tmp_path: Path, unique_name: str
) -> None:
    with pytest.raises(PipelineError, match="HTTP 404"):
        training(
            parameters(
                tmp_path, unique_name, tlc_base_url=tlc_server.base_url, allow_insecure_mirror=True
            )
        )
    # Both months are asked for at once, and neither again.
    assert sorted(tlc_server.requests) == [
        "/trip-data/green_tripdata_2023-01.parquet",
        "/trip-data/green_tripdata_2023-02.parquet",
    ]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientError("S3 is unavailable"), True),
        (MlflowException("RESOURCE_EXHAUSTED"), True),
        (ConnectionError("connection reset by peer"), True),
        (OSError("No space left on device"), True),
        (PipelineError("green_tripdata_2023-01.parquet lacks column(s) DOLocationID"), False),
    ],
    ids=["transient", "mlflow", "connection", "os", "bad-data"],
)
def test_io_tasks_retry_every_failure_but_bad_input(error: Exception, retried: bool) -> None:
    attempts: list[int] = []

    @flows._io_task("flaky-io")
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise error
        return "done"

    @prefect.flow(name="flaky-io")
    def with_flaky_io() -> str:
        return flaky.with_options(retry_delay_seconds=0, retry_jitter_factor=0)()  # 0: no jitter

    if retried:
        assert with_flaky_io() == "done"
        assert len(attempts) == 2
    else:
        with pytest.raises(PipelineError, match="lacks column"):
            with_flaky_io()
        assert len(attempts) == 1

"""Registry stage: aliases, champion comparison across validation data, nothing half-registered."""

from __future__ import annotations

import mlflow
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from pipeline import registry, tracking
from pipeline.evaluate import evaluate
from pipeline.features import LabeledSet
from pipeline.model import log_model

pytestmark = pytest.mark.usefixtures("mlflow_store")


@pytest.fixture
def model_uri(
    unique_name: str, booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> str:
    """The session's booster logged as a pyfunc model in a fresh run."""
    tracking.configure_tracking()
    run_id = tracking.start_run(experiment=unique_name, run_name="registry", tags={})
    uri = log_model(run_id, booster, labeled[1].trips)
    tracking.end_run(run_id)
    return uri


def test_the_champion_is_rescored_on_other_validation_data_with_its_own_code(
    model_uri: str, unique_name: str, booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    registry.register(
        model_uri,
        model_name=unique_name,
        rmse_value=1.0,  # as recorded; the real figure is about 4.45
        champion_rmse_value=None,
        validation_key="green_tripdata_2023-02.parquet:62551",
        tags={},
    )
    recorded = registry.champion_rmse(
        unique_name, "green_tripdata_2023-02.parquet:62551", labeled[1]
    )
    assert recorded == 1.0
    # Validated elsewhere: the champion is loaded in a fresh interpreter and scored on this data.
    rescored = registry.champion_rmse(unique_name, "green_tripdata_2023-03.parquet:1", labeled[1])
    assert rescored == pytest.approx(evaluate(booster, *labeled).rmse, abs=1e-4)


def test_no_champion_without_a_registered_model(
    unique_name: str, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    assert registry.champion_rmse(unique_name, "any", labeled[1]) is None


def test_a_registration_failing_half_way_leaves_no_version(
    model_uri: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry unavailable"):
        registry.register(
            model_uri,
            model_name=unique_name,
            rmse_value=4.4,
            champion_rmse_value=None,
            validation_key="key",
            tags={},
        )
    assert MlflowClient().search_model_versions(f"name = '{unique_name}'") == []


def test_an_equal_score_does_not_take_champion(model_uri: str, unique_name: str) -> None:
    first, second = (
        registry.register(
            model_uri,
            model_name=unique_name,
            rmse_value=4.4,
            champion_rmse_value=champion,
            validation_key="key",
            tags={},
        )
        for champion in (None, 4.4)
    )
    assert first.aliases == ("challenger", "champion")
    assert second.aliases == ("challenger",)
    assert mlflow.MlflowClient().get_registered_model(unique_name).aliases == {
        "champion": 1,
        "challenger": 2,
    }

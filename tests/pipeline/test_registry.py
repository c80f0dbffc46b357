"""Registry stage: aliases, champion comparison, nothing registered without a champion check."""

from __future__ import annotations

import mlflow
import pytest
import xgboost as xgb

from pipeline import registry, tracking
from pipeline.data import MonthData
from pipeline.features import LabeledSet
from pipeline.model import LoggedModel, log_model

pytestmark = pytest.mark.usefixtures("mlflow_store")


@pytest.fixture
def logged(
    unique_name: str, booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> tuple[LoggedModel, str]:
    """The session's booster logged as a pyfunc model in a fresh run: (the model, run ID)."""
    tracking.configure_tracking()
    run_id = tracking.start_run(experiment=unique_name, run_name="registry", tags={})
    model = log_model(run_id, booster, labeled[1].trips)
    tracking.end_run(run_id)
    return model, run_id


def test_no_champion_without_a_registered_model(
    unique_name: str, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    assert registry.champion_rmse(unique_name, "any", labeled[1]) is None


def test_registration_moves_no_alias(logged: tuple[LoggedModel, str], unique_name: str) -> None:
    registry.register(
        logged[0],
        model_name=unique_name,
        run_id=logged[1],
        registration_key="flow-run",
        rmse_value=4.4,
        validation_key="key",
        tags={},
    )
    assert mlflow.MlflowClient().get_registered_model(unique_name).aliases == {}


def test_an_equal_score_does_not_take_champion(
    logged: tuple[LoggedModel, str], unique_name: str, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    first, second = (
        registry.register(
            logged[0],
            model_name=unique_name,
            run_id=logged[1],
            registration_key=attempt,
            rmse_value=4.4,
            validation_key="key",
            tags={},
        )
        for attempt in ("first", "second")
    )
    assert registry.promote(first, labeled[1]).aliases == ("challenger", "champion")
    assert registry.promote(second, labeled[1]) == registry.Promotion(
        aliases=("challenger",), champion_rmse=4.4
    )
    assert mlflow.MlflowClient().get_registered_model(unique_name).aliases == {
        "champion": 1,
        "challenger": 2,
    }


def test_validation_data_is_identified_by_its_file_and_its_usable_trips(
    months: tuple[MonthData, MonthData], labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    key = registry.validation_key(months[1], labeled[1])
    assert key == f"green_tripdata_2023-02.parquet:{len(labeled[1].target)}"

"""Registry stage: what a registration records, aliases, champion comparison and re-scoring.

Against the session's MLflow store (SQLite) with a model trained on synthetic months; the
promotion lock and the races around it are in test_promotion.py (under Prefect).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from pipeline import registry, tracking
from pipeline.data import MonthData
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate
from pipeline.features import LabeledSet
from pipeline.model import LoggedModel, log_model, model_digest
from tests.pipeline.registering import KEY, aliases

pytestmark = pytest.mark.usefixtures("mlflow_store")

OTHER_KEY = "green_tripdata_2023-03.parquet:1"


def test_no_champion_without_a_registered_model(
    unique_name: str, small_labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    assert registry.champion_rmse(unique_name, "any", small_labeled[1]) is None


def test_no_champion_while_no_version_holds_the_alias(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    register(4.4)
    assert registry.champion_rmse(unique_name, KEY, small_labeled[1]) is None


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


def test_a_version_records_its_tags_score_data_digest_and_registration_key(
    logged: tuple[LoggedModel, str], unique_name: str, tmp_path: Path
) -> None:
    model, run_id = logged
    candidate = registry.register(
        model,
        model_name=unique_name,
        run_id=run_id,
        registration_key="flow-run-1",
        rmse_value=4.123456789,
        validation_key=KEY,
        tags={"color": "green", "train_month": "2023-01"},
    )

    assert candidate == registry.Candidate(
        model_name=unique_name, version="1", rmse=4.123456789, validation_key=KEY
    )
    version = MlflowClient().get_model_version(unique_name, "1")
    downloaded = Path(mlflow.artifacts.download_artifacts(model.uri, dst_path=str(tmp_path)))
    digest = model_digest(downloaded)
    assert digest == model.digest
    assert digest.startswith("sha256:")
    assert version.tags == {
        "color": "green",
        "train_month": "2023-01",
        "rmse": "4.123456789",  # repr: the champion's recorded score, to the last digit
        "validation_data": KEY,
        "model_sha256": digest,
        "prefect_flow_run_id": "flow-run-1",
    }
    assert version.run_id == run_id


def test_69_registering_twice_under_one_key_returns_the_same_version(
    register: Callable[..., registry.Candidate], unique_name: str
) -> None:
    first = register(4.4, attempt="flow-run-1")
    again = register(4.4, attempt="flow-run-1")
    other = register(4.4, attempt="flow-run-2")
    assert (first.version, again.version, other.version) == ("1", "1", "2")
    versions = MlflowClient().search_model_versions(f"name = '{unique_name}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]


def test_a_key_used_by_another_model_or_run_is_not_this_registration(
    register: Callable[..., registry.Candidate],
    logged: tuple[LoggedModel, str],
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    elsewhere = register(4.4, attempt="flow-run-1", name=f"{unique_name}-other")
    assert elsewhere.version == "1"
    # The same key under this model: its own first version, not the other model's.
    mine = register(4.4, attempt="flow-run-1")
    assert (mine.model_name, mine.version) == (unique_name, "1")
    assert MlflowClient().get_model_version(unique_name, "1").run_id == logged[1]
    # The same key and model from another run: a version of its own.
    run_id = tracking.start_run(experiment=unique_name, run_name="another", tags={})
    another_model = log_model(run_id, small_booster, small_labeled[1].trips)
    tracking.end_run(run_id)
    another = registry.register(
        another_model,
        model_name=unique_name,
        run_id=run_id,
        registration_key="flow-run-1",
        rmse_value=4.4,
        validation_key=KEY,
        tags={},
    )
    assert another.version == "2"
    assert MlflowClient().get_model_version(unique_name, "2").run_id == run_id


def test_a_retry_finding_several_versions_under_its_key_returns_the_first(
    logged: tuple[LoggedModel, str], register: Callable[..., registry.Candidate], unique_name: str
) -> None:
    model, _ = logged
    for _ in range(2):  # as an older client without the look-up could have left them
        mlflow.register_model(
            model.uri, unique_name, tags={registry.REGISTRATION_TAG: "flow-run-1"}
        )
    assert register(4.4, attempt="flow-run-1").version == "1"


def test_a_discarded_version_is_deleted(
    register: Callable[..., registry.Candidate], unique_name: str
) -> None:
    kept, discarded = register(4.4), register(4.5)
    registry.discard(discarded)
    versions = MlflowClient().search_model_versions(f"name = '{unique_name}'")
    assert [str(v.version) for v in versions] == [kept.version]


def test_the_first_version_becomes_champion_compared_with_nothing(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    assert registry.promote(register(4.4), small_labeled[1]) == registry.Promotion(
        aliases=("challenger", "champion"), champion_rmse=None
    )
    assert aliases(unique_name) == {"challenger": 1, "champion": 1}


def test_a_lower_score_takes_champion_and_a_higher_one_only_challenger(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    val = small_labeled[1]
    registry.promote(register(4.4), val)
    assert registry.promote(register(4.3), val) == registry.Promotion(
        aliases=("challenger", "champion"), champion_rmse=4.4
    )
    assert aliases(unique_name) == {"challenger": 2, "champion": 2}
    assert registry.promote(register(4.5), val) == registry.Promotion(
        aliases=("challenger",), champion_rmse=4.3
    )
    assert aliases(unique_name) == {"challenger": 3, "champion": 2}


def test_an_equal_score_does_not_take_champion(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    first, second = register(4.4, attempt="first"), register(4.4, attempt="second")
    assert registry.promote(first, small_labeled[1]).aliases == ("challenger", "champion")
    assert registry.promote(second, small_labeled[1]) == registry.Promotion(
        aliases=("challenger",), champion_rmse=4.4
    )
    assert aliases(unique_name) == {"champion": 1, "challenger": 2}


def test_a_retried_promotion_of_the_champion_keeps_it_without_rescoring(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    candidate = register(4.4, key=OTHER_KEY)
    registry.promote(candidate, small_labeled[1])
    registry.promote(register(4.5), small_labeled[1])  # challenger moves on
    monkeypatch.setattr(registry, "_rescore", pytest.fail)  # a retry must not re-score

    again = registry.promote(candidate, small_labeled[1])

    assert again == registry.Promotion(aliases=("challenger", "champion"), champion_rmse=None)
    assert aliases(unique_name) == {"challenger": 1, "champion": 1}


def test_the_recorded_score_is_used_only_for_the_same_validation_data(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    champion = register(0.01)  # as recorded; the real figure is far higher
    registry.promote(champion, small_labeled[1])
    real = evaluate(small_booster, *small_labeled).rmse
    assert real > 0.5

    assert registry.champion_rmse(unique_name, KEY, small_labeled[1]) == 0.01
    # Validated elsewhere: re-scored from the logged booster file on this data.
    rescored = registry.champion_rmse(unique_name, OTHER_KEY, small_labeled[1])
    assert rescored == pytest.approx(real, abs=1e-6)
    # The same data but no recorded score: re-scored too.
    MlflowClient().delete_model_version_tag(unique_name, champion.version, registry.RMSE_TAG)
    assert registry.champion_rmse(unique_name, KEY, small_labeled[1]) == pytest.approx(
        real, abs=1e-6
    )


def test_70_a_champion_whose_files_changed_is_not_rescored(
    register: Callable[..., registry.Candidate],
    logged: tuple[LoggedModel, str],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    registry.promote(register(4.0), small_labeled[1])
    model_id = logged[0].uri.removeprefix("models:/")
    stored = Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    booster_file = stored / "artifacts/booster.ubj"
    booster_file.write_bytes(booster_file.read_bytes() + b"\n")
    expected = MlflowClient().get_model_version(unique_name, "1").tags[registry.DIGEST_TAG]

    with pytest.raises(PipelineError) as raised:
        registry.champion_rmse(unique_name, OTHER_KEY, small_labeled[1])

    message = str(raised.value)
    assert message.startswith(
        f"the files of the champion models:/{unique_name}/1 do not match the digest recorded "
        f"at registration (model_sha256 {expected}, found sha256:"
    )
    assert message.endswith(
        "): they were changed in the artifact store; not re-scoring or promoting against it"
    )


def test_70_a_champion_without_a_digest_is_not_rescored(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    registry.promote(register(4.0), small_labeled[1])
    MlflowClient().delete_model_version_tag(unique_name, "1", registry.DIGEST_TAG)
    with pytest.raises(PipelineError) as raised:
        registry.champion_rmse(unique_name, OTHER_KEY, small_labeled[1])
    assert str(raised.value) == (
        f"cannot re-score the champion models:/{unique_name}/1: it has no model_sha256 tag "
        "(registered before model digests were recorded), so its files cannot be checked. "
        "Check them and tag the version with model_sha256, or move the champion alias to a "
        "version that has one"
    )


def test_a_registry_failure_other_than_no_such_model_is_raised(
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = MlflowException("database is locked", error_code=INTERNAL_ERROR)

    def failing(self: MlflowClient, name: str) -> None:
        raise failure

    monkeypatch.setattr(MlflowClient, "get_registered_model", failing)
    with pytest.raises(MlflowException) as raised:
        registry.champion_rmse(unique_name, KEY, small_labeled[1])
    assert raised.value is failure


def test_validation_data_is_identified_by_its_file_and_its_usable_trips(
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    val = small_labeled[1]
    month = MonthData(
        color="yellow", month="2023-02", source="elsewhere", rows_read=5_000, trips=val.trips
    )
    key = registry.validation_key(month, val)
    assert key == f"yellow_tripdata_2023-02.parquet:{len(val.target)}"

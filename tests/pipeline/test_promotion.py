"""Promotion: compare-and-set under a lock, last in the run, idempotent registration, and
re-scoring that never runs code from the artifact store (invariants 67-70).

Against the session's real MLflow store (SQLite) and Prefect's test harness, with a model and
data directory of synthetic months; the race runs two real promotions in two threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from pipeline import flows, model, registry, tracking
from pipeline.errors import PipelineError, TransientError
from pipeline.evaluate import evaluate
from pipeline.features import LabeledSet
from pipeline.flows import training
from pipeline.model import LoggedModel, log_model, model_digest
from pipeline.parameters import TrainingParameters
from pipeline.train import TrainConfig
from tests.pipeline.registering import KEY, LOGGED_RUN, aliases

pytestmark = pytest.mark.usefixtures("prefect_api", "mlflow_store")

WEAK = TrainConfig(max_depth=1, num_boost_round=5, early_stopping_rounds=5)
# How long a thread waits for the other to reach a point it may never reach (held by the lock).
RENDEZVOUS_SECONDS = 5.0


def test_67_concurrent_promotions_never_demote_a_better_champion(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Champion 5.5; run A (5.0) and run B (5.3) promote at once: the champion must end at A.

    Interleaving forced as in the reported incident: B reads the champion after A read it and
    moves the alias after A did. Under the lock B can only read once A is done (the rendezvous
    then times out and each goes on), so it compares with 5.0 and stays challenger.
    """
    val = small_labeled[1]
    champion = register(5.5)
    flows.promote_exclusively(champion, val)
    run_a, run_b = register(5.0), register(5.3)

    a_has_read, a_moved_champion = threading.Event(), threading.Event()
    both_read = threading.Barrier(2, timeout=RENDEZVOUS_SECONDS)
    read_champion, set_alias = registry._champion, MlflowClient.set_registered_model_alias

    def reading(model_name: str) -> Any:
        found = read_champion(model_name)
        if threading.current_thread().name == "A":
            a_has_read.set()
        with suppress(threading.BrokenBarrierError):
            both_read.wait()
        return found

    def moving(self: MlflowClient, name: str, alias: str, version: str) -> None:
        if alias == registry.CHAMPION and threading.current_thread().name == "B":
            a_moved_champion.wait(RENDEZVOUS_SECONDS)
        set_alias(self, name, alias, version)
        if alias == registry.CHAMPION and threading.current_thread().name == "A":
            a_moved_champion.set()

    monkeypatch.setattr(registry, "_champion", reading)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", moving)
    outcomes: dict[str, Any] = {}

    def run(candidate: registry.Candidate) -> None:
        try:
            outcomes[threading.current_thread().name] = flows.promote_exclusively(candidate, val)
        except BaseException as error:
            outcomes[threading.current_thread().name] = error

    a = threading.Thread(target=run, args=(run_a,), name="A")
    b = threading.Thread(target=run, args=(run_b,), name="B")
    a.start()
    assert a_has_read.wait(60), "run A never read the champion"
    b.start()
    for thread in (a, b):
        thread.join(120)
        assert not thread.is_alive()

    assert outcomes["A"].aliases == ("challenger", "champion")
    assert outcomes["B"] == registry.Promotion(aliases=("challenger",), champion_rmse=5.0)
    assert aliases(unique_name)["champion"] == int(run_a.version)


def test_67_the_lock_is_one_strict_slot_per_model_created_once(unique_name: str) -> None:
    from prefect.client.orchestration import get_client

    name = flows.promotion_lock_name(unique_name)
    assert name == f"promote-{unique_name}"
    with flows.promotion_lock(unique_name):
        pass
    with flows.promotion_lock(unique_name):  # exists already: reused
        pass
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.active, limit.active_slots) == (1, True, 0)
    assert flows.promotion_lock_name("a/b").startswith("promote-")
    assert "/" not in flows.promotion_lock_name("a/b")


@pytest.mark.parametrize(
    ("limit", "active"), [(5, True), (1, False)], ids=["widened", "deactivated"]
)
def test_67_a_lock_someone_changed_is_set_back_to_one_active_slot(
    unique_name: str, limit: int, active: bool
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    name = flows.promotion_lock_name(unique_name)
    with flows.promotion_lock(unique_name):
        pass
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, active=active)
        )

    with flows.promotion_lock(unique_name):
        pass

    with get_client(sync_client=True) as client:
        found = client.read_global_concurrency_limit_by_name(name)
    assert (found.limit, found.active, found.active_slots) == (1, True, 0)


def test_68_a_run_failing_after_registration_moves_no_alias_and_keeps_no_version(
    register: Callable[..., registry.Candidate],
    synthetic_data_dir: Path,
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    champion = register(99.0)  # any new model beats it
    flows.promote_exclusively(champion, small_labeled[1])

    def unavailable(*args: object) -> None:
        raise RuntimeError("Prefect API unavailable while publishing the metrics")

    monkeypatch.setattr(flows, "_publish", unavailable)
    with pytest.raises(RuntimeError, match="while publishing"):
        training(
            TrainingParameters(
                train_month="2023-01",
                val_month="2023-02",
                data_dir=str(synthetic_data_dir),
                model_name=unique_name,
                experiment=unique_name,
                hyperparameters=WEAK,
            )
        )
    assert aliases(unique_name) == {"challenger": 1, "champion": 1}
    versions = MlflowClient().search_model_versions(f"name = '{unique_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    (run,) = [
        r
        for r in mlflow.search_runs(experiment_names=[unique_name], output_format="list")
        if r.info.run_name != LOGGED_RUN
    ]
    assert run.info.status == "FAILED"


def test_69_a_retried_registration_leaves_one_version(
    synthetic_data_dir: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry answers the first registration with a failure after creating the version."""
    monkeypatch.setattr(flows.register, "retry_delay_seconds", [0.0])
    create = mlflow.register_model
    calls: list[str] = []

    def lost_answer(*args: Any, **kwargs: Any) -> Any:
        calls.append("register")
        version = create(*args, **kwargs)
        if len(calls) == 1:
            raise TransientError("connection reset before the registry's answer arrived")
        return version

    monkeypatch.setattr(registry.mlflow, "register_model", lost_answer)
    summary = training(
        TrainingParameters(
            train_month="2023-01",
            val_month="2023-02",
            data_dir=str(synthetic_data_dir),
            model_name=unique_name,
            experiment=unique_name,
            hyperparameters=WEAK,
        )
    )
    versions = MlflowClient().search_model_versions(f"name = '{unique_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert calls == ["register"]  # the retry found the version instead of creating another
    assert (summary.model_version, summary.aliases) == ("1", ["challenger", "champion"])
    flow_run_id = MlflowClient().get_run(summary.run_id).data.tags["prefect_flow_run_id"]
    assert versions[0].tags[registry.REGISTRATION_TAG] == flow_run_id


def test_70_the_champion_is_rescored_from_its_booster_with_the_workers_code(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    champion = register(0.01)  # as recorded; the real figure is far higher
    flows.promote_exclusively(champion, small_labeled[1])
    version = MlflowClient().get_model_version(unique_name, champion.version)
    assert version.tags[registry.DIGEST_TAG].startswith("sha256:")
    assert registry.champion_rmse(unique_name, KEY, small_labeled[1]) == 0.01
    # Validated elsewhere: re-scored from the logged booster file on this data.
    rescored = registry.champion_rmse(
        unique_name, "green_tripdata_2023-03.parquet:1", small_labeled[1]
    )
    assert rescored == pytest.approx(evaluate(small_booster, *small_labeled).rmse, abs=1e-4)


@pytest.mark.parametrize("tampered", ["artifacts/booster.ubj", "code/pipeline/features.py"])
def test_70_a_champion_changed_in_the_artifact_store_is_refused_and_nothing_moves(
    tampered: str,
    register: Callable[..., registry.Candidate],
    logged: tuple[LoggedModel, str],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    champion = register(4.0)
    flows.promote_exclusively(champion, small_labeled[1])
    # Whoever can write the bucket's mlflow/ prefix replaces a file of the logged model.
    model_id = logged[0].uri.removeprefix("models:/")
    stored = Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    target = stored / tampered
    assert target.is_file()
    target.write_bytes(target.read_bytes() + b"\n# tampered\n")
    challenger = register(3.0, key="green_tripdata_2023-03.parquet:1")  # forces a re-scoring
    with pytest.raises(
        PipelineError,
        match=rf"the files of the champion models:/{unique_name}/1 do not match the digest "
        "recorded at registration",
    ):
        flows.promote_exclusively(challenger, small_labeled[1])
    assert aliases(unique_name) == {"challenger": 1, "champion": 1}


def test_70_the_digest_recorded_at_registration_is_of_the_files_in_the_store(
    register: Callable[..., registry.Candidate], unique_name: str, tmp_path: Path
) -> None:
    # Taken from the files as they were uploaded, not from a download: it must match one.
    candidate = register(4.4)
    uri = f"models:/{unique_name}/{candidate.version}"
    stored = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    recorded = MlflowClient().get_model_version(unique_name, candidate.version).tags
    assert recorded[registry.DIGEST_TAG] == model_digest(stored)


def test_70_a_model_not_uploaded_as_one_directory_has_no_digest(
    unique_name: str,
    small_booster: xgb.Booster,
    small_labeled: tuple[LabeledSet, LabeledSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An MLflow that logs a model without uploading its directory in one call: no digest.
    logged_elsewhere = SimpleNamespace(model_uri="models:/m-elsewhere")
    monkeypatch.setattr(model.Model, "log", staticmethod(lambda **_: logged_elsewhere))
    with pytest.raises(PipelineError, match="did not upload the model models:/m-elsewhere as one"):
        log_model("any-run", small_booster, small_labeled[1].trips)


def test_70_a_champion_without_a_recorded_digest_is_not_rescored_and_nothing_moves(
    register: Callable[..., registry.Candidate],
    unique_name: str,
    small_labeled: tuple[LabeledSet, LabeledSet],
) -> None:
    champion = register(4.0)
    flows.promote_exclusively(champion, small_labeled[1])
    # Registered before digests were recorded: its files cannot be checked.
    MlflowClient().delete_model_version_tag(unique_name, champion.version, registry.DIGEST_TAG)
    challenger = register(3.0, key="green_tripdata_2023-03.parquet:1")  # forces a re-scoring

    with pytest.raises(PipelineError) as raised:
        flows.promote_exclusively(challenger, small_labeled[1])

    assert str(raised.value) == (
        f"cannot re-score the champion models:/{unique_name}/1: it has no model_sha256 tag "
        "(registered before model digests were recorded), so its files cannot be checked. "
        "Check them and tag the version with model_sha256, or move the champion alias to a "
        "version that has one"
    )
    assert aliases(unique_name) == {"challenger": 1, "champion": 1}


def test_71_an_error_tag_and_a_run_link_never_hold_url_credentials(unique_name: str) -> None:
    secret = "s3cr3t-in-a-url"
    run_id = tracking.start_run(experiment=unique_name, run_name="credentials", tags={})
    tracking.end_run(run_id, PipelineError(f"could not download https://u:{secret}@mirror/x"))
    assert (
        MlflowClient().get_run(run_id).data.tags["error"] == "could not download https://mirror/x"
    )
    assert secret not in tracking.run_link(f"http://u:{secret}@127.0.0.1:5000", run_id)

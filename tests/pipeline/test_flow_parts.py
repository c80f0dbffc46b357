"""The flow's own logic outside Prefect: the metrics artifact, the failed run's clean-up and
the promotion lock's name (``tests/pipeline/test_flow.py`` runs the whole flow under Prefect).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from pipeline import flows, registry
from pipeline.evaluate import Evaluation
from pipeline.train import TrainConfig

CANDIDATE = registry.Candidate(
    model_name="trip-duration-green", version="7", rmse=4.25, validation_key="k:1"
)
EVALUATION = Evaluation(
    rmse=4.123456, mae=2.5, baseline_rmse=6.87654, baseline_mae=4.00004, predictions=np.ones(1)
)
LINK = "http://10.42.0.10:5000/#/experiments/1/runs/abc"


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The markdown artifacts the flow creates (keyword arguments), instead of Prefect's API."""
    artifacts: list[dict[str, str]] = []
    monkeypatch.setattr(flows, "create_markdown_artifact", lambda **kw: artifacts.append(kw))
    return artifacts


def test_the_metrics_artifact_names_the_version_months_metrics_and_run(
    published: list[dict[str, str]],
) -> None:
    flows._publish(CANDIDATE, ("2023-01", "2023-02"), EVALUATION, LINK)

    [artifact] = published
    assert artifact["key"] == flows.METRICS_ARTIFACT_KEY == "training-metrics"
    assert artifact["description"] == "Validation metrics of the trained model"
    assert artifact["markdown"].splitlines() == [
        "## trip-duration-green version 7",
        "",
        "Trained on 2023-01, validated on 2023-02.",
        "",
        "| metric | model | baseline (zone-pair mean) |",
        "|---|---|---|",
        "| RMSE (minutes) | 4.1235 | 6.8765 |",
        "| MAE (minutes) | 2.5000 | 4.0000 |",
        "",
        "Next, the version becomes `challenger`, and `champion` if its RMSE beats the champion's "
        "on this validation month at that moment (the flow run's log and result say which).",
        "",
        f"MLflow: [{LINK}]({LINK})",
    ]


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("https://mlflow.example.com/#/experiments/1/runs/abc", "[{0}]({0})"),
        ("http://127.0.0.1:5000/#/experiments/1/runs/abc", "[{0}]({0})"),
        (
            "run abc in sqlite:///mlflow.db (mlflow ui --backend-store-uri sqlite:///mlflow.db)",
            "{0}",
        ),
    ],
    ids=["https", "http", "local-store"],
)
def test_the_run_is_a_link_only_when_it_is_a_url(target: str, shown: str) -> None:
    assert flows._markdown_link(target) == shown.format(target)


def test_a_failed_run_deletes_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    discarded: list[registry.Candidate] = []
    monkeypatch.setattr(registry, "discard", discarded.append)
    error = RuntimeError("log-to-mlflow failed")

    flows._discard(CANDIDATE, error)

    assert discarded == [CANDIDATE]
    assert not getattr(error, "__notes__", [])


def test_a_version_that_cannot_be_deleted_is_noted_on_the_run_s_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreachable(candidate: registry.Candidate) -> None:
        raise ConnectionError("MLflow is unreachable")

    monkeypatch.setattr(registry, "discard", unreachable)
    error = RuntimeError("log-to-mlflow failed")

    flows._discard(CANDIDATE, error)

    assert error.__notes__ == [
        "trip-duration-green version 7 could not be deleted: MLflow is unreachable"
    ]


def test_a_model_name_prefect_accepts_is_its_own_lock_name() -> None:
    assert flows.promotion_lock_name("trip-duration-green") == "promote-trip-duration-green"


@pytest.mark.parametrize("name", ["a/b", "50%", "x&y", "<m>"])
def test_a_model_name_prefect_refuses_is_locked_under_its_digest(name: str) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    assert flows.promotion_lock_name(name) == f"promote-{digest[:32]}"


# The tuning flow's trials share the host's cores (`_per_worker_threads`): the tuning flow's
# own tests start a Dask cluster (`-m slow`), so its arithmetic is pinned here.


@pytest.mark.parametrize(
    ("cores", "parallel", "threads"),
    [(8, 3, 2), (8, 1, 8), (2, 4, 1), (None, 1, 1), (None, 3, 1)],
    ids=["rounded-down", "one-trial", "more-trials-than-cores", "uncounted", "uncounted-3"],
)
def test_parallel_trials_share_the_host_s_cores_at_least_one_thread_each(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, parallel: int, threads: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)

    shared = flows._per_worker_threads(TrainConfig(max_depth=5), parallel)

    assert shared.nthread == threads
    assert type(shared.nthread) is int
    assert shared.model_dump() == TrainConfig(max_depth=5, nthread=threads).model_dump()


def test_a_trial_thread_count_set_by_the_user_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    config = TrainConfig(nthread=3)

    assert flows._per_worker_threads(config, 4) is config

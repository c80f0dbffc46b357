"""The flow's own logic outside Prefect: the metrics artifact, the failed run's clean-up and
the promotion lock's name (``tests/pipeline/test_flow.py`` runs the whole flow under Prefect).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from uuid import uuid4

import numpy as np
import pytest
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

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


# The promotion lock's limit, against a stand-in for Prefect's client (test_promotion.py runs
# the lock on Prefect's test harness; these take milliseconds, so a mutant of the helper is
# judged before any harness starts).


@dataclass
class _Limits:
    """Prefect's global concurrency limits, as a sync client sees them."""

    found: dict[str, GlobalConcurrencyLimitResponse] = field(default_factory=dict)
    created_meanwhile: bool = False  # another run creates the limit between read and create
    calls: list[tuple[str, object]] = field(default_factory=list)

    def __enter__(self) -> _Limits:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read_global_concurrency_limit_by_name(self, name: str) -> GlobalConcurrencyLimitResponse:
        self.calls.append(("read", name))
        if name not in self.found:
            raise ObjectNotFound(http_exc=Exception("404"))
        return self.found[name]

    def create_global_concurrency_limit(self, limit: GlobalConcurrencyLimitCreate) -> None:
        self.calls.append(("create", limit))
        if self.created_meanwhile:
            raise ObjectAlreadyExists(http_exc=Exception("409"))

    def update_global_concurrency_limit(
        self, name: str, update: GlobalConcurrencyLimitUpdate
    ) -> None:
        self.calls.append(("update", (name, update)))


def _limit(name: str, limit: int, active: bool) -> GlobalConcurrencyLimitResponse:
    return GlobalConcurrencyLimitResponse(
        id=uuid4(),
        created=None,
        updated=None,
        name=name,
        limit=limit,
        active=active,
        active_slots=0,
        slot_decay_per_second=0.0,
    )


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> _Limits:
    stand_in = _Limits()

    def get_client(*, sync_client: bool = False) -> _Limits:
        assert sync_client is True  # the lock is taken from synchronous tasks
        return stand_in

    monkeypatch.setattr(flows, "get_client", get_client)
    return stand_in


def test_a_missing_lock_is_created_with_one_active_slot(limits: _Limits) -> None:
    flows._ensure_single_slot_limit("promote-m")

    assert limits.calls == [
        ("read", "promote-m"),
        ("create", GlobalConcurrencyLimitCreate(name="promote-m", limit=1)),
    ]
    [(_, created)] = limits.calls[1:]
    assert isinstance(created, GlobalConcurrencyLimitCreate)
    assert (created.limit, created.active) == (1, True)


def test_a_lock_another_run_created_meanwhile_is_taken_as_it_is(limits: _Limits) -> None:
    limits.created_meanwhile = True

    flows._ensure_single_slot_limit("promote-m")

    assert [call for call, _ in limits.calls] == ["read", "create"]


def test_a_lock_of_one_active_slot_is_left_alone(limits: _Limits) -> None:
    limits.found["promote-m"] = _limit("promote-m", 1, True)

    flows._ensure_single_slot_limit("promote-m")

    assert limits.calls == [("read", "promote-m")]


@pytest.mark.parametrize(("limit", "active"), [(5, True), (0, True), (1, False), (2, False)])
def test_a_lock_someone_changed_is_set_back_to_one_active_slot(
    limits: _Limits, limit: int, active: bool
) -> None:
    limits.found["promote-m"] = _limit("promote-m", limit, active)

    flows._ensure_single_slot_limit("promote-m")

    assert limits.calls == [
        ("read", "promote-m"),
        ("update", ("promote-m", GlobalConcurrencyLimitUpdate(limit=1, active=True))),
    ]

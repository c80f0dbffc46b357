"""Train stage on a small synthetic month: the form's hyperparameters are what XGBoost uses.

(The model's quality on the real months: test_model_quality.py.)
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from pipeline.features import LabeledSet, make_labeled_set
from pipeline.train import TrainConfig, predict_minutes, train_model


def _month(seed: int, n: int = 600) -> LabeledSet:
    """Trips whose duration grows with distance, in 20 zones, over January 2023."""
    rng = np.random.default_rng(seed)
    pickup = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 30 * 24 * 60, n), "min")
    miles = rng.uniform(0.5, 10, n)
    minutes = 3 * miles + rng.uniform(1, 5, n)
    trips = pd.DataFrame(
        {
            "lpep_pickup_datetime": pickup,
            "lpep_dropoff_datetime": pickup + pd.to_timedelta(minutes, "min"),
            "PULocationID": rng.integers(1, 21, n),
            "DOLocationID": rng.integers(1, 21, n),
            "trip_distance": miles,
        }
    )
    return make_labeled_set(trips, label=f"synthetic-{seed}")


CONFIG = TrainConfig(
    learning_rate=0.3,
    max_depth=3,
    min_child_weight=2.0,
    reg_lambda=5.0,
    subsample=0.9,
    colsample_bytree=0.7,
    max_bin=64,
    num_boost_round=40,
    early_stopping_rounds=5,
    seed=7,
    nthread=1,
)


def _learner(config: TrainConfig) -> dict:
    booster = train_model(_month(1), _month(2), config)
    return json.loads(booster.save_config())["learner"]


def test_every_hyperparameter_of_the_form_reaches_xgboost() -> None:
    learner = _learner(CONFIG)

    tree = learner["gradient_booster"]["tree_train_param"]
    assert {key: float(tree[key]) for key in ("eta", "min_child_weight", "reg_lambda")} == {
        "eta": pytest.approx(0.3),
        "min_child_weight": 2.0,
        "reg_lambda": 5.0,
    }
    assert float(tree["subsample"]) == pytest.approx(0.9)
    assert float(tree["colsample_bytree"]) == pytest.approx(0.7)
    assert (tree["max_depth"], tree["max_bin"]) == ("3", "64")
    # Only the distance (third feature) is constrained: a longer trip is never predicted shorter.
    assert tree["monotone_constraints"] == "(0,0,1,0,0)"
    assert learner["generic_param"]["seed"] == "7"
    assert learner["generic_param"]["nthread"] == "1"
    assert learner["learner_train_param"]["objective"] == "reg:squarederror"
    assert learner["metrics"] == [{"name": "rmse"}]
    assert learner["gradient_booster"]["gbtree_train_param"]["tree_method"] == "hist"


def test_nthread_0_uses_every_core() -> None:
    learner = _learner(CONFIG.model_copy(update={"nthread": 0}))

    assert learner["generic_param"]["nthread"] == str(os.cpu_count())


def test_training_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    train_model(_month(1), _month(2), CONFIG)

    assert capsys.readouterr() == ("", "")


class _Booster:
    """A model predicting the given minutes, whatever the features."""

    def __init__(self, minutes: list[float]) -> None:
        self.minutes = np.array(minutes)

    def inplace_predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.minutes


def test_predictions_are_kept_within_the_target_s_1_to_60_minutes() -> None:
    booster: xgb.Booster = _Booster([-3.0, 0.5, 1.0, 17.25, 60.0, 75.0])  # type: ignore[assignment]

    predicted = predict_minutes(booster, pd.DataFrame())

    assert predicted.tolist() == [1.0, 1.0, 1.0, 17.25, 60.0, 60.0]


def test_nthread_0_is_one_thread_where_the_cores_cannot_be_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # os.cpu_count() may not know

    assert CONFIG.model_copy(update={"nthread": 0}).xgboost_params()["nthread"] == 1


def test_training_runs_up_to_the_configured_rounds_while_validation_improves() -> None:
    # A small learning rate: every round improves the validation RMSE, so none is cut.
    slow = CONFIG.model_copy(
        update={"learning_rate": 0.05, "num_boost_round": 25, "early_stopping_rounds": 25}
    )

    assert train_model(_month(1), _month(2), slow).num_boosted_rounds() == 25

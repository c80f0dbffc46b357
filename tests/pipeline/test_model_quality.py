"""Train and evaluate stages on the real months: accuracy, behaviour, determinism.

The tests of the model trained on the full months are marked ``slow``: `make test` runs them,
`make mutate` leaves them out (each mutant's pytest session would train that model again).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from pipeline.evaluate import evaluate, zone_pair_baseline
from pipeline.features import ZONE_DTYPE, LabeledSet, make_features, make_labeled_set
from pipeline.train import TrainConfig, predict_minutes, train_model

# The public course pipeline scores 5.19 on these months; the issue asks for at most 4.6.
MAX_RMSE = 4.6


@pytest.mark.slow
def test_validation_rmse_is_at_most_4_6_and_beats_the_baseline(
    booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    evaluation = evaluate(booster, *labeled)
    assert evaluation.rmse <= MAX_RMSE
    assert evaluation.rmse < evaluation.baseline_rmse
    assert evaluation.mae < evaluation.baseline_mae
    assert len(evaluation.predictions) == len(labeled[1].target)


def test_early_stopping_keeps_only_the_best_rounds(labeled: tuple[LabeledSet, LabeledSet]) -> None:
    train, val = (
        make_labeled_set(data.trips.sample(5_000, random_state=0), label="sample")
        for data in labeled
    )
    config = TrainConfig(learning_rate=0.5, num_boost_round=300, early_stopping_rounds=5)
    # The same training without the cut: it stops 5 rounds after its best one.
    full = xgb.train(
        config.xgboost_params(),
        xgb.DMatrix(train.features, label=train.target, enable_categorical=True),
        num_boost_round=config.num_boost_round,
        evals=[(xgb.DMatrix(val.features, label=val.target, enable_categorical=True), "val")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    best_rounds = full.best_iteration + 1
    assert full.num_boosted_rounds() == best_rounds + config.early_stopping_rounds < 300

    cut = train_model(train, val, config)

    assert cut.num_boosted_rounds() == best_rounds
    assert np.array_equal(
        cut.inplace_predict(val.features),
        full.inplace_predict(val.features, iteration_range=(0, best_rounds)),
    )


@pytest.mark.slow
def test_the_default_model_stopped_early(booster: xgb.Booster) -> None:
    assert 10 < booster.num_boosted_rounds() < TrainConfig().num_boost_round


@pytest.mark.slow
def test_a_much_longer_trip_between_the_same_zones_is_never_predicted_shorter(
    booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    # (A zero distance is unknown, not short: the model may rightly predict it longer.)
    trips = labeled[1].trips
    sample = trips[trips["trip_distance"] > 0].sample(2_000, random_state=1)
    longer = sample.assign(trip_distance=sample["trip_distance"] * 3 + 1)
    short = predict_minutes(booster, make_features(sample))
    long = predict_minutes(booster, make_features(longer))
    assert np.all(long >= short)
    assert np.mean(long - short) > 5  # and it takes noticeably longer on average


@pytest.mark.slow
def test_predictions_are_plausible_durations(
    booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    raw = booster.inplace_predict(labeled[1].features)
    assert (raw < 1).mean() < 0.001  # squared error may stray below a minute, rarely
    predictions = predict_minutes(booster, labeled[1].features)
    assert predictions.min() >= 1
    assert predictions.max() <= 60


@pytest.mark.slow
def test_one_trip_alone_is_predicted_as_in_a_batch(
    booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    # XGBoost re-codes a frame's categories by value; a single row has one category in use.
    batch = booster.inplace_predict(make_features(labeled[1].trips.head(500)))
    for row in (0, 137, 499):
        alone = booster.inplace_predict(make_features(labeled[1].trips.iloc[[row]]))
        assert alone[0] == batch[row]


@pytest.mark.slow
def test_int32_zones_and_unknown_zones_are_predicted(
    booster: xgb.Booster, labeled: tuple[LabeledSet, LabeledSet]
) -> None:
    trips = labeled[1].trips.head(100)
    narrow = trips.astype({"PULocationID": "int32", "DOLocationID": "int32"})
    assert np.array_equal(
        booster.inplace_predict(make_features(narrow)),
        booster.inplace_predict(make_features(trips)),
    )
    # A zone ID outside 1..265 is predicted as a trip whose pickup zone is unknown (missing),
    # not as the trip's real zone (the model does use it), nor an error.
    unknown = booster.inplace_predict(make_features(trips.assign(PULocationID=300)))
    missing = make_features(trips)
    missing["PULocationID"] = pd.Categorical([None] * len(trips), dtype=ZONE_DTYPE)
    assert np.array_equal(unknown, booster.inplace_predict(missing))
    assert not np.array_equal(unknown, booster.inplace_predict(make_features(trips)))


def test_training_is_deterministic(labeled: tuple[LabeledSet, LabeledSet]) -> None:
    train, val = (
        make_labeled_set(data.trips.sample(5_000, random_state=0), label="sample")
        for data in labeled
    )
    config = TrainConfig(num_boost_round=30)
    first, second = train_model(train, val, config), train_model(train, val, config)
    assert np.array_equal(first.inplace_predict(val.features), second.inplace_predict(val.features))


def test_the_baseline_is_the_zone_pair_mean_with_a_global_fallback() -> None:
    def labeled_set(rows: list[tuple[int, int, float]]) -> LabeledSet:
        frame = pd.DataFrame(rows, columns=["PULocationID", "DOLocationID", "minutes"])
        frame["lpep_pickup_datetime"] = pd.Timestamp("2023-01-02 08:00")
        frame["trip_distance"] = 1.0
        return LabeledSet(trips=frame, features=make_features(frame), target=frame["minutes"])

    train = labeled_set([(1, 2, 10.0), (1, 2, 20.0), (3, 4, 30.0)])
    val = labeled_set([(1, 2, 0.0), (3, 4, 0.0), (5, 6, 0.0)])
    assert zone_pair_baseline(train, val).tolist() == [15.0, 30.0, 20.0]

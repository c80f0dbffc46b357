"""Evaluate stage: RMSE and MAE on the validation month, beside a simple baseline.

The baseline predicts the mean training duration of the trip's pickup/drop-off zone pair
(the overall training mean for a pair training never saw): what a lookup table would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.features import LabeledSet
from pipeline.schema import DROPOFF_ZONE, PICKUP_ZONE
from pipeline.train import predict_minutes

if TYPE_CHECKING:
    import xgboost as xgb


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Validation metrics of the model and of the baseline, with the model's predictions."""

    rmse: float
    mae: float
    baseline_rmse: float
    baseline_mae: float
    predictions: np.ndarray

    def metrics(self) -> dict[str, float]:
        """The figures to track, by metric name."""
        return {
            "rmse": self.rmse,
            "mae": self.mae,
            "baseline_rmse": self.baseline_rmse,
            "baseline_mae": self.baseline_mae,
        }


def rmse(actual: pd.Series | np.ndarray, predicted: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean(np.square(np.asarray(actual) - predicted))))


def mae(actual: pd.Series | np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(actual) - predicted)))


def evaluate(booster: xgb.Booster, train: LabeledSet, val: LabeledSet) -> Evaluation:
    """Score ``booster`` and the zone-pair baseline (fitted on ``train``) on ``val``."""
    predictions = predict_minutes(booster, val.features)
    return evaluation_of(val, predictions, zone_pair_baseline(train, val))


def evaluation_of(val: LabeledSet, predictions: np.ndarray, baseline: np.ndarray) -> Evaluation:
    """The metrics of ``predictions`` and of the ``baseline``'s on ``val``."""
    return Evaluation(
        rmse=rmse(val.target, predictions),
        mae=mae(val.target, predictions),
        baseline_rmse=rmse(val.target, baseline),
        baseline_mae=mae(val.target, baseline),
        predictions=predictions,
    )


def zone_pair_baseline(train: LabeledSet, val: LabeledSet) -> np.ndarray:
    """Mean training duration of each validation trip's zone pair (overall mean if unseen)."""
    means = train.target.groupby(zone_pair_key(train.features)).mean()
    return baseline_from_means(means, float(train.target.mean()), val)


def baseline_from_means(means: pd.Series, overall_mean: float, val: LabeledSet) -> np.ndarray:
    """The baseline's predictions for ``val`` from the training means by zone-pair key."""
    looked_up = means.reindex(zone_pair_key(val.features)).to_numpy()
    return np.where(np.isnan(looked_up), overall_mean, looked_up)


def zone_pair_key(features: pd.DataFrame) -> np.ndarray:
    """One integer per (pickup zone, drop-off zone) pair, from the categorical codes."""
    pickup = features[PICKUP_ZONE].cat.codes.to_numpy(dtype=np.int64)
    dropoff = features[DROPOFF_ZONE].cat.codes.to_numpy(dtype=np.int64)
    return pickup * 1000 + dropoff

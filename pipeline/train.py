"""Train stage: gradient-boosted trees (XGBoost, hist), early stopping on the validation month.

XGBoost (which imports scikit-learn, seconds) is imported when training starts, and pandas is
not imported here at all: the command line validates a :class:`TrainConfig` before it starts
anything, Prefect's temporary API server first of all.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.schema import INCREASING, MAX_MINUTES, MIN_MINUTES

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

    from pipeline.features import LabeledSet


class TrainConfig(BaseModel):
    """XGBoost hyperparameters; the defaults are tuned on green 2023-01 / 2023-02."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(
        default=0.15, gt=0, le=1, description="Shrinkage per boosting round."
    )
    max_depth: int = Field(default=8, ge=1, le=16, description="Maximum depth of each tree.")
    min_child_weight: float = Field(
        default=1.0, ge=0, description="Minimum sum of instance weight (hessian) in a leaf."
    )
    reg_lambda: float = Field(default=10.0, ge=0, description="L2 regularisation of leaf weights.")
    subsample: float = Field(
        default=0.8, gt=0, le=1, description="Fraction of rows sampled per tree."
    )
    colsample_bytree: float = Field(
        default=0.8, gt=0, le=1, description="Fraction of features sampled per tree."
    )
    max_bin: int = Field(
        default=256, ge=16, le=1024, description="Histogram bins per numeric feature."
    )
    num_boost_round: int = Field(
        default=1000, ge=1, le=10_000, description="Upper bound on boosting rounds."
    )
    early_stopping_rounds: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Stop after this many rounds without validation gain.",
    )
    seed: int = Field(default=42, ge=0, description="Random seed (row and column sampling).")
    nthread: int = Field(
        default=0,
        ge=0,
        le=256,
        description="CPU threads for XGBoost; 0 uses every core of the host.",
    )

    def xgboost_params(self) -> dict[str, object]:
        """The booster parameters for :func:`xgboost.train`."""
        return {
            "objective": "reg:squarederror",
            "eval_metric": "rmse",
            "tree_method": "hist",
            "learning_rate": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "reg_lambda": self.reg_lambda,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "max_bin": self.max_bin,
            "seed": self.seed,
            "nthread": self.nthread or os.cpu_count() or 1,
            "monotone_constraints": dict.fromkeys(INCREASING, 1),
        }


def train_model(train: LabeledSet, val: LabeledSet, config: TrainConfig) -> xgb.Booster:
    """A booster fitted on ``train``, cut to its best round on ``val``."""
    from pipeline.xgb import xgboost as xgb

    train_matrix = xgb.DMatrix(train.features, label=train.target, enable_categorical=True)
    val_matrix = xgb.DMatrix(val.features, label=val.target, enable_categorical=True)
    booster = xgb.train(
        config.xgboost_params(),
        train_matrix,
        num_boost_round=config.num_boost_round,
        evals=[(val_matrix, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    return booster[: booster.best_iteration + 1]


def predict_minutes(booster: xgb.Booster, features: pd.DataFrame) -> np.ndarray:
    """Predicted minutes, kept within the target's range (1 to 60) the model was trained on."""
    return np.clip(booster.inplace_predict(features), MIN_MINUTES, MAX_MINUTES)

"""The public MLOps course pipeline, implemented from its published description.

Reference point for the benchmark, not product code: the `PU_DO` string feature and
`trip_distance` through scikit-learn's DictVectorizer, XGBoost with the course's tuned
parameters, 100 rounds, early stopping 20. Expected validation RMSE on green 2023-01 / 2023-02
with xgboost 3.x: about 5.19 (PROVENANCE.md quotes 5.19164).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.feature_extraction import DictVectorizer
from sklearn.metrics import root_mean_squared_error

PARAMS = {
    "learning_rate": 0.09585355369315604,
    "max_depth": 30,
    "min_child_weight": 1.060597050922164,
    "objective": "reg:squarederror",
    "reg_alpha": 0.018060244040060163,
    "reg_lambda": 0.011658731377413597,
    "seed": 42,
}


def read_dataframe(path: Path) -> pd.DataFrame:
    """The course's loader: duration in minutes, kept between 1 and 60, zone IDs as strings."""
    df = pd.read_parquet(path)
    df["duration"] = df.lpep_dropoff_datetime - df.lpep_pickup_datetime
    df["duration"] = df.duration.apply(lambda td: td.total_seconds() / 60)
    df = df[(df.duration >= 1) & (df.duration <= 60)].copy()
    categorical = ["PULocationID", "DOLocationID"]
    df[categorical] = df[categorical].astype(str)
    df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    return df


def run(train_path: Path, val_path: Path, *, train_repeat: int = 1) -> float:
    """Load, build features, train and evaluate; returns the validation RMSE."""
    df_train = read_dataframe(train_path)
    if train_repeat > 1:
        df_train = pd.concat([df_train] * train_repeat, ignore_index=True)
    df_val = read_dataframe(val_path)
    features = ["PU_DO", "trip_distance"]
    dv = DictVectorizer()
    x_train = dv.fit_transform(df_train[features].to_dict(orient="records"))
    x_val = dv.transform(df_val[features].to_dict(orient="records"))
    y_train = df_train["duration"].to_numpy()
    y_val = df_val["duration"].to_numpy()
    return train_and_score(x_train, y_train, x_val, y_val)[1]


def train_and_score(
    x_train: Any, y_train: np.ndarray, x_val: Any, y_val: np.ndarray
) -> tuple[xgb.Booster, float]:
    """The course's training (its parameters, 100 rounds, early stopping 20) and its
    validation RMSE at the best round."""
    train = xgb.DMatrix(x_train, label=y_train)
    valid = xgb.DMatrix(x_val, label=y_val)
    booster = xgb.train(
        params=PARAMS,
        dtrain=train,
        num_boost_round=100,
        evals=[(valid, "validation")],
        early_stopping_rounds=20,
        verbose_eval=False,
    )
    y_pred = booster.predict(valid, iteration_range=(0, booster.best_iteration + 1))
    return booster, float(root_mean_squared_error(y_val, np.asarray(y_pred)))

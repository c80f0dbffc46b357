"""The public MLOps course's orchestrated pipeline, implemented from its published description.

Reference point for the benchmark, not product code: the course's orchestration module wraps
its training (``bench/course.py``: the same loader, DictVectorizer, tuned XGBoost, 100 rounds,
early stopping 20) in a Prefect flow of three tasks (``read_data`` twice with retries,
``add_features``, ``train_best_model``), tracked in MLflow on a SQLite store in the working
directory: the parameters, the RMSE, the pickled DictVectorizer as an artifact and the booster
through ``mlflow.xgboost.log_model``. MLflow 3's spelling is used where the course's is gone
(``log_model(name=...)``, ``root_mean_squared_error``). Nothing is registered or promoted: the
course does that by hand in its UI.

    python -m bench.course_flow TRAIN.parquet VAL.parquet   # prints {"rmse": ...}

Issue 13's "course's orchestrated pipeline" is this, run as a process on the embedded default
(no Prefect or MLflow server configured), as our flow case is.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import flow, task
from sklearn.feature_extraction import DictVectorizer

from bench.course import PARAMS, read_dataframe, train_and_score


@task(retries=3, retry_delay_seconds=2)
def read_data(filename: str) -> pd.DataFrame:
    """Read one month into a DataFrame (the course's loader)."""
    return read_dataframe(Path(filename))


@task
def add_features(df_train: pd.DataFrame, df_val: pd.DataFrame) -> tuple[Any, ...]:
    """The course's features: ``PU_DO`` and ``trip_distance`` through a DictVectorizer."""
    features = ["PU_DO", "trip_distance"]
    dv = DictVectorizer()
    x_train = dv.fit_transform(df_train[features].to_dict(orient="records"))
    x_val = dv.transform(df_val[features].to_dict(orient="records"))
    return x_train, x_val, df_train["duration"].to_numpy(), df_val["duration"].to_numpy(), dv


@task(log_prints=True)
def train_best_model(
    x_train: Any, x_val: Any, y_train: np.ndarray, y_val: np.ndarray, dv: DictVectorizer
) -> float:
    """Train with the course's best parameters and log everything to MLflow."""
    with mlflow.start_run():
        mlflow.log_params(PARAMS)
        booster, rmse = train_and_score(x_train, y_train, x_val, y_val)
        mlflow.log_metric("rmse", rmse)
        Path("models").mkdir(exist_ok=True)
        with open("models/preprocessor.b", "wb") as out:
            pickle.dump(dv, out)
        mlflow.log_artifact("models/preprocessor.b", artifact_path="preprocessor")
        mlflow.xgboost.log_model(booster, name="models_mlflow")
    return rmse


@flow
def main_flow(train_path: str, val_path: str) -> float:
    """The course's training pipeline."""
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    mlflow.set_experiment("nyc-taxi-experiment")
    df_train = read_data(train_path)
    df_val = read_data(val_path)
    x_train, x_val, y_train, y_val, dv = add_features(df_train, df_val)
    return train_best_model(x_train, x_val, y_train, y_val, dv)


def main() -> None:
    """Run the flow on two months and print its RMSE as a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("train_path")
    parser.add_argument("val_path")
    args = parser.parse_args()
    print(json.dumps({"rmse": main_flow(args.train_path, args.val_path)}))


if __name__ == "__main__":
    main()

"""One benchmark case per process: ``python -m bench.cases CASE [--repeat N]``.

Each case runs in a fresh interpreter so that its peak memory is its own. It times only the
stages (load + features + train + evaluate), not the interpreter's start-up and imports, and
prints one JSON line: ``{"seconds": ..., "rmse": ..., "rows": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

TRAIN_MONTH = "2023-01"
VAL_MONTH = "2023-02"
COLOR = "green"


def data_dir() -> str:
    """Where the benchmark reads the months: ``$PIPELINE_DATA_DIR``."""
    try:
        return os.environ["PIPELINE_DATA_DIR"]
    except KeyError:
        raise SystemExit(
            "PIPELINE_DATA_DIR must name a directory holding green 2023-01 and 2023-02"
        ) from None


def course(repeat: int) -> dict[str, float]:
    """Case (1): the course pipeline (DictVectorizer over PU_DO and distance)."""
    from bench import course as reference

    directory = Path(data_dir())
    started = time.perf_counter()
    rmse = reference.run(
        directory / f"{COLOR}_tripdata_{TRAIN_MONTH}.parquet",
        directory / f"{COLOR}_tripdata_{VAL_MONTH}.parquet",
        train_repeat=repeat,
    )
    return {"seconds": time.perf_counter() - started, "rmse": rmse}


def stages(repeat: int) -> dict[str, float]:
    """Case (2): our stages as plain functions, no Prefect and no MLflow."""
    # pipeline.train imports XGBoost (and scikit-learn) lazily, when training starts: an import,
    # not a stage, and the course case imports both before its clock starts too.
    import xgboost  # noqa: F401

    from pipeline.data import load_month
    from pipeline.evaluate import evaluate
    from pipeline.features import make_labeled_set
    from pipeline.train import TrainConfig, train_model

    directory = data_dir()
    started = time.perf_counter()
    train_trips = load_month(directory, COLOR, TRAIN_MONTH).trips
    val_trips = load_month(directory, COLOR, VAL_MONTH).trips
    if repeat > 1:
        train_trips = pd.concat([train_trips] * repeat, ignore_index=True)
    train = make_labeled_set(train_trips, label=f"{COLOR} {TRAIN_MONTH} x{repeat}")
    val = make_labeled_set(val_trips, label=f"{COLOR} {VAL_MONTH}")
    booster = train_model(train, val, TrainConfig())
    evaluation = evaluate(booster, train, val)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rmse": evaluation.rmse, "rows": float(len(train.target))}


CASES = {"course": course, "stages": stages}


def main() -> None:
    """Run one case and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--repeat", type=int, default=1, help="training data repeated N times")
    args = parser.parse_args()
    print(json.dumps(CASES[args.case](args.repeat)))


if __name__ == "__main__":
    main()

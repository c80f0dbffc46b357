"""Small synthetic months of green trip records, built in milliseconds.

The unit tests of the load, features, train and registry stages use them instead of the real
months: mutmut (``make mutate``) runs a fresh pytest session per mutant, which would load the
real files and train the full model again each time. The real months stay for what only they
can show: the published files' quirks and the model's quality (``test_model_quality.py``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import file_name
from pipeline.train import TrainConfig

GREEN_COLUMNS = [
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
]
# Quick to train on a synthetic month, still with early stopping doing its work.
SMALL_CONFIG = TrainConfig(max_depth=4, num_boost_round=60, early_stopping_rounds=5, nthread=1)


def synthetic_trips(month: str = "2023-01", *, seed: int = 0, rows: int = 2_000) -> pd.DataFrame:
    """``rows`` green trip records with a pickup in ``month``, as a TLC file holds them.

    A trip lasts 1.4 to 45 minutes, longer with the distance and with the pickup zone (zones
    1 to 20), so a model has something to learn; a fare column stands for the columns the
    pipeline does not read.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(f"{month}-01")
    month_seconds = int(((start + pd.offsets.MonthBegin(1)) - start).total_seconds())
    pickup = start + pd.to_timedelta(rng.integers(0, month_seconds, rows), "s")
    miles = rng.uniform(0.3, 12.0, rows).round(2)
    pickup_zone = rng.integers(1, 21, rows)
    minutes = 2.0 + 3.0 * miles + pickup_zone % 5 + rng.uniform(-1.5, 1.5, rows)
    return pd.DataFrame(
        {
            "VendorID": rng.integers(1, 3, rows),
            "lpep_pickup_datetime": pickup.astype("datetime64[us]"),
            "lpep_dropoff_datetime": (pickup + pd.to_timedelta(minutes, "min")).astype(
                "datetime64[us]"
            ),
            "PULocationID": pickup_zone,
            "DOLocationID": rng.integers(1, 21, rows),
            "trip_distance": miles,
            "fare_amount": (3.0 + 2.5 * miles).round(2),
        }
    )


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` written as parquet."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_months(directory: Path, months: dict[str, int]) -> Path:
    """A data directory holding a synthetic green file per month (month -> seed).

    Each month has a row count of its own (1,500 + 100 x seed), so a test can tell them apart.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for month, seed in months.items():
        trips = synthetic_trips(month, seed=seed, rows=1_500 + 100 * seed)
        (directory / file_name("green", month)).write_bytes(parquet_bytes(trips))
    return directory

"""Features stage: raw trip records -> model inputs, and the duration target.

Only what is known when a trip starts, plus its metered distance (as the reference course
does): pickup and drop-off zones, distance, time of day and day of week. Never fares, tips,
tolls or totals, which are computed from the duration itself.

Zones become a pandas categorical over the fixed TLC zone IDs 1..265 with an int64 index.
XGBoost 3.2 stores the training categories in the booster and re-codes a prediction frame's
categories by value, but it rejects a value it has not seen and an index of another dtype
(int32 zones, as some months carry, against int64 at training). A fixed dtype gives every
frame the same categories; an ID outside 1..265 becomes missing instead of an error.

This module is imported by the logged model at prediction time: keep its imports light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.schema import (
    DROPOFF_ZONE,
    MAX_MINUTES,
    MIN_MINUTES,
    PICKUP_COLUMNS,
    PICKUP_ZONE,
    TRIP_DISTANCE,
)

ZONE_IDS = np.arange(1, 266, dtype=np.int64)
ZONE_DTYPE = pd.CategoricalDtype(pd.Index(ZONE_IDS))
PICKUP_HOUR = "pickup_hour"
PICKUP_WEEKDAY = "pickup_weekday"
FEATURES: tuple[str, ...] = (PICKUP_ZONE, DROPOFF_ZONE, TRIP_DISTANCE, PICKUP_HOUR, PICKUP_WEEKDAY)

TARGET = "duration"


@dataclass(frozen=True, kw_only=True)
class LabeledSet:
    """Trips with a usable duration: the raw rows, their features and their target."""

    trips: pd.DataFrame
    features: pd.DataFrame
    target: pd.Series


def pickup_column_of(trips: pd.DataFrame) -> str:
    """The pickup timestamp column present in ``trips`` (green ``lpep_`` or yellow ``tpep_``)."""
    for name in PICKUP_COLUMNS:
        if name in trips.columns:
            return name
    raise PipelineError(
        f"trip records need a pickup timestamp column ({' or '.join(PICKUP_COLUMNS)}); "
        f"got columns {', '.join(map(str, trips.columns))}"
    )


def make_features(trips: pd.DataFrame) -> pd.DataFrame:
    """The model's input matrix for raw trip records (any extra columns are ignored)."""
    pickup = trips[pickup_column_of(trips)]
    distance = trips[TRIP_DISTANCE].astype("float64")
    return pd.DataFrame(
        {
            PICKUP_ZONE: zone_categorical(trips[PICKUP_ZONE]),
            DROPOFF_ZONE: zone_categorical(trips[DROPOFF_ZONE]),
            # A zero or negative distance is a meter that did not record one: unknown.
            TRIP_DISTANCE: distance.where(distance > 0),
            PICKUP_HOUR: pickup.dt.hour + pickup.dt.minute / 60.0,
            PICKUP_WEEKDAY: pickup.dt.day_of_week,
        },
        index=trips.index,
    )


def zone_categorical(zones: pd.Series) -> pd.Categorical:
    """Zone IDs as the fixed zone categorical; an ID outside 1..265 (or missing) is missing."""
    ids = zones.to_numpy(dtype="float64", na_value=np.nan)
    known = (ids >= ZONE_IDS[0]) & (ids <= ZONE_IDS[-1]) & (ids == np.floor(ids))
    codes = np.where(known, ids - ZONE_IDS[0], -1).astype(np.int16)
    return pd.Categorical.from_codes(codes, dtype=ZONE_DTYPE)


def duration_minutes(trips: pd.DataFrame) -> pd.Series:
    """Trip duration in minutes (drop-off minus pickup)."""
    pickup = pickup_column_of(trips)
    dropoff = pickup.replace("pickup", "dropoff")
    return (trips[dropoff] - trips[pickup]) / pd.Timedelta(minutes=1)


def make_labeled_set(trips: pd.DataFrame, *, label: str) -> LabeledSet:
    """Trips lasting 1 to 60 minutes with their features and duration; ``label`` names them."""
    minutes = duration_minutes(trips)
    keep = minutes.between(MIN_MINUTES, MAX_MINUTES).to_numpy()
    if not keep.any():
        raise PipelineError(
            f"{label}: none of its {len(trips)} trips lasts between "
            f"{MIN_MINUTES:g} and {MAX_MINUTES:g} minutes"
        )
    kept = trips.loc[keep].reset_index(drop=True)
    return LabeledSet(
        trips=kept,
        features=make_features(kept),
        target=minutes.loc[keep].reset_index(drop=True).rename(TARGET),
    )


def combine(sets: Sequence[LabeledSet]) -> LabeledSet:
    """Several months' sets as one, in order (the zone categoricals share one dtype)."""
    if len(sets) == 1:
        return sets[0]
    return LabeledSet(
        trips=pd.concat([s.trips for s in sets], ignore_index=True),
        features=pd.concat([s.features for s in sets], ignore_index=True),
        target=pd.concat([s.target for s in sets], ignore_index=True),
    )


def labeled_frame(trips: pd.DataFrame, *, label: str) -> pd.DataFrame:
    """The features with the target as one more column: a Dask partition of a training set."""
    labeled = make_labeled_set(trips, label=label)
    return labeled.features.assign(**{TARGET: labeled.target})

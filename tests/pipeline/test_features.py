"""Features stage: target, filtering, the zone categorical and what the model may see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.features import (
    FEATURES,
    TARGET,
    ZONE_DTYPE,
    LabeledSet,
    combine,
    duration_minutes,
    labeled_frame,
    make_features,
    make_labeled_set,
    zone_categorical,
)

LEAKY = ("fare_amount", "total_amount", "tip_amount", "tolls_amount", "lpep_dropoff_datetime")


def trips(*rows: tuple[str, str, int, int, float], prefix: str = "lpep") -> pd.DataFrame:
    """Raw trip records from (pickup, drop-off, pickup zone, drop-off zone, miles)."""
    frame = pd.DataFrame(
        rows,
        columns=[
            f"{prefix}_pickup_datetime",
            f"{prefix}_dropoff_datetime",
            "PULocationID",
            "DOLocationID",
            "trip_distance",
        ],
    )
    for column in frame.columns[:2]:
        frame[column] = pd.to_datetime(frame[column])
    return frame


def test_duration_is_in_minutes() -> None:
    frame = trips(("2023-01-02 08:00:00", "2023-01-02 08:12:30", 1, 2, 1.0))
    assert duration_minutes(frame).tolist() == [12.5]


def test_durations_between_1_and_60_minutes_are_kept_bounds_included() -> None:
    frame = trips(
        ("2023-01-02 08:00:00", "2023-01-02 08:00:59", 1, 2, 1.0),  # under a minute
        ("2023-01-02 08:00:00", "2023-01-02 08:01:00", 1, 2, 1.0),  # exactly 1
        ("2023-01-02 08:00:00", "2023-01-02 09:00:00", 1, 2, 1.0),  # exactly 60
        ("2023-01-02 08:00:00", "2023-01-02 09:00:01", 1, 2, 1.0),  # over an hour
        ("2023-01-02 08:00:00", "2023-01-02 07:50:00", 1, 2, 1.0),  # negative
    )
    labeled = make_labeled_set(frame, label="test")
    assert labeled.target.tolist() == [1.0, 60.0]
    assert len(labeled.features) == len(labeled.trips) == 2


def test_no_usable_trip_is_a_clear_error() -> None:
    frame = trips(("2023-01-02 08:00:00", "2023-01-02 07:00:00", 1, 2, 1.0))
    with pytest.raises(PipelineError, match="january: none of its 1 trips lasts between 1 and 60"):
        make_labeled_set(frame, label="january")


def test_features_are_known_at_pickup_plus_distance(labeled: tuple[LabeledSet, LabeledSet]) -> None:
    features = labeled[0].features
    assert tuple(features.columns) == FEATURES
    assert not set(LEAKY) & set(features.columns)


def test_real_targets_and_features(labeled: tuple[LabeledSet, LabeledSet]) -> None:
    for data in labeled:
        assert data.target.between(1, 60).all()
        assert data.features["PULocationID"].dtype == ZONE_DTYPE
        assert data.features["DOLocationID"].dtype == ZONE_DTYPE
        assert data.features["pickup_hour"].between(0, 24, inclusive="left").all()
        assert data.features["pickup_weekday"].between(0, 6).all()
    # Thousands of trips in each month: the filters keep the bulk of them.
    assert len(labeled[0].target) > 65_000
    assert len(labeled[1].target) > 62_000


def test_time_of_day_and_day_of_week() -> None:
    # 2023-01-07 is a Saturday.
    frame = trips(("2023-01-07 18:45:00", "2023-01-07 19:00:00", 1, 2, 1.0))
    features = make_features(frame)
    assert features["pickup_hour"].tolist() == [18.75]
    assert features["pickup_weekday"].tolist() == [5]


def test_zones_share_one_categorical_whatever_the_integer_width() -> None:
    frame = trips(("2023-01-02 08:00:00", "2023-01-02 08:10:00", 7, 265, 1.0))
    narrow = frame.astype({"PULocationID": "int32", "DOLocationID": "int32"})
    for raw in (frame, narrow):
        features = make_features(raw)
        assert features["PULocationID"].dtype == ZONE_DTYPE
        assert features["PULocationID"].tolist() == [7]
        assert features["DOLocationID"].tolist() == [265]


def test_unknown_zones_and_zero_distances_are_missing() -> None:
    frame = trips(("2023-01-02 08:00:00", "2023-01-02 08:10:00", 0, 300, 0.0))
    features = make_features(frame)
    assert features[["PULocationID", "DOLocationID", "trip_distance"]].isna().all().all()


def test_yellow_records_give_the_same_features() -> None:
    row = ("2023-01-02 08:00:00", "2023-01-02 08:10:00", 7, 8, 2.5)
    green, yellow = make_features(trips(row)), make_features(trips(row, prefix="tpep"))
    pd.testing.assert_frame_equal(green, yellow)


def test_records_without_a_pickup_time_are_refused() -> None:
    frame = pd.DataFrame({"PULocationID": [1], "DOLocationID": [2], "trip_distance": [1.0]})
    with pytest.raises(PipelineError, match="need a pickup timestamp column"):
        make_features(frame)


def test_features_keep_the_row_order_and_index() -> None:
    frame = trips(
        ("2023-01-02 08:00:00", "2023-01-02 08:10:00", 1, 2, 1.0),
        ("2023-01-02 09:00:00", "2023-01-02 09:10:00", 3, 4, 2.0),
    ).set_axis([10, 20])
    features = make_features(frame)
    assert features.index.tolist() == [10, 20]
    assert np.array_equal(features["trip_distance"].to_numpy(), [1.0, 2.0])


def test_zone_ids_1_to_265_are_zones_and_anything_else_is_missing() -> None:
    zones = pd.Series([1.0, 265.0, 0.0, 266.0, 7.5, np.nan, 132.0])

    coded = pd.Series(zone_categorical(zones))

    assert coded.dtype == ZONE_DTYPE
    assert coded.tolist()[:2] == [1, 265]
    assert coded.isna().tolist() == [False, False, True, True, True, True, False]
    assert coded.iloc[-1] == 132


def test_a_short_distance_is_kept_and_a_negative_one_is_missing() -> None:
    frame = trips(
        ("2023-01-02 08:00:00", "2023-01-02 08:05:00", 1, 2, 0.4),
        ("2023-01-02 08:00:00", "2023-01-02 08:05:00", 1, 2, -1.2),
    )
    distances = make_features(frame)["trip_distance"]
    assert distances.iloc[0] == 0.4
    assert np.isnan(distances.iloc[1])


def test_records_without_a_pickup_time_are_refused_naming_both_columns_and_those_present() -> None:
    frame = pd.DataFrame({"PULocationID": [1], "DOLocationID": [2], "trip_distance": [1.0]})
    with pytest.raises(PipelineError) as raised:
        make_features(frame)
    assert str(raised.value) == (
        "trip records need a pickup timestamp column (lpep_pickup_datetime or "
        "tpep_pickup_datetime); got columns PULocationID, DOLocationID, trip_distance"
    )


def test_the_labeled_trips_are_the_kept_raw_rows_renumbered() -> None:
    frame = trips(
        ("2023-01-02 08:00:00", "2023-01-02 07:00:00", 1, 2, 1.0),  # dropped
        ("2023-01-02 09:00:00", "2023-01-02 09:10:00", 3, 4, 2.0),
        ("2023-01-02 10:00:00", "2023-01-02 10:30:00", 5, 6, 3.0),
    ).set_axis([10, 20, 30])

    labeled = make_labeled_set(frame, label="test")

    expected = frame.iloc[1:].reset_index(drop=True)
    pd.testing.assert_frame_equal(labeled.trips, expected)
    assert labeled.features.index.tolist() == labeled.target.index.tolist() == [0, 1]
    assert labeled.target.tolist() == [10.0, 30.0]


def test_months_combine_in_order_renumbered_with_one_zone_dtype() -> None:
    first = make_labeled_set(
        trips(("2023-01-02 08:00:00", "2023-01-02 08:10:00", 1, 2, 1.0)), label="first"
    )
    second = make_labeled_set(
        trips(
            ("2023-02-02 08:00:00", "2023-02-02 08:20:00", 3, 4, 2.0),
            ("2023-02-03 08:00:00", "2023-02-03 08:30:00", 5, 6, 3.0),
        ),
        label="second",
    )

    window = combine([first, second])

    assert window.target.tolist() == [10.0, 20.0, 30.0]
    assert window.target.index.tolist() == window.features.index.tolist() == [0, 1, 2]
    assert window.trips.index.tolist() == [0, 1, 2]
    assert window.trips["PULocationID"].tolist() == [1, 3, 5]
    assert window.features["PULocationID"].tolist() == [1, 3, 5]
    assert window.features["PULocationID"].dtype == ZONE_DTYPE
    assert combine([first]) is first


def test_a_dask_partition_is_the_features_with_the_duration_as_one_more_column() -> None:
    frame = trips(
        ("2023-01-02 08:00:00", "2023-01-02 07:00:00", 1, 2, 1.0),  # dropped
        ("2023-01-02 09:00:00", "2023-01-02 09:15:00", 3, 4, 2.0),
    )

    partition = labeled_frame(frame, label="partition")

    assert list(partition.columns) == [*FEATURES, TARGET]
    assert partition[TARGET].tolist() == [15.0]
    pd.testing.assert_frame_equal(
        partition[list(FEATURES)], make_labeled_set(frame, label="x").features
    )
    with pytest.raises(PipelineError, match=r"^empty: none of its 1 trips"):
        labeled_frame(frame.iloc[:1], label="empty")


def test_zone_ids_in_an_object_column_are_coded_as_numbers() -> None:
    # A frame built from mixed Python values (None for an unknown zone) holds objects.
    zones = pd.Series([7, None, 265, 300], dtype=object)

    coded = pd.Series(zone_categorical(zones))

    assert coded.isna().tolist() == [False, True, False, True]
    assert coded.iloc[[0, 2]].tolist() == [7, 265]

"""Load stage on the real months, on broken files, on yellow records and on S3.

The broken, yellow and S3 files are made from a synthetic month (every trip usable), the
checks on what the published files hold from the real ones.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from pipeline.data import MonthData, file_name, load_month, resolve_data_dir
from pipeline.errors import PipelineError, TransientError
from tests.pipeline.synthetic import synthetic_trips

SYNTHETIC_ROWS = 1_500

GREEN_COLUMNS = [
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` written as parquet."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def raw_january() -> pd.DataFrame:
    """A synthetic 2023-01 file's content: the needed columns and others, every trip usable."""
    return synthetic_trips("2023-01", rows=SYNTHETIC_ROWS)


# --- the real months -----------------------------------------------------------------------


def test_real_months_load_with_the_needed_columns_and_uniform_types(
    months: tuple[MonthData, MonthData],
) -> None:
    # 2023-01 stores zone IDs as int64, 2023-02 as int32: both come out as int64.
    for month in months:
        assert list(month.trips.columns) == GREEN_COLUMNS
        assert month.trips.dtypes.astype(str).tolist() == [
            "datetime64[us]",
            "datetime64[us]",
            "int64",
            "int64",
            "float64",
        ]


def test_real_months_row_counts(months: tuple[MonthData, MonthData]) -> None:
    january, february = months
    assert january.rows_read == 68_211
    assert february.rows_read == 64_809
    # A few meter-clock errors (2008/2009 pickups) and next-month pickups are dropped.
    assert 68_000 < len(january.trips) < 68_211
    assert 64_700 < len(february.trips) < 64_809


def test_real_months_pickups_fall_within_the_month(months: tuple[MonthData, MonthData]) -> None:
    for month, start, end in (
        (months[0], "2023-01-01", "2023-02-01"),
        (months[1], "2023-02-01", "2023-03-01"),
    ):
        pickups = month.trips["lpep_pickup_datetime"]
        assert pickups.min() >= pd.Timestamp(start)
        assert pickups.max() < pd.Timestamp(end)


def test_real_months_are_the_raw_rows_with_zones_and_times_and_a_pickup_in_the_month(
    months: tuple[MonthData, MonthData], real_data_dir: Path
) -> None:
    for month, start, end in (
        (months[0], "2023-01-01", "2023-02-01"),
        (months[1], "2023-02-01", "2023-03-01"),
    ):
        path = real_data_dir / file_name("green", month.month)
        raw = pd.read_parquet(path, columns=GREEN_COLUMNS)
        pickup = raw["lpep_pickup_datetime"]
        usable = (
            (pickup >= pd.Timestamp(start))
            & (pickup < pd.Timestamp(end))
            & raw[["lpep_dropoff_datetime", "PULocationID", "DOLocationID"]].notna().all(axis=1)
        )
        assert not usable.all()  # the filter has something to drop in the real files
        expected = raw[usable].reset_index(drop=True)
        expected = expected.astype({"PULocationID": "int64", "DOLocationID": "int64"})
        pd.testing.assert_frame_equal(month.trips, expected)
        # and what is left is clean: no nulls, real zones, no negative distance
        trips = month.trips
        assert not trips.isna().any().any()
        assert trips["PULocationID"].between(1, 265).all()
        assert trips["DOLocationID"].between(1, 265).all()
        assert (trips["trip_distance"] >= 0).all()


def test_the_source_names_the_file_read(
    months: tuple[MonthData, MonthData], real_data_dir: Path
) -> None:
    assert months[0].source == str(real_data_dir / "green_tripdata_2023-01.parquet")
    assert (months[0].color, months[0].month) == ("green", "2023-01")


def test_data_dir_defaults_to_the_environment_then_to_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_DATA_DIR", "s3://bucket/data")
    assert resolve_data_dir("/explicit") == "/explicit"
    assert resolve_data_dir(None) == "s3://bucket/data"
    monkeypatch.delenv("PIPELINE_DATA_DIR")
    assert resolve_data_dir(None) == "data"


# --- what the loader refuses, with a message naming the file and the problem ---------------


def test_missing_columns_are_named(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    broken = raw_january.drop(columns=["PULocationID", "trip_distance"])
    directory = data_dir_with(files={file_name("green", "2023-01"): parquet_bytes(broken)})
    with pytest.raises(PipelineError) as raised:
        load_month(str(directory), "green", "2023-01")
    assert str(raised.value) == (
        f"{directory / 'green_tripdata_2023-01.parquet'} lacks column(s) PULocationID, "
        "trip_distance needed for green trip records (it has: "
        f"{', '.join(broken.columns)})"
    )


def test_an_empty_file_is_refused(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    directory = data_dir_with(
        files={file_name("green", "2023-01"): parquet_bytes(raw_january.head(0))}
    )
    with pytest.raises(
        PipelineError, match=r"green_tripdata_2023-01\.parquet holds no trip records"
    ):
        load_month(str(directory), "green", "2023-01")


def test_a_corrupt_file_is_refused(data_dir_with: Callable[..., Path]) -> None:
    directory = data_dir_with(files={file_name("green", "2023-01"): b"PAR1 this is not parquet"})
    with pytest.raises(
        PipelineError, match=r"green_tripdata_2023-01\.parquet is not a readable parquet file"
    ):
        load_month(str(directory), "green", "2023-01")


def test_a_wrongly_typed_column_is_named(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    broken = raw_january.astype({"PULocationID": "str"})
    directory = data_dir_with(files={file_name("green", "2023-01"): parquet_bytes(broken)})
    with pytest.raises(
        PipelineError, match=r"column PULocationID must hold an integer zone ID, got type"
    ):
        load_month(str(directory), "green", "2023-01")


def test_an_all_null_needed_column_is_named(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    table = pa.Table.from_pandas(raw_january, preserve_index=False)
    nulls = pa.nulls(table.num_rows)
    table = table.set_column(table.schema.get_field_index("trip_distance"), "trip_distance", nulls)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    directory = data_dir_with(files={file_name("green", "2023-01"): buffer.getvalue()})
    with pytest.raises(PipelineError, match="column trip_distance is entirely null"):
        load_month(str(directory), "green", "2023-01")


def test_a_file_holding_another_month_is_refused(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    # January's records filed as March: no pickup falls in the month asked for.
    directory = data_dir_with(files={file_name("green", "2023-03"): parquet_bytes(raw_january)})
    with pytest.raises(
        PipelineError,
        match=r"has no usable trips with a pickup in 2023-03 \(all 1500 rows fall outside",
    ):
        load_month(str(directory), "green", "2023-03")


@pytest.mark.parametrize(
    ("color", "month", "message"),
    [
        ("green", "2023-13", r"month must be YYYY-MM from 2009-01 on .*got '2023-13'"),
        ("green", "23-01", r"month must be YYYY-MM .*got '23-01'"),
        ("green", "2008-12", r"month must be YYYY-MM from 2009-01 on .*got '2008-12'"),
        ("red", "2023-01", r"color must be one of green, yellow; got 'red'"),
    ],
)
def test_bad_arguments_are_refused_before_any_io(
    color: str, month: str, message: str, closed_port_url: str, tmp_path: Path
) -> None:
    with pytest.raises(PipelineError, match=message):
        load_month(str(tmp_path), color, month, base_url=closed_port_url)
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(PipelineError, match=f"data directory {not_a_dir} is not a directory"):
        load_month(str(not_a_dir), "green", "2023-01")


def test_a_file_without_drop_off_zones_is_a_data_error_not_a_transient_one(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    # A raw KeyError here would be retried by the flow as if the network had failed.
    broken = raw_january.drop(columns=["DOLocationID"])
    directory = data_dir_with(files={file_name("green", "2023-01"): parquet_bytes(broken)})
    with pytest.raises(PipelineError, match=r"lacks column\(s\) DOLocationID needed") as raised:
        load_month(str(directory), "green", "2023-01")
    assert not isinstance(raised.value, TransientError)


@pytest.mark.parametrize("column", ["PULocationID", "DOLocationID"])
def test_zone_ids_stored_as_strings_are_refused_not_coerced(
    column: str, data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    # "132" would cast to 132, but a file with text zone IDs is not one the TLC publishes:
    # refusing it keeps the model from training on a misread file.
    broken = raw_january.astype({column: "str"})
    directory = data_dir_with(files={file_name("green", "2023-01"): parquet_bytes(broken)})
    with pytest.raises(
        PipelineError,
        match=rf"column {column} must hold an integer zone ID, got type (string|large_string)",
    ):
        load_month(str(directory), "green", "2023-01")


def _trips_table(rows: list[tuple[Any, ...]]) -> bytes:
    """A green trip-record file of ``rows`` (pickup, drop-off, PU zone, DO zone, distance)."""
    columns = list(zip(*rows, strict=True))
    # int32 zones, as some published months store them
    types = [pa.timestamp("us"), pa.timestamp("us"), pa.int32(), pa.int32(), pa.float64()]
    table = pa.table(
        [pa.array(values, type=kind) for values, kind in zip(columns, types, strict=True)],
        names=GREEN_COLUMNS,
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def test_the_month_includes_its_first_instant_and_excludes_the_next_month_s(
    data_dir_with: Callable[..., Path],
) -> None:
    pickups = [
        "2022-12-31 23:59:59.999999",
        "2023-01-01 00:00:00",
        "2023-01-31 23:59:59.999999",
        "2023-02-01 00:00:00",
    ]
    rows = [(_at(p), _at(p) + pd.Timedelta(minutes=5), 1, 2, 1.0) for p in pickups]
    directory = data_dir_with(files={file_name("green", "2023-01"): _trips_table(rows)})

    month = load_month(str(directory), "green", "2023-01")

    assert month.trips["lpep_pickup_datetime"].tolist() == [_at(pickups[1]), _at(pickups[2])]
    assert month.rows_read == 4


def test_rows_without_zones_or_drop_off_time_are_dropped_and_zones_stay_int64(
    data_dir_with: Callable[..., Path],
) -> None:
    pickup, dropoff = _at("2023-01-10 08:00"), _at("2023-01-10 08:20")
    rows = [
        (pickup, dropoff, 7, 8, 2.5),
        (pickup, dropoff, None, 8, 2.5),
        (pickup, dropoff, 7, None, 2.5),
        (pickup, None, 7, 8, 2.5),
        (None, dropoff, 7, 8, 2.5),
        (pickup, dropoff, 9, 10, None),  # a missing distance is kept: the model takes it
    ]
    directory = data_dir_with(files={file_name("green", "2023-01"): _trips_table(rows)})

    month = load_month(str(directory), "green", "2023-01")

    assert month.trips["PULocationID"].tolist() == [7, 9]
    assert month.trips["DOLocationID"].tolist() == [8, 10]
    assert month.trips["lpep_dropoff_datetime"].notna().all()
    assert month.trips.dtypes.astype(str).tolist() == [
        "datetime64[us]",
        "datetime64[us]",
        "int64",
        "int64",
        "float64",
    ]
    assert month.rows_read == 6


# --- yellow records ---------------------------------------------------------------------------


def test_yellow_records_use_tpep_columns(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    yellow = raw_january.rename(columns=lambda name: name.replace("lpep_", "tpep_"))
    directory = data_dir_with(files={file_name("yellow", "2023-01"): parquet_bytes(yellow)})
    month = load_month(str(directory), "yellow", "2023-01")
    assert list(month.trips.columns) == [name.replace("lpep_", "tpep_") for name in GREEN_COLUMNS]
    assert month.rows_read == len(month.trips) == SYNTHETIC_ROWS


def test_green_columns_are_not_yellow_ones(
    data_dir_with: Callable[..., Path], raw_january: pd.DataFrame
) -> None:
    directory = data_dir_with(files={file_name("yellow", "2023-01"): parquet_bytes(raw_january)})
    with pytest.raises(PipelineError, match=r"lacks column.*tpep_pickup_datetime"):
        load_month(str(directory), "yellow", "2023-01")


# --- S3 -----------------------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulated S3 (moto, in process) with one bucket, ``trips``."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="trips")
        yield client


def test_a_month_is_read_from_s3(s3_bucket: Any, raw_january: pd.DataFrame) -> None:
    s3_bucket.put_object(
        Bucket="trips",
        Key="data/green_tripdata_2023-01.parquet",
        Body=parquet_bytes(raw_january),
    )
    month = load_month("s3://trips/data", "green", "2023-01")
    assert month.source == "s3://trips/data/green_tripdata_2023-01.parquet"
    assert month.rows_read == SYNTHETIC_ROWS
    pd.testing.assert_frame_equal(month.trips, raw_january[GREEN_COLUMNS])


def test_a_missing_month_is_downloaded_into_s3(s3_bucket: Any, tlc_server: Any) -> None:
    name = file_name("green", "2023-02")
    published = parquet_bytes(synthetic_trips("2023-02", rows=SYNTHETIC_ROWS))
    (tlc_server.directory / name).write_bytes(published)
    month = load_month(
        "s3://trips/cache/",
        "green",
        "2023-02",
        base_url=tlc_server.base_url,
        allow_insecure_mirror=True,
    )
    assert month.rows_read == SYNTHETIC_ROWS
    (key,) = (
        item["Key"]
        for item in s3_bucket.list_objects_v2(Bucket="trips", Prefix="cache/mirrors/")["Contents"]
        if item["Key"].endswith(name)
    )
    stored = s3_bucket.get_object(Bucket="trips", Key=key)["Body"].read()
    assert stored == published
    assert tlc_server.requests == [f"/trip-data/{name}"]


def _load_from_s3_through(tlc_server: Any) -> MonthData:
    """Green 2023-02 from ``s3://trips/cache``, downloaded from the stand-in site if missing."""
    return load_month(
        "s3://trips/cache",
        "green",
        "2023-02",
        base_url=tlc_server.base_url,
        allow_insecure_mirror=True,
    )


def test_a_month_downloaded_into_s3_is_read_back_verified_without_downloading_again(
    s3_bucket: Any, tlc_server: Any
) -> None:
    name = file_name("green", "2023-02")
    published = parquet_bytes(synthetic_trips("2023-02", rows=SYNTHETIC_ROWS))
    (tlc_server.directory / name).write_bytes(published)
    first = _load_from_s3_through(tlc_server)

    again = _load_from_s3_through(tlc_server)

    assert tlc_server.requests == [f"/trip-data/{name}"]  # the second read is S3's copy
    assert again.source == first.source
    assert again.source.startswith("s3://trips/cache/mirrors/")
    assert again.origin.startswith(
        f"{again.source} (downloaded from {tlc_server.base_url}/{name}, sha256 "
    )
    assert again.origin.endswith(", verified)")
    assert first.origin == again.origin  # its record was uploaded with it
    pd.testing.assert_frame_equal(again.trips, first.trips)


def test_a_month_changed_in_s3_after_its_download_is_refused(
    s3_bucket: Any, tlc_server: Any
) -> None:
    name = file_name("green", "2023-02")
    (tlc_server.directory / name).write_bytes(
        parquet_bytes(synthetic_trips("2023-02", rows=SYNTHETIC_ROWS))
    )
    uri = _load_from_s3_through(tlc_server).source
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3_bucket.put_object(
        Bucket=bucket, Key=key, Body=parquet_bytes(synthetic_trips("2023-02", rows=10, seed=9))
    )

    with pytest.raises(PipelineError) as raised:
        _load_from_s3_through(tlc_server)
    assert str(raised.value).startswith(f"{uri} changed since it was downloaded from ")


def test_an_unknown_bucket_is_named(s3_bucket: Any) -> None:
    with pytest.raises(
        PipelineError,
        match=r"cannot access s3://nowhere/green_tripdata_2023-01\.parquet: NoSuchBucket",
    ):
        load_month("s3://nowhere", "green", "2023-01")

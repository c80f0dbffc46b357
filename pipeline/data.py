"""Load stage: one month of TLC trip records, from a local directory or an ``s3://`` prefix.

A month missing from the data directory is first downloaded from the public TLC trip-record
site (with a progress bar) into it. The file is validated before use: the columns the
pipeline needs must be present with usable types (any integer width for zone IDs); rows
with a pickup outside the month or without zones or timestamps are dropped, since real
files carry meter-clock errors. Only the needed columns are read.

Downloads are cached as :mod:`pipeline.cache` says: a mirror's apart from the TLC site's,
each with a record of its source and checksum that every read verifies.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlparse

import boto3
import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from tqdm import tqdm

from pipeline import cache
from pipeline.errors import PipelineError, TransientError
from pipeline.schema import (
    DROPOFF_ZONE,
    PICKUP_ZONE,
    TLC_BASE_URL,
    TRIP_DISTANCE,
    add_months,
    dropoff_column,
    parse_color,
    parse_month,
    pickup_column,
    raw_columns,
)
from pipeline.urls import redact

DATA_DIR_ENV = "PIPELINE_DATA_DIR"
DEFAULT_DATA_DIR = "data"

_PARQUET_MAGIC = b"PAR1"
_CHUNK_BYTES = 1 << 20
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class MonthData:
    """One month of validated trip records, with the raw column names of its colour."""

    color: str
    month: str
    source: str
    rows_read: int
    trips: pd.DataFrame
    origin: str = ""  # where the file came from and whether its download record vouched for it


@dataclass(frozen=True, kw_only=True)
class MonthSummary:
    """What the tracking store records of a loaded month, without its rows.

    Computed where the month was loaded (a Dask worker keeps the rows and sends only this).
    """

    color: str
    month: str
    source: str
    rows: int
    digest: str
    column_kinds: dict[str, str]  # column name -> numpy dtype kind ("M", "i", "f")

    @classmethod
    def of(cls, data: MonthData) -> MonthSummary:
        """The summary of ``data``: its usable rows and a vectorised hash of their content."""
        trips = data.trips
        row_hashes = pd.util.hash_pandas_object(trips, index=False).to_numpy()
        return cls(
            color=data.color,
            month=data.month,
            source=data.source,
            rows=len(trips),
            digest=hashlib.sha256(row_hashes.tobytes()).hexdigest()[:8],
            column_kinds={str(name): dtype.kind for name, dtype in trips.dtypes.items()},
        )


def resolve_data_dir(data_dir: str | None = None) -> str:
    """``data_dir``, else ``$PIPELINE_DATA_DIR``, else ``./data``."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def file_name(color: str, month: str) -> str:
    """The TLC file name of ``color``'s records for ``month`` (``YYYY-MM``)."""
    return f"{color}_tripdata_{month}.parquet"


def load_month(
    data_dir: str,
    color: str,
    month: str,
    *,
    base_url: str = TLC_BASE_URL,
    allow_insecure_mirror: bool = False,
) -> MonthData:
    """Read and validate ``color``'s records for ``month``, downloading the file if missing.

    ``base_url`` other than the TLC site is a mirror, cached apart (:mod:`pipeline.cache`);
    a plain-http one only with ``allow_insecure_mirror``.
    """
    parse_color(color)
    parse_month(month)
    name = file_name(color, month)
    places = cache.entries(base_url, name, allow_insecure=allow_insecure_mirror)
    if data_dir.startswith("s3://"):
        source, content, origin = _s3_parquet(data_dir, name, places)
    else:
        source, content, origin = _local_parquet(Path(data_dir), name, places)
    table, rows_read = _read_valid_table(
        pa.BufferReader(content), color=color, month=month, label=source
    )
    return MonthData(
        color=color,
        month=month,
        source=source,
        rows_read=rows_read,
        trips=table.to_pandas(),
        origin=origin,
    )


def download(url: str, destination: Path) -> None:
    """Fetch ``url`` into ``destination`` through a temporary file: never a partial file.

    Its download record (:class:`pipeline.cache.Record`) is written beside it first, so a
    file the pipeline downloaded never lacks one. Network failures and server errors raise
    :class:`TransientError` (worth a retry); a file the site does not publish, or a body
    that is not parquet, a :class:`PipelineError`. Errors show ``url`` without credentials.
    """
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    except OSError as exc:
        raise PipelineError(f"cannot write {destination}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            _stream_to(url, out, label=destination.name)
        _check_parquet_magic(Path(partial), url)
        record = cache.Record.of(Path(partial).read_bytes(), url)
        _write_atomically(destination.with_name(destination.name + cache.RECORD_SUFFIX), record)
        os.replace(partial, destination)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, record: cache.Record) -> None:
    """Write ``record`` to ``path`` through a temporary file beside it."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(record.to_json())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _stream_to(url: str, out: IO[bytes], *, label: str) -> None:
    """Stream ``url``'s body into the binary file ``out`` with a progress bar."""
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=_HTTP_TIMEOUT) as response:
            _check_status(response, url)
            total = int(response.headers.get("content-length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
                for chunk in response.iter_bytes(_CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
    except httpx.TransportError as exc:
        raise TransientError(
            f"could not download {redact(url)}: {redact(str(exc)) or type(exc).__name__}"
        ) from exc


def _check_status(response: httpx.Response, url: str) -> None:
    """Turn an unsuccessful HTTP status into the matching pipeline error."""
    status = response.status_code
    if status == httpx.codes.OK:
        return
    if status >= 500:
        raise TransientError(f"could not download {redact(url)}: the server answered HTTP {status}")
    # CloudFront answers 403, not 404, for a file it does not have.
    raise PipelineError(
        f"could not download {redact(url)}: HTTP {status} (is this month published yet?)"
    )


def _check_parquet_magic(path: Path, url: str) -> None:
    """Refuse a downloaded body that is not a parquet file (an error page, a truncated file)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if size < 12 or head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        raise PipelineError(f"{redact(url)} did not return a parquet file ({size} bytes)")


def _local_parquet(
    directory: Path, name: str, places: tuple[cache.CacheEntry, ...]
) -> tuple[str, bytes, str]:
    """Path, verified content and origin of ``name`` in ``directory``; downloaded when missing.

    The first of ``places`` present is read; with none, the last is downloaded.
    """
    if directory.exists() and not directory.is_dir():
        raise PipelineError(f"data directory {directory} is not a directory")
    present = [entry for entry in places if (directory / entry.key).is_file()]
    if not present:
        try:
            download(places[-1].url, directory / places[-1].key)
        except PipelineError as exc:
            raise type(exc)(f"{name} is not in {directory} and {exc}") from exc
    entry = (present or [places[-1]])[0]
    path, record = directory / entry.key, directory / entry.record_key
    content = path.read_bytes()
    stored = record.read_bytes() if record.is_file() else None
    return str(path), content, cache.verify(content, stored, entry=entry, label=str(path))


def _s3_parquet(
    data_dir: str, name: str, places: tuple[cache.CacheEntry, ...]
) -> tuple[str, bytes, str]:
    """URI, verified content and origin of ``name`` under ``data_dir``; downloaded when missing.

    The first of ``places`` present is read; with none, the last is downloaded and uploaded,
    its record first (an object the pipeline uploaded never lacks one).
    """
    client = boto3.client("s3")
    for entry in places:
        bucket, key = _s3_key(data_dir, entry.key)
        uri = f"s3://{bucket}/{key}"
        body = _s3_call(uri, lambda: _get_object(client, bucket, key))  # noqa: B023
        if body is not None:
            stored = _s3_call(uri, lambda: _get_object(client, bucket, key + cache.RECORD_SUFFIX))  # noqa: B023
            return uri, body, cache.verify(body, stored, entry=entry, label=uri)
    entry = places[-1]
    bucket, key = _s3_key(data_dir, entry.key)
    uri = f"s3://{bucket}/{key}"
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / name
        try:
            download(entry.url, local)
        except PipelineError as exc:
            raise type(exc)(f"{name} is not in {data_dir} and {exc}") from exc
        record = local.with_name(local.name + cache.RECORD_SUFFIX).read_bytes()
        _s3_call(
            uri,
            lambda: client.put_object(Bucket=bucket, Key=key + cache.RECORD_SUFFIX, Body=record),
        )
        _s3_call(uri, lambda: client.upload_file(str(local), bucket, key))
        body = local.read_bytes()
    return uri, body, cache.verify(body, record, entry=entry, label=uri)


def _s3_key(data_dir: str, name: str) -> tuple[str, str]:
    """Bucket and object key of ``name`` under the ``s3://bucket/prefix`` ``data_dir``."""
    parsed = urlparse(data_dir)
    if not parsed.netloc:
        raise PipelineError(f"data directory {data_dir!r} names no bucket (s3://bucket/prefix)")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/{name}" if prefix else name


def _get_object(client: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when the key does not exist."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise
    return response["Body"].read()


def _s3_call(uri: str, call: Callable[[], T]) -> T:
    """Run an S3 call, translating boto errors into pipeline errors that name ``uri``."""
    try:
        return call()
    except NoCredentialsError as exc:
        raise PipelineError(f"cannot access {uri}: no AWS credentials found") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PipelineError(
            f"cannot access {uri}: {error.get('Code', 'error')} ({error.get('Message', exc)})"
        ) from exc
    except BotoCoreError as exc:
        raise TransientError(f"cannot access {uri}: {exc}") from exc


# What each needed column may hold, as (check, description for errors).
_COLUMN_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "timestamp": (
        lambda t: pa.types.is_timestamp(t) and t.tz is None,
        "a timestamp without time zone",
    ),
    # Zone IDs stored as text are refused, not cast: the TLC publishes integers, so a file
    # with strings there is a misread or foreign one (docs/mutation-testing.md).
    "zone": (pa.types.is_integer, "an integer zone ID"),
    "distance": (lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "a number"),
}


def _expected_types(color: str) -> dict[str, str]:
    """Needed column -> kind of values it must hold."""
    return {
        pickup_column(color): "timestamp",
        dropoff_column(color): "timestamp",
        PICKUP_ZONE: "zone",
        DROPOFF_ZONE: "zone",
        TRIP_DISTANCE: "distance",
    }


def _read_valid_table(
    parquet: pa.BufferReader, *, color: str, month: str, label: str
) -> tuple[pa.Table, int]:
    """The needed columns of the file, validated, typed and filtered; and the rows read."""
    try:
        handle = pq.ParquetFile(parquet)
        _check_schema(handle.schema_arrow, color, label)
        table = handle.read(columns=raw_columns(color))
    except (pa.ArrowException, OSError) as exc:
        raise PipelineError(f"{label} is not a readable parquet file: {exc}") from exc
    if table.num_rows == 0:
        raise PipelineError(f"{label} holds no trip records")
    kept = table.filter(_usable_rows(table, color, month))
    if kept.num_rows == 0:
        raise PipelineError(
            f"{label} has no usable trips with a pickup in {month} "
            f"(all {table.num_rows} rows fall outside the month or lack zones or timestamps)"
        )
    return kept.cast(_normalised_schema(kept.schema)), table.num_rows


def _normalised_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with zone IDs as int64 and distances as float64, whatever the file's widths."""
    widened = {PICKUP_ZONE: pa.int64(), DROPOFF_ZONE: pa.int64(), TRIP_DISTANCE: pa.float64()}
    return pa.schema([field.with_type(widened.get(field.name, field.type)) for field in schema])


def _check_schema(schema: pa.Schema, color: str, label: str) -> None:
    """Every needed column is present and holds values of its kind."""
    expected = _expected_types(color)
    missing = [name for name in expected if name not in schema.names]
    if missing:
        raise PipelineError(
            f"{label} lacks column(s) {', '.join(missing)} needed for {color} trip records "
            f"(it has: {', '.join(schema.names)})"
        )
    for name, kind in expected.items():
        check, description = _COLUMN_TYPES[kind]
        column_type = schema.field(name).type
        if pa.types.is_null(column_type):
            raise PipelineError(f"{label}: column {name} is entirely null")
        if not check(column_type):
            raise PipelineError(
                f"{label}: column {name} must hold {description}, got type {column_type}"
            )


def _usable_rows(table: pa.Table, color: str, month: str) -> pa.ChunkedArray:
    """Mask of rows with zones, timestamps and a pickup within ``month``."""
    first_day = parse_month(month)
    pickup = table[pickup_column(color)]
    start, end = (
        pa.scalar(datetime.combine(day, datetime.min.time()), type=pickup.type)
        for day in (first_day, add_months(first_day, 1))
    )
    in_month = pc.and_(pc.greater_equal(pickup, start), pc.less(pickup, end))
    present = [
        pc.is_valid(table[name]) for name in (dropoff_column(color), PICKUP_ZONE, DROPOFF_ZONE)
    ]
    mask = in_month
    for valid in present:
        mask = pc.and_(mask, valid)
    return pc.fill_null(mask, False)

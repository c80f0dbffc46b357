"""Names shared by the loader and the model: trip-record colours, months and raw columns.

Kept free of heavy imports because the logged model imports it at prediction time and the
command line before it starts anything.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal, get_args

from pipeline.errors import PipelineError

TLC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"

Color = Literal["green", "yellow"]
COLORS: tuple[str, ...] = get_args(Color)

PICKUP_ZONE = "PULocationID"
DROPOFF_ZONE = "DOLocationID"
TRIP_DISTANCE = "trip_distance"

# The durations the model learns and predicts, in minutes: shorter or longer trips are
# meter errors or waits, not journeys.
MIN_MINUTES = 1.0
MAX_MINUTES = 60.0
# Features the prediction may only grow with (a longer trip is never predicted shorter).
INCREASING: tuple[str, ...] = (TRIP_DISTANCE,)

# Green (street-hail) records prefix their timestamps with lpep_, yellow ones with tpep_.
_TIMESTAMP_PREFIX: dict[str, str] = {"green": "lpep", "yellow": "tpep"}
PICKUP_COLUMNS: tuple[str, ...] = tuple(f"{p}_pickup_datetime" for p in _TIMESTAMP_PREFIX.values())

_MONTH = re.compile(r"(\d{4})-(\d{2})")
# A training window longer than three years mixes fares, zones and habits of other eras, and
# its files are more than any run here was sized for.
MAX_WINDOW_MONTHS = 36
WINDOW_SEPARATOR = ".."


def pickup_column(color: str) -> str:
    """The pickup timestamp column of ``color``'s trip records."""
    return f"{_TIMESTAMP_PREFIX[color]}_pickup_datetime"


def dropoff_column(color: str) -> str:
    """The drop-off timestamp column of ``color``'s trip records."""
    return f"{_TIMESTAMP_PREFIX[color]}_dropoff_datetime"


def raw_columns(color: str) -> list[str]:
    """The raw columns the pipeline reads from a trip-record file of ``color``."""
    return [
        pickup_column(color),
        dropoff_column(color),
        PICKUP_ZONE,
        DROPOFF_ZONE,
        TRIP_DISTANCE,
    ]


def parse_color(text: str) -> str:
    """``text`` if it is a known trip-record colour, else a :class:`PipelineError`."""
    if text not in COLORS:
        raise PipelineError(f"color must be one of {', '.join(COLORS)}; got {text!r}")
    return text


def parse_month(text: str) -> date:
    """The first day of the month ``YYYY-MM``; anything else is a :class:`PipelineError`."""
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 2009:
        raise PipelineError(
            f"month must be YYYY-MM from 2009-01 on (TLC records start in 2009), got {text!r}"
        )
    return date(int(match[1]), int(match[2]), 1)


def add_months(first_day: date, count: int) -> date:
    """The first day of the month ``count`` months after ``first_day``'s (before if negative)."""
    index = first_day.year * 12 + first_day.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def parse_month_range(text: str) -> tuple[str, ...]:
    """The months of the inclusive range ``FROM..TO`` (``YYYY-MM..YYYY-MM``), in order.

    A range running backwards or longer than :data:`MAX_WINDOW_MONTHS` is a
    :class:`PipelineError` naming it.
    """
    first, separator, last = text.partition(WINDOW_SEPARATOR)
    if not separator:
        raise PipelineError(f"a month range must be FROM..TO (e.g. 2022-11..2023-01), got {text!r}")
    start, end = parse_month(first), parse_month(last)
    count = (end.year - start.year) * 12 + end.month - start.month + 1
    if count < 1:
        raise PipelineError(f"month range {text!r} runs backwards: {first} is after {last}")
    if count > MAX_WINDOW_MONTHS:
        raise PipelineError(
            f"month range {text!r} spans {count} months; at most {MAX_WINDOW_MONTHS} are allowed"
        )
    return tuple(f"{add_months(start, offset):%Y-%m}" for offset in range(count))

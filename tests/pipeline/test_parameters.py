"""The flow's parameters: explicit months, or the latest published ones at the scheduled start."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from pipeline.parameters import TrainingParameters, published_months
from pipeline.schema import add_months


@pytest.mark.parametrize(
    ("first_day", "count", "expected"),
    [
        (date(2023, 1, 1), 1, date(2023, 2, 1)),
        (date(2023, 12, 1), 1, date(2024, 1, 1)),
        (date(2024, 1, 1), -1, date(2023, 12, 1)),
        (date(2024, 3, 1), -3, date(2023, 12, 1)),
        (date(2024, 3, 1), -15, date(2022, 12, 1)),
        (date(2024, 3, 1), 0, date(2024, 3, 1)),
    ],
)
def test_add_months_crosses_year_boundaries(first_day: date, count: int, expected: date) -> None:
    assert add_months(first_day, count) == expected


@pytest.mark.parametrize(
    ("scheduled_start", "lag", "expected"),
    [
        # The monthly schedule (06:00 UTC on the 3rd) with the default lag: January's records,
        # published during March, are the latest a run in April can count on.
        (datetime(2024, 4, 3, 6, tzinfo=UTC), 2, ("2023-12", "2024-01")),
        (datetime(2024, 5, 3, 6, tzinfo=UTC), 2, ("2024-01", "2024-02")),
        (datetime(2024, 1, 3, 6, tzinfo=UTC), 2, ("2023-09", "2023-10")),
        (datetime(2024, 3, 3, 6, tzinfo=UTC), 2, ("2023-11", "2023-12")),
        # The last instant of a month and the first of the next one.
        (datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC), 2, ("2023-10", "2023-11")),
        (datetime(2024, 3, 1, 0, 0, tzinfo=UTC), 2, ("2023-11", "2023-12")),
        # Lag 0: the month that just ended validates; lag 12: a year further back.
        (datetime(2024, 1, 3, 6, tzinfo=UTC), 0, ("2023-11", "2023-12")),
        (datetime(2024, 1, 3, 6, tzinfo=UTC), 12, ("2022-11", "2022-12")),
        # The month is the start's month in UTC, whatever its time zone.
        (datetime(2024, 3, 1, 1, tzinfo=timezone(timedelta(hours=5))), 0, ("2023-12", "2024-01")),
        (datetime(2024, 3, 1, 1), 0, ("2024-01", "2024-02")),  # naive: taken as UTC
    ],
)
def test_published_months_follow_the_scheduled_start(
    scheduled_start: datetime, lag: int, expected: tuple[str, str]
) -> None:
    assert published_months(scheduled_start, lag) == expected


def test_without_months_the_parameters_take_the_published_ones() -> None:
    parameters = TrainingParameters()
    assert parameters.publication_lag_months == 2
    assert parameters.months(datetime(2023, 5, 3, 6, tzinfo=UTC)) == ("2023-01", "2023-02")
    later = TrainingParameters(publication_lag_months=1)
    assert later.months(datetime(2023, 4, 3, 6, tzinfo=UTC)) == ("2023-01", "2023-02")


def test_explicit_months_ignore_the_scheduled_start() -> None:
    parameters = TrainingParameters(train_month="2023-01", val_month="2023-02")
    assert parameters.months(datetime(2030, 1, 1, tzinfo=UTC)) == ("2023-01", "2023-02")


@pytest.mark.parametrize(
    ("months", "expected"),
    [
        (
            {"train_month": "2023-01"},
            "give both train_month and val_month, or neither (then they follow the run's "
            "scheduled start); got only train_month=2023-01",
        ),
        (
            {"val_month": "2023-02"},
            "give both train_month and val_month, or neither (then they follow the run's "
            "scheduled start); got only val_month=2023-02",
        ),
        ({"publication_lag_months": -1}, "greater than or equal to 0"),
        ({"publication_lag_months": 13}, "less than or equal to 12"),
    ],
)
def test_bad_month_parameters_are_refused_with_what_to_give(
    months: dict[str, object], expected: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(expected)):
        TrainingParameters.model_validate(months)

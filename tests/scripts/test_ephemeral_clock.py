"""The clock ephemeral stacks' ages and expiries are read with (the command tests freeze it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scripts import ephemeral


def test_the_clock_is_the_current_time_in_utc() -> None:
    before = datetime.now(UTC)
    now = ephemeral.clock()
    # Aware, so it compares with the expiry times read back from the stack tags.
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC) + timedelta(seconds=1)


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC-5 (as on a laptop in New York in winter)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_written_in_utc_whatever_the_local_zone(local_zone_not_utc: None) -> None:
    """The stack tags and config hold UTC with a Z: a laptop's local time would shift every
    expiry by its offset."""
    moment = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert ephemeral.iso(moment) == "2026-12-01T09:00:00Z"
    assert ephemeral.iso(moment.astimezone(timezone(timedelta(hours=2)))) == "2026-12-01T09:00:00Z"

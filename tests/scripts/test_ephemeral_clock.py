"""The clock ephemeral stacks' ages and expiries are read with (the command tests freeze it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scripts import ephemeral


def test_the_clock_is_the_current_time_in_utc() -> None:
    before = datetime.now(UTC)
    now = ephemeral.clock()
    # Aware, so it compares with the expiry times read back from the stack tags.
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC) + timedelta(seconds=1)

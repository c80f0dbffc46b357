"""When a stack's hosts run: the ``hostSchedule`` stack setting, parsed once for every reader.

A schedule is ``DAYS HH:MM-HH:MM ZONE``, for example ``Mon-Fri 07:00-20:00 Europe/Berlin``:
the hosts are started at the first time and stopped at the second on each of the days, in
the IANA time zone. ``always`` means the hosts are never stopped. The Pulumi program turns a
schedule into two EventBridge Scheduler cron expressions; ``mlops cost`` into the share of the
month the hosts run. Pure standard library, so the program, the operator CLI and the twin
share it.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass

ALWAYS = "always"
# What an empty ``hostSchedule`` means: throwaway stacks sleep at night and at weekends, prod
# never stops.
WORKING_HOURS = "Mon-Fri 07:00-20:00 UTC"
DEFAULTS = {"dev": WORKING_HOURS, "ephemeral": WORKING_HOURS, "prod": ALWAYS}
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
HOURS_PER_WEEK = 7 * 24
FORMAT = "DAYS HH:MM-HH:MM ZONE (e.g. 'Mon-Fri 07:00-20:00 Europe/Berlin') or 'always'"

_SCHEDULE = re.compile(
    r"(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<stop>\d{2}:\d{2})\s+(?P<zone>\S+)"
)


@dataclass(frozen=True, kw_only=True)
class HostSchedule:
    """Days of the week (indexes into :data:`DAYS`) and the daily start and stop, in ``zone``."""

    days: tuple[int, ...]
    start_minute: int  # minutes after midnight
    stop_minute: int
    zone: str

    @property
    def hours_per_week(self) -> float:
        """How long the hosts run in a week."""
        return len(self.days) * (self.stop_minute - self.start_minute) / 60

    @property
    def running_share(self) -> float:
        """The share of the time the hosts run, 0 to 1."""
        return self.hours_per_week / HOURS_PER_WEEK

    @property
    def start_cron(self) -> str:
        """EventBridge Scheduler expression starting the hosts."""
        return self._cron(self.start_minute)

    @property
    def stop_cron(self) -> str:
        """EventBridge Scheduler expression stopping the hosts."""
        return self._cron(self.stop_minute)

    def _cron(self, minute_of_day: int) -> str:
        hour, minute = divmod(minute_of_day, 60)
        days = ",".join(DAYS[day] for day in self.days)
        return f"cron({minute} {hour} ? * {days} *)"


def default_for(environment: str) -> str:
    """The schedule an empty ``hostSchedule`` stands for in ``environment``."""
    return DEFAULTS.get(environment, ALWAYS)


def parse(text: str) -> HostSchedule | None:
    """The schedule ``text`` names, or None for ``always``.

    Raises ValueError naming what is wrong (the format, a day, a time or the zone).
    """
    text = text.strip()
    if text.lower() == ALWAYS:
        return None
    match = _SCHEDULE.fullmatch(text)
    if not match:
        raise ValueError(f"expected {FORMAT}; got {text!r}")
    days = _days(match["days"])
    start, stop = _minute(match["start"]), _minute(match["stop"])
    if start >= stop:
        raise ValueError(f"the start {match['start']} must be before the stop {match['stop']}")
    try:
        zoneinfo.ZoneInfo(match["zone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {match['zone']!r} (e.g. UTC)") from None
    return HostSchedule(days=days, start_minute=start, stop_minute=stop, zone=match["zone"])


def _days(spec: str) -> tuple[int, ...]:
    """``Mon-Fri,Sun`` -> the sorted, distinct day indexes."""
    chosen: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        low, high = _day(first), _day(last or first)
        if low > high:
            raise ValueError(f"day range {part!r} runs backwards (weeks start on Mon)")
        chosen.update(range(low, high + 1))
    return tuple(sorted(chosen))


def _day(name: str) -> int:
    try:
        return DAYS.index(name.upper())
    except ValueError:
        raise ValueError(f"unknown day {name!r}; expected one of {', '.join(DAYS)}") from None


def _minute(text: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise ValueError(f"time {text!r} is not a time of day HH:MM")
    return hours * 60 + minutes

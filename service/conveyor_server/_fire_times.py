"""When a schedule fires: a cron expression read in a time zone (croniter
does the reading), or a fixed interval counted from the schedule's creation.

Times are whole milliseconds since the epoch. Every process computes the
same fire times from the same stored schedule, and the idempotency key of a
fire is made of its time, so the arithmetic must not depend on the process:
integers, not sums of floats.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# crontab(5)'s fields, and seconds as a sixth, last (croniter's order); a
# seventh (a year) is croniter's own and not part of the contract.
CRON_FIELDS = (5, 6)


def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None when croniter reads it."""
    words = expression.split()
    if not words:
        return "is empty"
    if not words[0].startswith("@") and len(words) not in CRON_FIELDS:
        return (
            f"has {len(words)} fields; give 5 (minute hour day-of-month month day-of-week), "
            "6 (the same, then seconds) or an alias such as @daily"
        )
    if not croniter.is_valid(expression):
        return f"{expression[:100]!r} is not a cron expression croniter can read"
    return None


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone of this name ("" is UTC); raises ValueError naming the
    problem."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name[:100]!r} is not an IANA time zone, such as 'Europe/Paris' or 'UTC'"
        ) from None


class FireTimes(Protocol):
    """The fire times of one schedule."""

    def latest(self, after: int, until: int, limit: int) -> list[int]:
        """The latest `limit` fire times in (after, until], oldest first."""
        ...

    def following(self, after: int, count: int) -> list[int]:
        """The first `count` fire times after `after`."""
        ...


class CronTimes:
    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        self._expression = expression
        self._zone = zone

    def _at(self, millis: int) -> croniter:
        start = datetime.fromtimestamp(millis / 1000, UTC).astimezone(self._zone)
        return croniter(self._expression, start)

    def latest(self, after: int, until: int, limit: int) -> list[int]:
        # Backwards from the end: a long gap costs `limit` steps, not one
        # per missed fire.
        found: list[int] = []
        times = self._at(until + 1)
        while len(found) < limit:
            fire = round(times.get_prev(float) * 1000)
            if fire <= after:
                break
            found.append(fire)
        found.reverse()
        return found

    def following(self, after: int, count: int) -> list[int]:
        times = self._at(after)
        return [round(times.get_next(float) * 1000) for _ in range(count)]


class IntervalTimes:
    """Every `every` milliseconds from `origin` (the schedule's creation),
    the creation itself left out."""

    def __init__(self, origin: int, every: int) -> None:
        self._origin = origin
        self._every = every

    def _index_at(self, millis: int) -> int:
        """The number of the last fire at or before `millis` (0: none yet)."""
        return max(0, (millis - self._origin) // self._every)

    def latest(self, after: int, until: int, limit: int) -> list[int]:
        last = self._index_at(until)
        first = max(self._index_at(after) + 1, last - limit + 1)
        return [self._origin + index * self._every for index in range(first, last + 1)]

    def following(self, after: int, count: int) -> list[int]:
        first = self._index_at(after) + 1
        return [self._origin + index * self._every for index in range(first, first + count)]


def to_millis(seconds: float) -> int:
    return round(seconds * 1000)


def rfc3339(millis: int) -> str:
    """A fire time as its label spells it: UTC, with milliseconds."""
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"

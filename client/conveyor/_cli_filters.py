"""The task filter options that `conveyor list`, `cancel` and `retry` share:
--state, --type, --label, and the creation time (--since, --created-after,
--created-before)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from conveyor._cli_payload import parse_labels
from conveyor._types import TaskState

_F = TypeVar("_F", bound=Callable[..., Any])

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_age(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> timedelta | None:
    """`90s`, `30m`, `24h`, `7d`, `2w`, or a sum such as `1h30m`."""
    if value is None:
        return None
    if not _AGE.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not an age such as 30m, 24h, 7d or 1h30m", ctx=ctx, param=param
        )
    return sum(
        (timedelta(**{_UNITS[unit]: float(amount)}) for amount, unit in _AGE_PART.findall(value)),
        timedelta(),
    )


def parse_time(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> datetime | None:
    """An ISO 8601 date or time; without an offset, in the local time zone."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-01-31 or 2026-01-31T08:00:00Z",
            ctx=ctx,
            param=param,
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """The filters as typed; `since` is turned into `created_after` when read."""

    states: list[TaskState] = field(default_factory=list)
    type: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None

    def given(self) -> bool:
        return any((self.states, self.type, self.labels, self.created_after, self.created_before))

    def created(self) -> bool:
        return self.created_after is not None or self.created_before is not None

    def as_kwargs(self) -> dict[str, Any]:
        """The SDK's filter arguments (`list`, `batch_cancel`, `batch_retry`)."""
        return {
            "states": self.states,
            "type": self.type,
            "labels": self.labels,
            "created_after": self.created_after,
            "created_before": self.created_before,
        }


_OPTIONS = [
    click.option(
        "--state",
        "states",
        multiple=True,
        type=click.Choice([state.name for state in TaskState], case_sensitive=False),
        help="Only tasks in this state; repeat for several.",
    ),
    click.option("--type", "task_type", help="Only tasks of this type."),
    click.option(
        "--label",
        "labels",
        multiple=True,
        callback=parse_labels,
        metavar="KEY=VALUE",
        help="Only tasks with this label; repeat for several (all must match).",
    ),
    click.option(
        "--since",
        callback=parse_age,
        metavar="AGE",
        help="Only tasks created in the last AGE: 30m, 24h, 7d, 1h30m.",
    ),
    click.option(
        "--created-after",
        callback=parse_time,
        metavar="TIME",
        help="Only tasks created at or after TIME (ISO 8601; local time without an offset).",
    ),
    click.option(
        "--created-before",
        callback=parse_time,
        metavar="TIME",
        help="Only tasks created before TIME (ISO 8601; local time without an offset).",
    ),
]


def filter_options(function: _F) -> _F:
    """Add the filter options to a command, which receives them as one
    `filters: TaskFilters` argument."""

    @functools.wraps(function)
    def command(
        *args: Any,
        states: Sequence[str],
        task_type: str | None,
        labels: dict[str, str],
        since: timedelta | None,
        created_after: datetime | None,
        created_before: datetime | None,
        **kwargs: Any,
    ) -> Any:
        if since is not None and created_after is not None:
            raise click.UsageError("give --since or --created-after, not both")
        if since is not None:
            created_after = datetime.now(UTC) - since
        filters = TaskFilters(
            [TaskState[name.upper()] for name in states],
            task_type,
            labels,
            created_after,
            created_before,
        )
        return function(*args, filters=filters, **kwargs)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command  # type: ignore[return-value]

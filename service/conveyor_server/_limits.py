"""The rules for a task type's limits, wherever they are set: declared with
its handler (`@task(max_running=...)`, a ValueError) or changed at run time
through UpdateTaskType (field violations)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from conveyor_server.stores import TypeLimits
from conveyor_server.stores._records import LIMIT_NAMES

# Far above any real pool or rate, low enough to stay clear of int32 and of
# float rounding in token buckets.
MAX_LIMIT = 1_000_000
# The limits counted in whole tasks; max_starts_per_second may be a fraction
# (0.5: one start every two seconds).
WHOLE = frozenset({"max_running", "max_running_per_key", "burst"})


def limit_problems(values: Mapping[str, float]) -> list[tuple[str, str]]:
    """(limit name, what is wrong) for each value that is no valid limit:
    0 (no limit) up to MAX_LIMIT, finite, whole where counted in tasks."""
    problems: list[tuple[str, str]] = []
    for name, value in values.items():
        if name not in LIMIT_NAMES:
            problems.append((name, f"is no limit; the limits are {', '.join(LIMIT_NAMES)}"))
        elif not math.isfinite(value):
            problems.append((name, f"must be a finite number, got {value}"))
        elif not 0 <= value <= MAX_LIMIT:
            problems.append(
                (name, f"must be between 0 (no limit) and {MAX_LIMIT:,}, got {value:g}")
            )
        elif name in WHOLE and value != int(value):
            problems.append((name, f"must be a whole number, got {value:g}"))
    return problems


def declared_limits(task_type: str, values: Mapping[str, float | None]) -> TypeLimits:
    """The limits a handler declares, from the keyword arguments of `@task`
    (None for those not given); a ValueError says what is wrong."""
    given = {name: value for name, value in values.items() if value is not None}
    problems = limit_problems(given)
    if problems:
        said = "; ".join(f"{name} {problem}" for name, problem in problems)
        raise ValueError(f"the limits of task type {task_type!r} are wrong: {said}")
    return TypeLimits(
        max_running=int(given.get("max_running", 0)),
        max_running_per_key=int(given.get("max_running_per_key", 0)),
        max_starts_per_second=float(given.get("max_starts_per_second", 0.0)),
        burst=int(given.get("burst", 0)),
    )

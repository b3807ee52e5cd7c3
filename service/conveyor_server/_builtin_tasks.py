"""Task types every server has: `sleep` and `csv_stats`."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping
from typing import Any

from conveyor_server._context import TaskContext
from conveyor_server._handlers import HandlerRegistry, InvalidPayload

MAX_SLEEP_SECONDS = 24 * 3600.0
# Progress is reported at most this often while sleeping.
SLEEP_TICK_SECONDS = 0.1


def validate_sleep(payload: Mapping[str, Any]) -> None:
    seconds = payload.get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidPayload(f'"seconds" must be a number, got {type(seconds).__name__}')
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise InvalidPayload(f'"seconds" must be between 0 and {MAX_SLEEP_SECONDS:g}')
    unknown = set(payload) - {"seconds"}
    if unknown:
        raise InvalidPayload(f'sleep takes only "seconds"; unknown: {", ".join(sorted(unknown))}')


def sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Wait `seconds`, reporting progress; stop early when cancelled.

    The payload was checked by `validate_sleep` before the handler runs."""
    seconds = float(payload.get("seconds", 0))
    if seconds <= 0:
        return {"slept": 0.0}
    start = time.monotonic()
    deadline = start + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if ctx.wait(min(SLEEP_TICK_SECONDS, remaining)):
            break
        elapsed = time.monotonic() - start
        ctx.report_progress(
            min(100.0, 100.0 * elapsed / seconds), f"slept {elapsed:.1f}s of {seconds:g}s"
        )
    return {"slept": round(time.monotonic() - start, 3)}


MAX_CSV_COLUMNS = 1000


def _parse_csv(payload: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    text = payload.get("csv")
    if not isinstance(text, str):
        raise InvalidPayload(
            'csv_stats needs "csv": a string of CSV text with a header row, '
            'such as "name,age\\nada,36\\n"'
        )
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InvalidPayload(f"cannot parse the CSV text: {exc}") from exc
    rows = [row for row in rows if row]
    if not rows:
        raise InvalidPayload('"csv" is empty: it needs a header row, such as "name,age"')
    header = [name.strip() for name in rows[0]]
    if any(not name for name in header):
        raise InvalidPayload("every column in the header row needs a name")
    if len(set(header)) != len(header):
        raise InvalidPayload("column names in the header row must be unique")
    if len(header) > MAX_CSV_COLUMNS:
        raise InvalidPayload(f"at most {MAX_CSV_COLUMNS} columns are supported")
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InvalidPayload(
                f"row {number} has {len(row)} fields but the header has {len(header)}"
            )
    return header, body


def validate_csv_stats(payload: Mapping[str, Any]) -> None:
    """Cheap checks at submit time (it runs on the event loop): the text and
    its header row. Rows are checked when the task runs."""
    text = payload.get("csv")
    first_line = text.lstrip("\r\n").split("\n", 1)[0] if isinstance(text, str) else None
    _parse_csv({"csv": first_line} if first_line is not None else payload)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def csv_stats(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Per column: count; numeric columns min, max and mean; text columns the
    number of distinct values. Empty cells are not counted."""
    header, body = _parse_csv(payload)
    counts = [0] * len(header)
    numeric = [True] * len(header)
    sums = [0.0] * len(header)
    lows = [math.inf] * len(header)
    highs = [-math.inf] * len(header)
    distinct: list[set[str]] = [set() for _ in header]
    total = len(body)
    step = max(1, total // 20)
    for index, row in enumerate(body):
        if index % step == 0:
            if ctx.cancelled:
                break
            ctx.report_progress(
                100.0 * index / total, f"row {index} of {total}", current=index, total=total
            )
        for column, cell in enumerate(row):
            cell = cell.strip()
            if not cell:
                continue
            counts[column] += 1
            distinct[column].add(cell)
            if numeric[column]:
                value = _number(cell)
                if value is None:
                    numeric[column] = False
                else:
                    sums[column] += value
                    lows[column] = min(lows[column], value)
                    highs[column] = max(highs[column], value)
    columns: dict[str, Any] = {}
    for column, name in enumerate(header):
        if counts[column] and numeric[column]:
            columns[name] = {
                "type": "number",
                "count": counts[column],
                "min": lows[column],
                "max": highs[column],
                "mean": sums[column] / counts[column],
            }
        else:
            columns[name] = {
                "type": "text",
                "count": counts[column],
                "distinct": len(distinct[column]),
            }
    ctx.report_progress(100.0, f"{total} rows", current=total, total=total)
    return {"rows": total, "columns": columns}


def register_builtin_tasks(registry: HandlerRegistry) -> None:
    registry.register("sleep", sleep, validate=validate_sleep, example={"seconds": 2})
    registry.register(
        "csv_stats",
        csv_stats,
        validate=validate_csv_stats,
        example={"csv": "name,age\nada,36\nalan,41\n"},
    )

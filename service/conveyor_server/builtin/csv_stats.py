"""The `csv_stats` task type: per-column statistics of CSV text."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

from conveyor_server._context import TaskContext
from conveyor_server._handlers import InvalidPayload

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

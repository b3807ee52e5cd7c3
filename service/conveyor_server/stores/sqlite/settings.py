"""The rows of `task_types` and `schedules` in `sqlite:///path` (schema
version 5): what a `LocalBook` saves, written in the transaction of the
changes it was saved with, and read back at start-up."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from conveyor_server.stores._book import Saved
from conveyor_server.stores._records import ScheduleRecord, TypeLimits, TypeSettings

_TYPE_COLUMNS = (
    "type, max_running, max_running_per_key, max_starts_per_second, burst, "
    "overrides, paused, update_time"
)
_SCHEDULE_COLUMNS = "tenant, id, spec, paused, create_time, update_time, fired_until"

# A key per row, so that a batch writes each row once, in its latest state.
RowKey = tuple[str, ...]


def row_key(item: Saved) -> RowKey:
    if isinstance(item, TypeSettings):
        return ("type", item.type)
    if isinstance(item, ScheduleRecord):
        return ("schedule", item.tenant, item.id)
    _, tenant, schedule_id = item
    return ("schedule", tenant, schedule_id)


def write(connection: sqlite3.Connection, items: Iterable[Saved]) -> None:
    """Write saved changes: a type's settings, a schedule, or a schedule's
    deletion (`("-", tenant, id)`)."""
    for item in items:
        if isinstance(item, TypeSettings):
            limits = item.defaults
            connection.execute(
                f"INSERT OR REPLACE INTO task_types ({_TYPE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.type,
                    limits.max_running,
                    limits.max_running_per_key,
                    limits.max_starts_per_second,
                    limits.burst,
                    json.dumps(dict(item.overrides), separators=(",", ":")),
                    int(item.paused),
                    item.update_time,
                ),
            )
        elif isinstance(item, ScheduleRecord):
            connection.execute(
                f"INSERT OR REPLACE INTO schedules ({_SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    item.tenant,
                    item.id,
                    item.spec,
                    int(item.paused),
                    item.create_time,
                    item.update_time,
                    item.fired_until,
                ),
            )
        else:
            _, tenant, schedule_id = item
            connection.execute(
                "DELETE FROM schedules WHERE tenant = ? AND id = ?", (tenant, schedule_id)
            )


def read(connection: sqlite3.Connection) -> list[TypeSettings | ScheduleRecord]:
    """Every type's settings and every schedule in the file."""
    found: list[TypeSettings | ScheduleRecord] = []
    for row in connection.execute(f"SELECT {_TYPE_COLUMNS} FROM task_types"):
        task_type, max_running, per_key, per_second, burst, overrides, paused, updated = row
        found.append(
            TypeSettings(
                task_type,
                TypeLimits(max_running, per_key, per_second, burst),
                tuple(sorted(json.loads(overrides).items())),
                bool(paused),
                updated,
            )
        )
    for row in connection.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules"):
        tenant, schedule_id, spec, paused, created, updated, fired_until = row
        found.append(
            ScheduleRecord(schedule_id, tenant, spec, bool(paused), created, updated, fired_until)
        )
    return found

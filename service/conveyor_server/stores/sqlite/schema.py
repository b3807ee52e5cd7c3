"""The SQLite schema of `sqlite:///path` and the mapping of a task to a row.

Schema version 1:

    meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)
        'schema_version' -> '1'
        'last_seq'       -> the highest seq ever given, so that numbering
                            (the list cursor) continues after a restart even
                            when the newest tasks were purged
    tasks(...)
        one row per task, a column per `TaskRecord` field: `payload`,
        `result` and `fingerprint` as BLOB, `labels` as JSON text (NULL for
        none), `error_*` and `progress_*` spelled out (NULL when unset),
        `state` as the `TaskState` number, times as REAL seconds since the
        epoch
    tasks_by_seq on tasks(seq): loading reads the rows in creation order

A row always holds a whole task: every write replaces it.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, TypeVar

from conveyor_server.stores._records import Progress, State, TaskFailure, TaskRecord

SCHEMA_VERSION = 1

T = TypeVar("T")

# The CREATE statements, run at every open.
CREATE_SCHEMA = (
    resources.files("conveyor_server.stores.sqlite")
    .joinpath("schema.sql")
    .read_text(encoding="utf-8")
)

COLUMNS = (
    "id",
    "seq",
    "tenant",
    "type",
    "state",
    "payload",
    "result",
    "error_code",
    "error_message",
    "error_exception_type",
    "progress_percent",
    "progress_message",
    "progress_current",
    "progress_total",
    "attempt",
    "max_attempts",
    "priority",
    "labels",
    "create_time",
    "start_time",
    "end_time",
    "update_time",
    "scheduled_time",
    "timeout",
    "idempotency_key",
    "fingerprint",
    "cancel_requested",
    "version",
)

SELECT_ALL = f"SELECT {', '.join(COLUMNS)} FROM tasks ORDER BY seq"

# Rows go in a few multi-row statements rather than one statement per row:
# SQLite releases the GIL for every statement it steps, and taking it back
# from a busy event loop can cost a thread switch interval each time. A
# short last chunk is padded with repeats of its last item (writing a row
# twice, or deleting an id twice, changes nothing), so that only these few
# statement texts are ever prepared.
_CHUNK_SIZES = (1, 4, 16, 64, 256)


@functools.cache
def _upsert_sql(rows: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * len(COLUMNS)) + ")"] * rows)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("id", "seq"))
    return (
        f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES {values} "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )


@functools.cache
def _delete_sql(ids: int) -> str:
    return f"DELETE FROM tasks WHERE id IN ({', '.join('?' * ids)})"


def _chunks(
    connection: sqlite3.Connection, items: Sequence[T], width: int
) -> Iterator[tuple[int, Sequence[T]]]:
    """(statement size, items padded to it) covering `items`, within the
    connection's limit of `?` per statement (999 before SQLite 3.32)."""
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    largest = max(n for n in _CHUNK_SIZES if n <= limit)
    start = 0
    while len(items) - start >= largest:
        yield largest, items[start : start + largest]
        start += largest
    rest = items[start:]
    if rest:
        size = next(n for n in _CHUNK_SIZES if n >= len(rest))
        yield size, [*rest, *[rest[-1]] * (size - len(rest))]


def write_rows(connection: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert or replace whole `tasks` rows (in `COLUMNS` order)."""
    for size, chunk in _chunks(connection, rows, len(COLUMNS)):
        connection.execute(_upsert_sql(size), [value for row in chunk for value in row])


def delete_rows(connection: sqlite3.Connection, task_ids: Sequence[str]) -> None:
    for size, chunk in _chunks(connection, task_ids, 1):
        connection.execute(_delete_sql(size), chunk)


# A record's fields as one tuple, in `TaskRecord.__slots__` order: the
# snapshot taken on the event loop at each change. A C-level getter, several
# times cheaper than `TaskRecord.copy`.
Snapshot = tuple[Any, ...]
snapshot: operator.attrgetter[Any] = operator.attrgetter(*TaskRecord.__slots__)

_SLOT = {name: index for index, name in enumerate(TaskRecord.__slots__)}
ID = _SLOT["id"]
VERSION = _SLOT["version"]
_SEQ = _SLOT["seq"]
_TENANT = _SLOT["tenant"]
_TYPE = _SLOT["type"]
_STATE = _SLOT["state"]
_PAYLOAD = _SLOT["payload"]
_RESULT = _SLOT["result"]
_ERROR = _SLOT["error"]
_PROGRESS = _SLOT["progress"]
_ATTEMPT = _SLOT["attempt"]
_MAX_ATTEMPTS = _SLOT["max_attempts"]
_PRIORITY = _SLOT["priority"]
_LABELS = _SLOT["labels"]
_CREATE_TIME = _SLOT["create_time"]
_START_TIME = _SLOT["start_time"]
_END_TIME = _SLOT["end_time"]
_UPDATE_TIME = _SLOT["update_time"]
_SCHEDULED_TIME = _SLOT["scheduled_time"]
_TIMEOUT = _SLOT["timeout"]
_IDEMPOTENCY_KEY = _SLOT["idempotency_key"]
_FINGERPRINT = _SLOT["fingerprint"]
_CANCEL_REQUESTED = _SLOT["cancel_requested"]


def record_from_snapshot(values: Snapshot) -> TaskRecord:
    record = TaskRecord.__new__(TaskRecord)
    for name, value in zip(TaskRecord.__slots__, values, strict=True):
        setattr(record, name, value)
    return record


def seq_of(values: Snapshot) -> int:
    seq: int = values[_SEQ]
    return seq


def row_from_snapshot(v: Snapshot) -> tuple[Any, ...]:
    """The `tasks` row of a snapshot, in `COLUMNS` order."""
    error: TaskFailure | None = v[_ERROR]
    progress: Progress | None = v[_PROGRESS]
    labels: dict[str, str] | None = v[_LABELS]
    return (
        v[ID],
        v[_SEQ],
        v[_TENANT],
        v[_TYPE],
        int(v[_STATE]),
        v[_PAYLOAD],
        v[_RESULT],
        None if error is None else error.code,
        None if error is None else error.message,
        None if error is None else error.exception_type,
        None if progress is None else progress.percent,
        None if progress is None else progress.message,
        None if progress is None else progress.current,
        None if progress is None else progress.total,
        v[_ATTEMPT],
        v[_MAX_ATTEMPTS],
        v[_PRIORITY],
        None if labels is None else json.dumps(labels, separators=(",", ":")),
        v[_CREATE_TIME],
        v[_START_TIME],
        v[_END_TIME],
        v[_UPDATE_TIME],
        v[_SCHEDULED_TIME],
        v[_TIMEOUT],
        v[_IDEMPOTENCY_KEY],
        v[_FINGERPRINT],
        int(v[_CANCEL_REQUESTED]),
        v[VERSION],
    )


def record_from_row(row: sqlite3.Row | tuple[Any, ...]) -> TaskRecord:
    (
        task_id,
        seq,
        tenant,
        type_,
        state,
        payload,
        result,
        error_code,
        error_message,
        error_exception_type,
        progress_percent,
        progress_message,
        progress_current,
        progress_total,
        attempt,
        max_attempts,
        priority,
        labels,
        create_time,
        start_time,
        end_time,
        update_time,
        scheduled_time,
        timeout,
        idempotency_key,
        fingerprint,
        cancel_requested,
        version,
    ) = row
    record = TaskRecord(
        id=task_id,
        type=type_,
        payload=bytes(payload),
        labels=None if labels is None else json.loads(labels),
        max_attempts=max_attempts,
        priority=priority,
        timeout=timeout,
        idempotency_key=idempotency_key,
        fingerprint=None if fingerprint is None else bytes(fingerprint),
        create_time=create_time,
        scheduled_time=scheduled_time,
        seq=seq,
        tenant=tenant,
    )
    record.state = State(state)
    record.result = None if result is None else bytes(result)
    if error_code is not None:
        record.error = TaskFailure(error_code, error_message, error_exception_type)
    if progress_percent is not None:
        record.progress = Progress(
            progress_percent, progress_message, progress_current, progress_total
        )
    record.attempt = attempt
    record.start_time = start_time
    record.end_time = end_time
    record.update_time = update_time
    record.cancel_requested = bool(cancel_requested)
    record.version = version
    return record

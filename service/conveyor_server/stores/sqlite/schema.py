"""The SQLite schema of `sqlite:///path` and the mapping of a task to a row.

Schema version 7:

    meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)
        'schema_version' -> '7'
        'last_seq'       -> the highest seq ever given, so that numbering
                            (the list cursor) continues after a restart even
                            when the newest tasks were purged
        'signing_key'    -> the secret that signs list page tokens (hex), so
                            that tokens survive a restart as cursors do
    tasks(...)
        one row per task, keyed by `seq` (the rowid; version 4), a column per
        flat field of a task (`_flat.FIELDS`,
        in the order of schema.sql): `payload`,
        `result` and `fingerprint` as BLOB, `labels` as JSON text (NULL for
        none), `error_*` and `progress_*` spelled out (NULL when unset),
        `state` as the `TaskState` number, times as REAL seconds since the
        epoch; then the columns later versions added, in order: `claim`, the
        fencing token (version 2), `reply_to` (version 3, NULL for none), and
        `concurrency_key`, `depends_on` (ids, space-separated), `waiting` and
        `run_on_dependency_failure` (version 5), and `traceparent` (version 6,
        NULL for none)
    task_types(type PRIMARY KEY, the four declared limits, overrides (JSON),
               paused, update_time)
        one row per type with declared defaults or run-time settings
        (version 5; see `settings`)
    schedules(tenant, id, spec BLOB, paused, create_time, update_time,
              fired_until; PRIMARY KEY (tenant, id))
        one row per schedule (version 5)
    task_logs(task_seq, attempt, sequence, time, level, message;
              PRIMARY KEY (task_seq, attempt, sequence))
        the lines handlers wrote through ctx.logger, the latest
        `MAX_LINES_PER_ATTEMPT` per attempt, keyed by their task's seq
        (version 7); dropped with the task

A row always holds a whole task: every write replaces it.

A file of an older version is migrated when opened, by `MIGRATIONS`, in the
transaction that loads it.
"""

from __future__ import annotations

import functools
import operator
import re
import sqlite3
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, TypeVar

from conveyor_server.stores import _flat
from conveyor_server.stores._records import TaskRecord

SCHEMA_VERSION = 7

# The CREATE statements, run at every open.
CREATE_SCHEMA = (
    resources.files("conveyor_server.stores.sqlite")
    .joinpath("schema.sql")
    .read_text(encoding="utf-8")
)


def _create_table(table: str) -> str:
    """The CREATE statement of one table, as schema.sql spells it."""
    start = CREATE_SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    end = re.compile(r"\)( WITHOUT ROWID)?;").search(CREATE_SCHEMA, start)
    assert end is not None
    return CREATE_SCHEMA[start : end.end()]


_CREATE_TASKS = _create_table("tasks")
# The columns of version 4, and its table: version 5 added the rest.
_V4_NAMES = _flat.NAMES[: _flat.NAMES.index("concurrency_key")]
_CREATE_TASKS_V4 = (
    _CREATE_TASKS[: _CREATE_TASKS.index("    reply_to TEXT,")] + "    reply_to TEXT\n);"
)

# Per version, the statements that bring a file of that version to the next.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # The claim number, kept apart from the attempt number. A task of a
    # version-1 file was fenced on its attempt, and no claim has outlived
    # the process that wrote the file, so the attempt is a claim number
    # that every later claim exceeds.
    1: (
        "ALTER TABLE tasks ADD COLUMN claim INTEGER NOT NULL DEFAULT 0",
        "UPDATE tasks SET claim = attempt",
    ),
    # The reply_to a task was submitted with: none before version 3.
    2: ("ALTER TABLE tasks ADD COLUMN reply_to TEXT",),
    # Rows keyed by seq instead of the random id (see schema.sql): the table
    # is rebuilt, and the index by seq goes with the old one.
    3: (
        _CREATE_TASKS_V4.replace("IF NOT EXISTS tasks", "tasks_by_rowid_seq"),
        f"INSERT INTO tasks_by_rowid_seq ({', '.join(_V4_NAMES)}) "
        f"SELECT {', '.join(_V4_NAMES)} FROM tasks",
        "DROP TABLE tasks",
        "ALTER TABLE tasks_by_rowid_seq RENAME TO tasks",
    ),
    # Concurrency keys and dependencies: none before version 5; nor type
    # settings and schedules, whose tables are new.
    4: (
        "ALTER TABLE tasks ADD COLUMN concurrency_key TEXT",
        "ALTER TABLE tasks ADD COLUMN depends_on TEXT",
        "ALTER TABLE tasks ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN run_on_dependency_failure INTEGER NOT NULL DEFAULT 0",
        _create_table("task_types"),
        _create_table("schedules"),
    ),
    # The trace context of the submitting call: none before version 6.
    5: ("ALTER TABLE tasks ADD COLUMN traceparent TEXT",),
    # Task logs: none before version 7.
    6: (_create_table("task_logs"),),
}

T = TypeVar("T")

# The columns of `tasks`, one per flat field of a task; SQLite stores the
# flat values as Python gives them.
COLUMNS = _flat.NAMES

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
        f"ON CONFLICT (seq) DO UPDATE SET {updates}"
    )


@functools.cache
def _delete_sql(rows: int) -> str:
    return f"DELETE FROM tasks WHERE seq IN ({', '.join('?' * rows)})"


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


def delete_rows(connection: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Delete the rows of the tasks of these creation numbers."""
    for size, chunk in _chunks(connection, seqs, 1):
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


def record_from_snapshot(values: Snapshot) -> TaskRecord:
    record = TaskRecord.__new__(TaskRecord)
    for name, value in zip(TaskRecord.__slots__, values, strict=True):
        setattr(record, name, value)
    return record


def seq_of(values: Snapshot) -> int:
    seq: int = values[_SEQ]
    return seq


# The `tasks` row of a snapshot, in `COLUMNS` order: `_flat.flatten` of the
# record the snapshot was taken of.
row_from_snapshot = _flat.flattener(_flat.PYTHON_ENCODE, snapshot=TaskRecord.__slots__)

# A record from a `tasks` row (a tuple or a sqlite3.Row, in `COLUMNS` order).
record_from_row = _flat.unflatten

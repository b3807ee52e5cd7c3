"""The database file of `sqlite:///path`: opening it, and loading it at
start-up, when attempts that a crash interrupted are settled."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from conveyor_server.stores._errors import StoreUnavailable
from conveyor_server.stores._records import ErrorCode, State, TaskFailure, TaskRecord
from conveyor_server.stores.memory import MemoryStore
from conveyor_server.stores.sqlite import logs, schema, settings

logger = logging.getLogger("conveyor_server.stores.sqlite.store")

# How long opening waits for a database another process holds.
_OPEN_TIMEOUT_SECONDS = 2.0


def interrupted_error(attempt: int) -> TaskFailure:
    return TaskFailure(
        ErrorCode.INTERRUPTED,
        f"attempt {attempt} was interrupted: the server stopped while it ran",
    )


def recover_interrupted(record: TaskRecord, now: float) -> None:
    """Settle a task found RUNNING at start-up, as the Redis reaper settles
    one whose lease lapsed: its attempt counts."""
    record.update_time = now
    record.version += 1
    if record.cancel_requested:
        # Asked to stop, and stopped.
        record.state = State.CANCELLED
        record.end_time = now
        return
    record.error = interrupted_error(record.attempt)
    if record.attempt < record.max_attempts:
        record.state = State.PENDING
        record.scheduled_time = now
    else:
        record.state = State.FAILED
        record.end_time = now


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once (BEGIN IMMEDIATE): committed when
    the block ends, rolled back when it raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def load_database(
    connection: sqlite3.Connection, memory: MemoryStore, path: str, now: float
) -> int:
    """Read every task, type setting and schedule into the index `memory`,
    settle interrupted attempts (and the tasks waiting for those that end
    so) and write them back. Returns the highest seq on disk."""
    connection.executescript(schema.CREATE_SCHEMA)
    with transaction(connection):
        migrate(connection, path)
        last_seq = int(get_meta(connection, "last_seq") or 0)
        records: list[TaskRecord] = []
        recovered: list[TaskRecord] = []
        for row in connection.execute(schema.SELECT_ALL):
            record = schema.record_from_row(row)
            if record.state is State.RUNNING:
                recover_interrupted(record, now)
                recovered.append(record)
            records.append(record)
        loaded = memory.load(records, now, last_seq, settings.read(connection))
        changed = {r.id: r for r in [*recovered, *loaded.changed]}
        schema.write_rows(
            connection, [schema.row_from_snapshot(schema.snapshot(r)) for r in changed.values()]
        )
        schema.delete_rows(connection, [r.seq for r in loaded.dropped])
        logs.load(connection, memory)
        top = max([last_seq, *(r.seq for r in records)])
        set_meta(connection, "last_seq", str(top))
    if records:
        logger.info(
            "loaded %d tasks from %s; %d interrupted attempts recovered, %d cancelled "
            "for a failed dependency, %d dropped by retention",
            len(records),
            path,
            len(recovered),
            len(loaded.changed),
            len(loaded.dropped),
        )
    return top


def signing_key(connection: sqlite3.Connection) -> bytes:
    """The secret that signs list page tokens: made when the file is first
    opened and kept in it, so that a token outlives the process that
    minted it, as list cursors do."""
    connection.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('signing_key', ?)",
        (os.urandom(32).hex(),),
    )
    key = get_meta(connection, "signing_key")
    assert key is not None
    return bytes.fromhex(key)


def migrate(connection: sqlite3.Connection, path: str) -> None:
    """Bring the file to the current schema version, in the caller's
    transaction; a new file is at it already (CREATE_SCHEMA)."""
    found = get_meta(connection, "schema_version")
    readable = [*schema.MIGRATIONS, schema.SCHEMA_VERSION]
    if found is not None and found not in map(str, readable):
        raise StoreUnavailable(
            f"{path} has task schema version {found}; this server reads versions "
            f"{min(readable)} to {schema.SCHEMA_VERSION}"
        )
    version = schema.SCHEMA_VERSION if found is None else int(found)
    if version < schema.SCHEMA_VERSION:
        logger.info(
            "migrating %s from task schema version %d to %d",
            path,
            version,
            schema.SCHEMA_VERSION,
        )
    while version < schema.SCHEMA_VERSION:
        for statement in schema.MIGRATIONS[version]:
            connection.execute(statement)
        version += 1
    set_meta(connection, "schema_version", str(version))


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(
            path,
            timeout=_OPEN_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise open_error(path, exc) from exc
    try:
        # Exclusive before the first access, so that WAL needs no shared
        # memory and the lock is held until close.
        connection.execute("PRAGMA locking_mode = EXCLUSIVE")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.Error as exc:
        connection.close()
        raise open_error(path, exc) from exc
    return connection


def open_error(path: str, exc: sqlite3.Error) -> StoreUnavailable:
    if "locked" in str(exc):
        return StoreUnavailable(
            f"the task database {path} is in use by another process "
            "(another server on the same file?)"
        )
    return StoreUnavailable(f"cannot open the task database {path}: {exc}")


def get_meta(connection: sqlite3.Connection, key: str) -> str | None:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(connection: sqlite3.Connection, key: str, value: str) -> None:
    connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

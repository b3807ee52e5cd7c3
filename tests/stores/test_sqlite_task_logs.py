"""Task logs in a `sqlite:///path` file: kept across a restart, trimmed to
their bound, and deleted with their task."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from conveyor_server.stores import LogBatch, LogCursor, LogEntry, Outcome, SqliteStore
from conveyor_server.stores._logs import MAX_LINES_PER_ATTEMPT
from tests.support.stores import TYPES, new_task

T0 = 1_700_000_000.0


def batch(task_id: str, attempt: int, first: int, count: int) -> LogBatch:
    entries = tuple(
        LogEntry(attempt, n, T0 + n, "INFO", f"line {n}") for n in range(first, first + count)
    )
    return LogBatch(task_id, attempt, entries)


def rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        [(count,)] = connection.execute("SELECT count(*) FROM task_logs").fetchall()
    return int(count)


async def test_lines_survive_a_restart_within_their_bound_and_go_with_the_task(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.db"
    store = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        [task] = await store.create([new_task()], T0)
        [claimed] = await store.claim(1, T0, TYPES)
        await store.append_logs([batch(task.id, 1, 1, 600)])
        await store.append_logs([batch(task.id, 1, 601, 600)])
        await store.complete([Outcome(task.id, claimed.claim, result=b"")], T0 + 1)
    finally:
        await store.close()
    assert rows(path) == MAX_LINES_PER_ATTEMPT

    store = SqliteStore(str(path), max_queue=100, retention_count=100)
    try:
        page = await store.read_logs(task.id, 0, LogCursor(1, 1000), 10)
        assert [entry.sequence for entry in page.lines] == list(range(1001, 1011))
        assert page.dropped == {1: 1200 - MAX_LINES_PER_ATTEMPT}
        assert await store.purge(T0 + 2) == 1
        assert (await store.read_logs(task.id, 0, LogCursor(), 10)).lines == []
    finally:
        await store.close()
    assert rows(path) == 0

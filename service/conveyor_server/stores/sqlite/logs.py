"""The `task_logs` table of `sqlite:///path`: task logs written through,
and read back into the index at start-up (see `stores._logs`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from conveyor_server.stores._logs import MAX_LINES_PER_ATTEMPT, KeptLogs, LogBatch, LogEntry
from conveyor_server.stores.memory import MemoryStore

_INSERT = (
    "INSERT OR REPLACE INTO task_logs (task_seq, attempt, sequence, time, level, message) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_DROP_ATTEMPT = "DELETE FROM task_logs WHERE task_seq = ? AND attempt = ?"
_TRIM = "DELETE FROM task_logs WHERE task_seq = ? AND attempt = ? AND sequence <= ?"
_DROP_TASK = "DELETE FROM task_logs WHERE task_seq = ?"
_LOAD = (
    "SELECT tasks.id, task_logs.attempt, sequence, time, level, message "
    "FROM task_logs JOIN tasks ON tasks.seq = task_logs.task_seq "
    "ORDER BY task_logs.task_seq, task_logs.attempt, sequence"
)
# Lines of tasks dropped while their lines were on their way.
_ORPHANS = "DELETE FROM task_logs WHERE task_seq NOT IN (SELECT seq FROM tasks)"


def write(connection: sqlite3.Connection, kept: Sequence[KeptLogs]) -> None:
    """Write kept lines, each attempt trimmed to its bound."""
    for item in kept:
        batch, seq = item.batch, item.task_seq
        if item.replaced:
            connection.execute(_DROP_ATTEMPT, (seq, batch.attempt))
        connection.executemany(
            _INSERT,
            [(seq, e.attempt, e.sequence, e.time, e.level, e.message) for e in batch.entries],
        )
        last = batch.entries[-1].sequence
        if last > MAX_LINES_PER_ATTEMPT:
            connection.execute(_TRIM, (seq, batch.attempt, last - MAX_LINES_PER_ATTEMPT))


def delete_tasks(connection: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Drop the lines of dropped tasks."""
    connection.executemany(_DROP_TASK, [(seq,) for seq in seqs])


def load(connection: sqlite3.Connection, memory: MemoryStore) -> None:
    """Read every kept line into the index, after its tasks; lines whose
    task is gone are deleted."""
    connection.execute(_ORPHANS)
    batches: list[LogBatch] = []
    current: tuple[str, int] | None = None
    entries: list[LogEntry] = []
    for task_id, attempt, sequence, time, level, message in connection.execute(_LOAD):
        if current != (task_id, attempt):
            if current is not None:
                batches.append(LogBatch(current[0], current[1], tuple(entries)))
            current, entries = (task_id, attempt), []
        entries.append(LogEntry(attempt, sequence, time, level, message))
    if current is not None:
        batches.append(LogBatch(current[0], current[1], tuple(entries)))
    memory.keep_logs(batches)

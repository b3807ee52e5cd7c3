"""Task logs as stores keep them: the lines a handler wrote through
`ctx.logger`, a bounded ring per attempt.

Every store keeps at most `MAX_LINES_PER_ATTEMPT` lines of an attempt, its
latest; a line's sequence number counts from 1 within its attempt, dropped
lines included, so the number of lines an attempt lost to the bound is the
sequence of its first kept line, less one: no counter is stored.

A run of an attempt number can happen twice: a task handed back at shutdown
runs its attempt again, and RetryTask starts again from attempt 1. The later
run's lines replace the earlier run's (its numbering starts again at 1), so
that the lines of one attempt number are always one run's, in order.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

# The lines kept per attempt: the latest ones.
MAX_LINES_PER_ATTEMPT = 1000
# A message longer than this (in UTF-8 bytes) is cut to it.
MAX_MESSAGE_BYTES = 8192


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line an attempt wrote."""

    attempt: int
    # From 1 within the attempt, counting lines dropped by the bound.
    sequence: int
    time: float
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Lines of one attempt of a task, in sequence order, written together."""

    task_id: str
    attempt: int
    entries: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True)
class LogPage:
    """What `read_logs` found: the lines after the position asked for, and
    per attempt in scope how many of its earliest lines were dropped."""

    lines: list[LogEntry]
    dropped: dict[int, int]


@dataclass(frozen=True, slots=True)
class KeptLogs:
    """A batch a store kept, for a store that writes it through: the
    creation number of its task, and whether it replaced an earlier run's
    lines of the attempt."""

    task_seq: int
    batch: LogBatch
    replaced: bool


@dataclass(frozen=True, slots=True)
class LogCursor:
    """Where a read continues: after line `sequence` of `attempt`."""

    attempt: int = 0
    sequence: int = 0


class MemoryLogs:
    """The rings of every task held in memory (`memory://`, and the index
    of `sqlite:///path`)."""

    def __init__(self) -> None:
        self._tasks: dict[str, dict[int, deque[LogEntry]]] = {}

    def append(self, batch: LogBatch) -> bool:
        """Keep the lines; True when they replace an earlier run's."""
        attempts = self._tasks.setdefault(batch.task_id, {})
        ring = attempts.get(batch.attempt)
        replaced = False
        if ring is not None and ring and batch.entries[0].sequence <= ring[-1].sequence:
            ring = None
            replaced = True
        if ring is None:
            ring = attempts[batch.attempt] = deque(maxlen=MAX_LINES_PER_ATTEMPT)
        ring.extend(batch.entries)
        return replaced

    def read(self, task_id: str, attempt: int, after: LogCursor, limit: int) -> LogPage:
        attempts = self._tasks.get(task_id, {})
        rings = sorted(
            (number, ring) for number, ring in attempts.items() if attempt in (0, number) and ring
        )
        lines: list[LogEntry] = []
        for number, ring in rings:
            if len(lines) >= limit:
                break
            lines.extend(itertools.islice(_after(number, ring, after), limit - len(lines)))
        return LogPage(lines, dropped_counts((number, ring[0].sequence) for number, ring in rings))

    def drop(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)


def _after(number: int, ring: deque[LogEntry], after: LogCursor) -> Iterator[LogEntry]:
    if number < after.attempt:
        return iter(())
    start = 0
    if number == after.attempt:
        start = max(0, after.sequence - ring[0].sequence + 1)
    return itertools.islice(ring, start, None)


def dropped_counts(firsts: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Lines dropped per attempt, from (attempt, sequence of its first kept
    line) pairs."""
    return {attempt: first - 1 for attempt, first in firsts if first > 1}


def cut_message(message: str) -> str:
    """`message`, cut to `MAX_MESSAGE_BYTES` of UTF-8 (never inside a
    character)."""
    if len(message) * 4 <= MAX_MESSAGE_BYTES:
        return message
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    return encoded[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")


def encode_line(entry: LogEntry) -> str:
    """One line as the Redis store keeps it: sequence, time, level, message."""
    return f"{entry.sequence} {entry.time!r} {entry.level} {entry.message}"


def decode_line(attempt: int, raw: bytes | str) -> LogEntry:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    sequence, time, level, message = text.split(" ", 3)
    return LogEntry(attempt, int(sequence), float(time), level, message)


def last_entries(batches: Sequence[LogBatch]) -> list[LogBatch]:
    """The batches, each cut to the lines a store keeps of it."""
    return [
        batch
        if len(batch.entries) <= MAX_LINES_PER_ATTEMPT
        else LogBatch(batch.task_id, batch.attempt, batch.entries[-MAX_LINES_PER_ATTEMPT:])
        for batch in batches
    ]
